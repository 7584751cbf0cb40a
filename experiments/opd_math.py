"""On-policy distillation on math: `python experiments/opd_math.py --workdir=DIR
--config.opd.teacher=HF_FOLDER [--config=experiments/configs/opd_math.py:horizon=truncated]`.

The student samples, a frozen teacher (same tokenizer) scores every sampled token, and the per-token
reverse KL is the advantage (docs/opd.md). horizon=truncated is TOPD (rho=0.1 of the rollout
length), linear/staged are POPD. Same loop, flags and resume behaviour as grpo_math.py.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # noqa: E402

from experiments import grpo_math  # noqa: E402

if __name__ == "__main__":
    grpo_math.define_flags("opd_math.py")
    app.run(grpo_math.main)
