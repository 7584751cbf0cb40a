"""The sampler's per-token self-certainty equals RLIF's self-certainty of a teacher-forced forward
pass over the same tokens (docs/rlif.md: computed online, from the sampler's own logits)."""

import jax
import jax.numpy as jnp
import numpy as np

from rlvr_jax import sampling
from rlvr_jax.models import config as config_lib
from rlvr_jax.models import params as params_lib
from rlvr_jax.objectives import forward as forward_lib
from rlvr_jax.objectives import rlif


def test_sampler_certainty_matches_a_teacher_forced_forward():
    cfg = config_lib.get_preset("tiny")
    params = params_lib.init_params(cfg, jax.random.key(0))
    scfg = sampling.SamplingConfig(max_new_tokens=12, temperature=0.7, eos_ids=(5,))
    out = sampling.generate(
        params, [[1, 2, 3, 4], [7, 8]], jax.random.key(3), model_cfg=cfg, cfg=scfg
    )
    fwd = forward_lib.completion_forward(
        params,
        out.prompt_BxTp,
        out.prompt_mask_BxTp,
        out.tokens_BxTc,
        out.mask_BxTc,
        model_cfg=cfg,
        temperature=0.7,
    )
    mask = np.asarray(out.mask_BxTc)
    cert = np.asarray(out.certainty_BxTc)
    assert (cert[~mask] == 0).all() and (cert[mask] > 0).all()
    want_B = rlif.self_certainty(fwd.logits_BxTcxV, jnp.asarray(mask))
    got_B = (cert * mask).sum(1) / np.maximum(mask.sum(1), 1)
    np.testing.assert_allclose(got_B, want_B, rtol=1e-4, atol=1e-5)
