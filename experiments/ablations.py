"""The ablation harness behind notebooks/ablations.ipynb: one shared warm start, then GRPO,
Dr. GRPO, DAPO, DelTA, OPD / TOPD / POPD, DistIL and label-free RLIF runs of the RL loop from it,
each in its own workdir.

    from experiments import ablations
    warm = ablations.warm_start(root, budget)            # HF folder of the warm-started policy
    res = ablations.run_variant("DAPO", root, budget, warm, seed=0)

Every run is `rlvr_jax.train.loop.run` on the tiny default config with overrides; nothing here
changes what the loop does. Results come from each run's metrics.jsonl.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

import ml_collections

from experiments.configs import distil_math, grpo_math, opd_math, rlif_math
from rlvr_jax import config as experiment
from rlvr_jax.train import metrics as metrics_lib


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much each run gets. `quick()` is the CI smoke budget; `default()` the README one."""

    warm_steps: int
    rl_steps: int
    prompts_per_step: int
    group_size: int
    max_new_tokens: int
    eval_prompts: int
    eval_every: int
    teacher_steps: int  # GRPO steps of the OPD teacher, from the same warm start

    @classmethod
    def quick(cls) -> Budget:
        return cls(4, 2, 2, 2, 16, 4, 1, 1)

    @classmethod
    def default(cls) -> Budget:
        return cls(600, 20, 8, 8, 64, 64, 5, 30)


def _base(budget: Budget, seed: int, cfg_module=grpo_math, arg=None) -> ml_collections.ConfigDict:
    c = cfg_module.get_config(arg)
    c.seed = seed
    c.train.update(steps=budget.rl_steps, prompts_per_step=budget.prompts_per_step)
    c.rl.group_size = budget.group_size
    c.sampling.max_new_tokens = budget.max_new_tokens
    c.eval.update(num_prompts=budget.eval_prompts, every=budget.eval_every, k=2)
    c.log.tensorboard = False
    c.ckpt.update(every=max(budget.rl_steps, 1), async_save=False)
    c.verifier.workers = 1
    if budget == Budget.quick():
        c.data.update(train_size=40, eval_size=8)
        c.warm_start.batch_size = 4
    return c


def _apply(c: ml_collections.ConfigDict, overrides: dict[str, Any]) -> ml_collections.ConfigDict:
    for key, value in overrides.items():
        group, name = key.split(".")
        c[group][name] = value
    return c


def _from_warm(c: ml_collections.ConfigDict, warm: str) -> ml_collections.ConfigDict:
    c.model.init_from = warm
    c.warm_start.steps = 0
    return c


def warm_start(root: str, budget: Budget, seed: int = 0) -> str:
    """The warm-started policy as an HF folder (trained once; reused when it exists)."""
    workdir = os.path.join(root, "warm")
    out = os.path.join(workdir, "hf_export")
    if not os.path.exists(os.path.join(out, "config.json")):
        c = _base(budget, seed)
        c.warm_start.steps = budget.warm_steps
        c.train.steps = 0
        c.export_hf = True
        experiment.run(c, workdir)
    return out


def teacher(root: str, budget: Budget, warm: str, seed: int = 0) -> str:
    """The OPD teacher: GRPO from the warm start for `budget.teacher_steps`, as an HF folder."""
    workdir = os.path.join(root, "teacher")
    out = os.path.join(workdir, "hf_export")
    if not os.path.exists(os.path.join(out, "config.json")):
        c = _from_warm(_base(budget, seed), warm)
        c.train.steps = budget.teacher_steps
        c.export_hf = True
        experiment.run(c, workdir)
    return out


def variants(budget: Budget, teacher_dir: str) -> dict[str, tuple[Any, dict[str, Any]]]:
    """name -> (config module, overrides). DelTA runs on top of the DAPO recipe, as in its paper."""
    L = budget.max_new_tokens
    dapo = {
        "rl.eps_high": 0.28,
        "rl.loss_agg": "token_mean",
        "rl.dynamic_sampling": True,
        "rl.max_resample_rounds": 2,
    }
    return {
        "GRPO": (grpo_math, {}),
        "Dr. GRPO": (
            grpo_math,
            {
                "rl.adv_estimator": "dr_grpo",
                "rl.loss_agg": "seq_mean_token_sum_norm",
                "rl.norm_len": L,
            },
        ),
        "DAPO": (grpo_math, dapo),
        "DAPO + DelTA": (grpo_math, {**dapo, "delta.enabled": True}),
        "OPD": (opd_math, {"opd.teacher": teacher_dir}),
        "TOPD (rho 0.1)": (opd_math, {"opd.teacher": teacher_dir, "opd.horizon": "truncated"}),
        "POPD (linear)": (
            opd_math,
            {
                "opd.teacher": teacher_dir,
                "opd.horizon": "linear",
                "opd.ramp_steps": max(budget.rl_steps // 2, 1),
            },
        ),
        "DistIL": (distil_math, {}),
        "RLIF (label-free)": (rlif_math, {}),
    }


def run_variant(
    name: str, root: str, budget: Budget, warm: str, teacher_dir: str = "", seed: int = 0
) -> dict[str, Any]:
    """Runs (or reads back, when finished before) one variant; returns its curve and summary."""
    module, overrides = variants(budget, teacher_dir)[name]
    slug = name.lower().replace(" ", "_").replace(".", "").replace("(", "").replace(")", "")
    workdir = os.path.join(root, f"{slug}_seed{seed}")
    done = os.path.join(workdir, "ablation.json")
    if os.path.exists(done):
        with open(done) as f:
            return json.load(f)
    c = _from_warm(_apply(_base(budget, seed, module), overrides), warm)
    t0 = time.perf_counter()
    experiment.run(c, workdir)
    wall = time.perf_counter() - t0
    rows = metrics_lib.read_metrics(workdir)
    evals = [r for r in rows if "eval/pass@1" in r]
    result = {
        "name": name,
        "seed": seed,
        "wall_s": wall,
        "rl_s": sum(r.get("perf/step_s", 0.0) for r in rows),
        "steps": [r["step"] for r in evals],
        "pass@1": [r["eval/pass@1"] for r in evals],
        "greedy": [r["eval/greedy_acc"] for r in evals],
        "final_pass@1": evals[-1]["eval/pass@1"],
        "final_greedy": evals[-1]["eval/greedy_acc"],
    }
    with open(done, "w") as f:
        json.dump(result, f)
    return result
