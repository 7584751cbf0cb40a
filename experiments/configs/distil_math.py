"""DistIL on the embedded task: grpo_math's config with the forward-CE objective on, the policy as
its own feedback-conditioned teacher.

Run:    python experiments/distil_math.py --workdir=DIR
        python experiments/distil_math.py --workdir=DIR \
            --config=experiments/configs/distil_math.py:feedback=sibling,sequence_term=true
Args:   feedback=verifier|sibling|reference, sequence_term=true|false, preset=<grpo_math preset>.
"""

from __future__ import annotations

import ml_collections

from experiments.configs import common, grpo_math


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, preset="tiny", feedback="verifier", sequence_term=False)
    c = grpo_math.get_config(arg["preset"])
    c.distil.update(enabled=True, feedback=arg["feedback"], sequence_term=arg["sequence_term"])
    c.rl.beta = 0.0
    return c
