"""GRPO on code: completions run against tests in the sandbox (rewards/code.py, sandbox.py).

Run:    python experiments/grpo_code.py --workdir=/tmp/grpo_code
        python experiments/grpo_code.py --workdir=DIR \
            --config=experiments/configs/grpo_code.py:preset=qwen2p5_math_1p5b,format=mbpp \
            --config.model.init_from=/ckpt/Qwen2.5-Coder-1.5B \
            --config.data.train_files='("/data/mbpp/train.jsonl",)' \
            --config.data.eval_files='("/data/mbpp/test.jsonl",)'
Args:   preset=<grpo_math preset>, format=synthetic|embedded|mbpp|humaneval|apps,
        reward_mode=all_pass|fraction.
The tiny default: the synthetic code family (data/code_synthetic.py) with a short supervised warm
start on its reference programs, then GRPO with the sandbox as the only reward.
"""

from __future__ import annotations

import ml_collections

from experiments.configs import common, grpo_math
from rlvr_jax.data import code_synthetic


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, preset="tiny", format="synthetic", reward_mode="all_pass")
    c = grpo_math.get_config(arg["preset"])
    c.data.update(source="code", train_size=1000, eval_size=64, system=code_synthetic.SYSTEM)
    # Sandbox per program (namespaces; allow_weak only where they are unavailable, never as
    # root): one run per stdin/stdout test, one per task's function-call tests.
    c.code = dict(
        format=arg["format"],
        reward_mode=arg["reward_mode"],
        max_workers=4,  # programs at once
        timeout_s=5.0,  # wall clock per run
        memory_mb=512,  # address space per process
        allow_weak=False,
        feedback_chars=1000,  # of input / expected / got in the failing test's feedback
    )
    if arg["preset"] == "tiny":
        c.sampling.max_new_tokens = 64  # reference programs are 39-43 tokens
        c.warm_start.update(steps=600, unanswered_frac=0.0, slip_frac=0.0)
        c.train.steps = 30
        c.eval.num_prompts = 64
    return c
