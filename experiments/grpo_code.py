"""GRPO on code: `python experiments/grpo_code.py --workdir=DIR`.

Each completion's last ```python block runs against its task's tests in a fresh sandbox (user,
mount, PID and network namespaces; rlimits; a wall-clock kill), and the reward is all-pass or the
fraction passed (`code.reward_mode`). Same loop, flags and resume behaviour as grpo_math.py.
"""

from __future__ import annotations

from experiments import entry

if __name__ == "__main__":
    entry.run("grpo_code.py")
