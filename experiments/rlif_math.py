"""Label-free RLIF on math: `python experiments/rlif_math.py --workdir=DIR`.

Rewards from the group alone: cluster voting over math-equivalent final answers and the policy's
self-certainty (from the sampler's own logits), combined by GDPO, with the KL-Cov penalty
(docs/rlif.md). Same loop, flags and resume behaviour as grpo_math.py.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # noqa: E402

from experiments import grpo_math  # noqa: E402

if __name__ == "__main__":
    grpo_math.define_flags("rlif_math.py")
    app.run(grpo_math.main)
