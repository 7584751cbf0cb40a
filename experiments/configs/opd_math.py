"""On-policy distillation (OPD / TOPD / POPD) on the embedded task: grpo_math's config with the
teacher objective on.

Run:    python experiments/opd_math.py --workdir=DIR --config.opd.teacher=HF_FOLDER
        python experiments/opd_math.py --workdir=DIR --config.opd.teacher=HF_FOLDER \
            --config=experiments/configs/opd_math.py:horizon=truncated     # TOPD, rho=0.1
Args:   horizon=full|truncated|linear|staged, preset=<grpo_math preset>.
A teacher for the embedded task: any grpo_math run with --config.export_hf=True (its
DIR/hf_export), e.g. the default GRPO run, which answers far more often than the warm start.
"""

from __future__ import annotations

import ml_collections

from experiments.configs import common, grpo_math


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, preset="tiny", horizon="full")
    c = grpo_math.get_config(arg["preset"])
    c.opd.update(enabled=True, horizon=arg["horizon"])
    c.rl.beta = 0.0  # the teacher is the anchor; no reference model
    return c
