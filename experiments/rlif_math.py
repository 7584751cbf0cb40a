"""Label-free RLIF on math: `python experiments/rlif_math.py --workdir=DIR`.

Rewards from the group alone: cluster voting over math-equivalent final answers and the policy's
self-certainty (from the sampler's own logits), combined by GDPO, with the KL-Cov penalty
(docs/rlif.md). Same loop, flags and resume behaviour as grpo_math.py.
"""

from __future__ import annotations

from experiments import entry

if __name__ == "__main__":
    entry.run("rlif_math.py")
