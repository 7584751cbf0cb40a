"""Label-free RLIF on the embedded task: grpo_math's config with cluster voting and self-certainty
rewards combined by GDPO, and KL-Cov; training reads no answer (docs/rlif.md).

Run:    python experiments/rlif_math.py --workdir=DIR
Args:   soft_share=true|false, kl_cov=true|false, preset=<grpo_math preset>.
The held-out evaluation still scores against the answers (that is how we know it learns).
"""

from __future__ import annotations

import ml_collections

from experiments.configs import common, grpo_math


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, preset="tiny", soft_share=False, kl_cov=True)
    c = grpo_math.get_config(arg["preset"])
    c.rlif.update(enabled=True, soft_share=arg["soft_share"])
    c.rl.policy_loss = "kl_cov" if arg["kl_cov"] else "ppo_clip"
    return c
