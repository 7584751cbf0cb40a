"""GRPO on reasoning-gym generators (rlvr_jax/tasks/reasoning_gym.py, docs/reasoning_gym.md).

Run:    python experiments/grpo_rg.py --workdir=/tmp/rg_chain_sum \
            --config=experiments/configs/reasoning_gym.py:tasks=chain_sum
        python experiments/grpo_rg.py --workdir=DIR \
            --config=experiments/configs/reasoning_gym.py:tasks=basic_arithmetic+letter_counting
Args:   preset=<grpo_math preset>, tasks=<name>[+<name>...] (equal weights; a name in EASY gets
        its easy config, any other reasoning-gym dataset its defaults). For other weights or
        configs set data.rg_tasks, ((name, weight, {config}), ...), in a config of your own.
The tiny default: a short supervised warm start on `<answer>{reference}</answer>`, then GRPO
with reasoning-gym's own score_answer as the only reward. Needs `pip install -e ".[rg]"`.
"""

from __future__ import annotations

import ml_collections

from experiments.configs import common, grpo_math

# Configs a 3M-parameter model can learn: one-digit sums, one-word letter counts.
EASY = {
    "basic_arithmetic": dict(
        min_terms=2,
        max_terms=2,
        min_digits=1,
        max_digits=1,
        operators=("+", "-"),
        allow_parentheses=False,
        allow_negation=False,
    ),
    "chain_sum": dict(min_terms=2, max_terms=2, min_digits=1, max_digits=1, allow_negation=False),
    "letter_counting": dict(min_words=1, max_words=1),
}


def rg_tasks(tasks: str) -> tuple:
    """'a+b' -> (("a", 1.0, {easy config or {}}), ("b", 1.0, ...))."""
    names = [n for n in tasks.split("+") if n]
    return tuple((n, 1.0, dict(EASY.get(n, {}))) for n in names)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, preset="tiny", tasks="basic_arithmetic")
    c = grpo_math.get_config(arg["preset"])
    c.data.update(
        source="reasoning_gym",
        rg_tasks=rg_tasks(arg["tasks"]),
        train_size=2000,  # with repeats where a generator's space is small (~200 1-digit sums)
        eval_size=64,  # distinct questions, never trained on
        system="Answer with the final result only.",
    )
    c.verifier.update(workers=2, timeout_s=10.0)
    if arg["preset"] == "tiny":
        c.sampling.max_new_tokens = 16  # `<answer>-10</answer>` + EOS is 13 tiny-tokenizer tokens
        # Sized so one run takes ~4 minutes on 2 CPU cores (docs/reasoning_gym.md): the warm
        # start learns the format in ~100 steps, then plateaus.
        c.warm_start.update(steps=150, lr=3e-3, unanswered_frac=0.0, slip_frac=0.0)
        c.train.steps = 40
        c.eval.update(every=20, num_prompts=64, k=4)
    return c
