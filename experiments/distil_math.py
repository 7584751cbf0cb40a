"""DistIL on math: `python experiments/distil_math.py --workdir=DIR
[--config=experiments/configs/distil_math.py:feedback=sibling]`.

Forward cross-entropy from a stop-gradient teacher that reads the verifier's feedback (or a correct
sibling, or the reference solution) to the student, over the student's own rollout (docs/distil.md).
The teacher is the policy itself by default. Same loop, flags and resume behaviour as grpo_math.py.
"""

from __future__ import annotations

from experiments import entry

if __name__ == "__main__":
    entry.run("distil_math.py")
