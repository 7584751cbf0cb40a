"""GRPO on reasoning-gym generators: `python experiments/reasoning_gym.py --workdir=DIR`.

The reward is the generator's own `score_answer` on the last <answer>...</answer>, run in verifier
worker processes with a hard time limit (docs/reasoning_gym.md). Same loop, flags and resume
behaviour as grpo_math.py; needs `pip install -e ".[rg]"`.
"""

from __future__ import annotations

import os
import sys

from experiments import entry

if __name__ == "__main__":
    # This script shares the package's name: take its folder off sys.path (before any verifier
    # worker copies it), so `import reasoning_gym` finds the package, not this file.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    entry.run("reasoning_gym.py")
