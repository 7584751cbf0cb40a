"""On-policy distillation on math: `python experiments/opd_math.py --workdir=DIR
--config.opd.teacher=HF_FOLDER [--config=experiments/configs/opd_math.py:horizon=truncated]`.

The student samples, a frozen teacher (same tokenizer) scores every sampled token, and the per-token
reverse KL is the advantage (docs/opd.md). horizon=truncated is TOPD (rho=0.1 of the rollout
length), linear/staged are POPD. Same loop, flags and resume behaviour as grpo_math.py.
"""

from __future__ import annotations

from experiments import entry

if __name__ == "__main__":
    entry.run("opd_math.py")
