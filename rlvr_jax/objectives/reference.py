"""The KL penalty's host side: the frozen reference policy's log-probs of each mini-batch."""

from __future__ import annotations

from rlvr_jax.objectives import batch as batch_lib
from rlvr_jax.objectives import hooks


class ReferenceLogps(hooks.Hook):
    """Scores every mini-batch with the reference params (rl.beta > 0)."""

    def __init__(self, ref_params, logps_fn):
        self.ref_params, self.logps_fn = ref_params, logps_fn

    def minibatch(self, part):
        ref_logps_BxTc = self.logps_fn(
            self.ref_params,
            part.prompt_BxTp,
            part.prompt_mask_BxTp,
            part.completion_BxTc,
            batch_lib.attention_mask(part),
        )
        return part.replace(ref_logps_BxTc=ref_logps_BxTc), {}
