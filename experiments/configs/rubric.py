"""Rubric-reward GRPO with POW3R on the embedded rubric task (docs/pow3r.md).

Run:    python experiments/rubric.py --workdir=/tmp/rubric_pow3r
        python experiments/rubric.py --workdir=/tmp/rubric_vanilla \
            --config=experiments/configs/rubric.py:pow3r=false
        python experiments/rubric.py --workdir=DIR \
            --config=experiments/configs/rubric.py:judge=policy
Args:   preset=<grpo_math preset>, pow3r=true|false, judge=""|policy|<HF folder sharing the
        tokenizer> (adds a judge-graded criterion to every rubric, run by our sampler).
Training rewards use POW3R's weights; evaluation (eval/reward_mean, eval/pass@1 = full marks)
always uses the rubric's human weights.
"""

from __future__ import annotations

import ml_collections

from experiments.configs import common, grpo_math


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, preset="tiny", pow3r=True, judge="")
    c = grpo_math.get_config(arg["preset"])
    c.data.update(source="rubric", train_size=300, eval_size=32, system="")  # of ~370 distinct
    # POW3R: criterion weights from each group's contrast sqrt(p (1 - p)), smoothed by alpha,
    # multipliers clipped to [m_min, m_max], category totals kept; ema > 0 remembers each
    # prompt's contrast across steps. judge: criteria without a check go to a judge model.
    c.rubric = dict(
        pow3r=arg["pow3r"],
        alpha=0.5,
        m_min=0.2,
        m_max=3.0,
        ema=0.0,
        judge=arg["judge"],
        judge_criteria=True,  # with a judge, add rubric_tasks.JUDGE_CRITERION to every rubric
        judge_max_new_tokens=32,
        judge_retries=2,
    )
    if arg["preset"] == "tiny":
        c.sampling.max_new_tokens = 64  # reference replies are up to 62 tokens (+ EOS)
        c.warm_start.update(steps=400, unanswered_frac=0.0, slip_frac=0.0)
        c.train.steps = 60
        c.eval.update(every=5, num_prompts=32)
    return c
