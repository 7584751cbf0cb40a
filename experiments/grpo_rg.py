"""GRPO on reasoning-gym generators: `python experiments/grpo_rg.py --workdir=DIR`.

The reward is the generator's own `score_answer` on the last <answer>...</answer>, run in verifier
worker processes with a hard time limit (docs/reasoning_gym.md). Same loop, flags and resume
behaviour as grpo_math.py; needs `pip install -e ".[rg]"`. (Not named reasoning_gym.py: run as a
script, that name would shadow the package it uses.)
"""

from __future__ import annotations

from experiments import entry

if __name__ == "__main__":
    entry.run("reasoning_gym.py")
