"""GRPO on math: `python experiments/grpo_math.py --workdir=DIR [--config=...:preset]`.

The loop, flags, resume, multi-host (RLVR_DIST=1) and CPU-device behaviour of every experiment
script are experiments/entry.py's.
"""

from __future__ import annotations

from experiments import entry

if __name__ == "__main__":
    entry.run("grpo_math.py")
