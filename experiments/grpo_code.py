"""GRPO on code: `python experiments/grpo_code.py --workdir=DIR`.

Each completion's last ```python block runs against its task's tests in a fresh sandbox (user,
mount, PID and network namespaces; rlimits; a wall-clock kill), and the reward is all-pass or the
fraction passed (`code.reward_mode`). Same loop, flags and resume behaviour as grpo_math.py.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # noqa: E402

from experiments import grpo_math  # noqa: E402

if __name__ == "__main__":
    grpo_math.define_flags("grpo_code.py")
    app.run(grpo_math.main)
