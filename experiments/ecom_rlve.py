"""Ecom-RLVE: `python experiments/ecom_rlve.py --workdir=DIR [--config=...:adaptive=false]`.

Multi-turn GRPO in the embedded e-commerce environments (experiments/configs/ecom_rlve.py). The
loop, flags, resume and CPU-device behaviour are experiments/entry.py's.
"""

from __future__ import annotations

from experiments import entry

if __name__ == "__main__":
    entry.run("ecom_rlve.py")
