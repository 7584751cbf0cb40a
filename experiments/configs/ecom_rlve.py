"""Ecom-RLVE: multi-turn, tool-using e-commerce episodes with adaptive difficulty
(rlvr_jax/tasks/ecom.py, rlvr_jax/envs/ecom, docs/ecom_rlve.md).

Run:    python experiments/ecom_rlve.py --workdir=/tmp/ecom
        python experiments/ecom_rlve.py --workdir=DIR \
            --config=experiments/configs/ecom_rlve.py:adaptive=false
Args:   preset=<grpo_math preset> (tiny: the CPU default), adaptive=true|false (false: every
        episode at ecom.difficulty), envs=PD+SUB+... (the environments trained and evaluated).
The tiny default: the embedded 1,024-token Ecom tokenizer and a ~1M-parameter model, a warm start
on the scripted experts' solved episodes, then GRPO on episodes played through the environments'
tools (the policy's turns trained, tool and user turns masked), difficulty per environment by the
RLVE rule. Held-out success at ecom.eval_difficulty per environment every eval.every steps.
"""

from __future__ import annotations

import ml_collections

from experiments.configs import common, grpo_math
from rlvr_jax.envs.ecom import tokenizer as ecom_tokenizer

ALL_ENVS = "PD+SUB+CART+RETURN+STATUS+POLICY"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, preset="tiny", adaptive=True, envs=ALL_ENVS)
    c = grpo_math.get_config(arg["preset"])
    envs = tuple(e for e in arg["envs"].split("+") if e)
    c.data.update(source="ecom", train_size=100_000, eval_size=10 * len(envs), system="")
    c.ecom = dict(
        envs=envs,
        curriculum_every=0,  # > 0: C1 {PD} -> C2 -> C4 -> C8, one stage per this many steps
        adaptive=arg["adaptive"],
        difficulty=2,  # every episode's difficulty when adaptive=false (the ablation's fixed arm)
        tau_num=32,
        tau_acc=0.9,
        d_delta=4,
        eval_difficulty=0,
        catalog_seed=0,
        workers=2,
        timeout_s=10.0,
        expert_episodes=2400,
        expert_max_difficulty=3,
    )
    # Per episode: turns, sampled tokens per turn and in all, and the whole context.
    c.multi_turn = dict(max_turns=6, turn_tokens=48, sampled_tokens=192, episode_tokens=512)
    c.sampling.update(engine="continuous", slots=64, decode_chunk=8, prefill_chunk=256)
    c.rl.update(group_size=4, beta=0.0)
    c.opt.lr = 1e-4
    c.train.update(steps=60, prompts_per_step=8)
    c.warm_start.update(
        steps=600,
        batch_size=16,
        lr=3e-3,
        warmup_steps=20,
        unanswered_frac=0.0,
        slip_frac=0.0,
        group_by_length=True,  # expert episodes run 96-630 tokens: pad per length group
    )
    c.eval.update(every=20, num_prompts=10 * len(envs), k=1)
    c.ckpt.every = 10
    if arg["preset"] == "tiny":
        c.model.tokenizer = ecom_tokenizer.ASSET_DIR
        # RoPE base 1e4, not Qwen2's 1e6: with 32-dim heads, 1e6 leaves few fast-rotating pairs,
        # and this model must copy ids out of tool results (a pure 4-digit copy probe, 600 steps:
        # mean copy probability 0.55 at 1e6, 0.76 at 1e4).
        c.model.rope_theta = 1e4
    return c
