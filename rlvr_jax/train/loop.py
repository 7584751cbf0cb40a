"""The RL loop, readable top to bottom: rollout -> task rewards -> objective advantages and
extras -> updates -> eval / log / checkpoint.

`run(cfg, workdir)` takes the typed RunConfig (rlvr_jax/config.py makes it from an experiment's
ConfigDict). It builds the run (train/build.py: mesh, model, task, objective, rollout engine,
evaluator, checkpoints) and then loops. It never names a task or a technique: the task
(rlvr_jax/tasks) scores and shapes rewards; the objective is the train step's loss plus hooks
(objectives/hooks.py) called at fixed points of each step. Rerunning the same call resumes: from
the latest checkpoint in `workdir`, else `ckpt.resume_from`'s, else `model.init_from` (or a
random init) plus the warm start.

Everything lives on one (data, fsdp, tensor) mesh; the sampler runs on it or on `mesh.sampler`,
with the policy's weights resharded once per rollout (`perf/reshard_s`). With several processes
each one samples and scores its own share of the prompts, and the global batch is their rows in
process order (rlvr_jax/distributed.py). Only process 0 writes metrics; every process joins the
checkpoint saves. Process 0 shows a progress bar.
"""

# pylint: disable=invalid-name
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import jax
import numpy as np
import tqdm
from jax.experimental import multihost_utils

from rlvr_jax import distributed
from rlvr_jax.models import hf
from rlvr_jax.models import tokenizer as tokenizer_lib
from rlvr_jax.objectives import advantages as advantages_lib
from rlvr_jax.rollout import collect as collect_lib
from rlvr_jax.rollout import types as rollout_types
from rlvr_jax.train import build as build_lib
from rlvr_jax.train import checkpoint as ckpt_lib
from rlvr_jax.train import run_config


def run(cfg: run_config.RunConfig, workdir: str) -> dict[str, Any]:
    """Trains with `cfg` in `workdir`; rerunning the same call resumes. Returns final metrics."""
    r = build_lib.prepare(cfg, workdir)  # every config error comes before any compile
    r.writer.write_config(run_config.to_dict(cfg))
    build_lib.restore_or_start(r, _log)
    hooks = build_lib.make_hooks(r, _log)
    train_step, engine = build_lib.train_step(r), build_lib.engine(r)
    evaluator = build_lib.evaluator(r, engine)
    eval_key = lambda step: distributed.replicated_key(r.sampler_mesh, cfg.seed, 1, step)
    with r.task.scorer() as score_fn:
        if r.start == 0:
            if r.trajectory is not None:
                ckpt_lib.save_trajectory(r.trajectory, 0, r.state.params)
            m = evaluator(r.sampler_params(), eval_key(0), score_fn)
            r.writer.write(0, m)
            _log(f"step 0: {_fmt(m)}")
            if cfg.train.steps == 0:  # a warm-start-only run: its weights, for ckpt.resume_from
                ckpt_lib.save(r.manager, 0, r.state, build_lib.checkpoint_record(r))
        last = {}
        bar = tqdm.tqdm(
            range(r.start + 1, cfg.train.steps + 1),
            desc="RL",
            unit="step",
            initial=r.start,
            total=cfg.train.steps,
            disable=jax.process_index() != 0,
        )
        for step in bar:
            t0 = time.perf_counter()
            ro, m = _rollout(r, hooks, engine, score_fn, step)
            if m["rollout/prompts"] == 0:
                _log(f"step {step}: every group had equal rewards; no update")
                r.writer.write(step, m)
                bar.set_postfix(_postfix(m))
                continue
            batch = _batch(r, hooks, ro, m)  # task rewards -> advantages -> TrainBatch
            m.update(_updates(r, hooks, train_step, batch))
            if m["train/skipped"] > 0:
                _log(f"step {step}: non-finite loss or gradient; update skipped")
            dt = time.perf_counter() - t0
            m["perf/step_s"] = dt
            m["perf/tokens_per_s"] = m.pop("_tokens") / dt

            # --- Eval / log / checkpoint ---
            if cfg.eval.every and step % cfg.eval.every == 0 or step == cfg.train.steps:
                m.update(evaluator(r.sampler_params(), eval_key(step), score_fn))
            r.writer.write(step, m)
            bar.set_postfix(_postfix(m))
            if step % cfg.log.every == 0 or step == cfg.train.steps:
                _log(f"step {step}: {_fmt(m)}")
            ok = m["train/skipped"] == 0  # never checkpoint a state right after a NaN
            if ok and (step % cfg.ckpt.every == 0 or step == cfg.train.steps):
                ckpt_lib.save(r.manager, step, r.state, build_lib.checkpoint_record(r))
            if ok and r.trajectory is not None and cfg.ckpt.trajectory_due(step):
                ckpt_lib.save_trajectory(r.trajectory, step, r.state.params)
            last = m
        bar.close()
    _finish(r)
    return last


def _rollout(r: build_lib.Run, hooks, engine, score_fn, step: int):
    """This step's scored rollout (each process its own prompts) and its metrics over every
    process's rows. A hook may shorten the horizon, or drop groups and ask for more prompts."""
    t0 = time.perf_counter()
    cfg, G = r.cfg, r.cfg.rl.group_size
    step_sampling = r.sampling_cfg
    for h in hooks:
        step_sampling = h.sampling(step_sampling, step)
    sampler_params = jax.block_until_ready(r.sampler_params())
    t_reshard = time.perf_counter() - t0
    ro, extra_rounds = collect_lib.collect(
        lambda i: engine(
            sampler_params,
            r.data_it.next(),
            distributed.replicated_key(r.sampler_mesh, cfg.seed, 0, step, i),
            step_sampling,
            score_fn,
        ),
        [h.keep_groups for h in hooks],
        P=cfg.train.prompts_per_step,
        G=G,
        max_rounds=max((h.max_resample_rounds for h in hooks), default=0),
    )
    stats = distributed.gather_rows(rollout_types.stats(ro))  # every process's rows
    m = rollout_types.metrics(stats, G)
    m["rollout/resample_rounds"] = extra_rounds
    m["perf/rollout_s"] = time.perf_counter() - t0
    m["perf/reshard_s"] = t_reshard
    m["_tokens"] = float(np.sum(stats["lengths"]))
    return ro, m


def _batch(r: build_lib.Run, hooks, ro, m: dict[str, Any]):
    """This process's TrainBatch: the task's training rewards, the hooks' reward shaping, the
    advantages (a hook's, else the estimator's), then the hooks' batch changes. Adds metrics."""
    shaped = r.task.shape(ro.examples, ro.verdicts, r.cfg.rl.group_size, r.task_state)
    rewards_B, r.task_state = shaped.rewards_B, shaped.state
    m.update(shaped.metrics)
    for h in hooks:  # DAPO's overlong penalty
        rewards_B, hm = h.rewards(ro, rewards_B)
        m.update(hm)
    adv_B = None
    for h in hooks:  # label-free RLIF replaces the estimator
        adv_B, hm = h.advantages(ro, rewards_B) if adv_B is None else (adv_B, {})
        m.update(hm)
    if adv_B is None:
        adv_B = np.asarray(advantages_lib.compute(rewards_B, r.cfg.rl), np.float32)
    batch = rollout_types.to_batch(ro, adv_B)
    for h in hooks:  # overlong filter, DistIL targets, DelTA once before several updates
        batch, hm = h.batch(ro, batch, r.state.params)
        m.update(hm)
    return batch


def _updates(r: build_lib.Run, hooks, train_step, batch) -> dict[str, float]:
    """`rl.num_updates` optimizer steps on strided mini-batches of the global batch; their metrics
    averaged, and the sampler/trainer mismatch of the first."""
    n = r.cfg.rl.num_updates
    # Every process pads its rows of a mini-batch to the same count (DAPO may keep more groups
    # on one process than on another), a multiple of its shards and micro-batches.
    rows = -(-distributed.max_over_processes(batch.completion_BxTc.shape[0]) // n)
    rows = -(-rows // r.rows_multiple) * r.rows_multiple
    step_metrics = []
    for part in rollout_types.split_rows(batch, n):
        part = distributed.global_rows(rollout_types.pad_rows(part, rows), r.mesh)
        part_m = {}
        for h in hooks:  # reference and teacher log-probs
            part, hm = h.minibatch(part)
            part_m.update(hm)
        r.state, sm = train_step(r.state, part)
        step_metrics.append({**sm, **part_m})
    step_metrics = jax.device_get(step_metrics)  # replicated: every process has them
    m = {k: float(np.mean([sm[k] for sm in step_metrics])) for k in step_metrics[0]}
    # Sampler vs trainer on the same tokens: the first update's forward runs at the rollout's
    # weights, so its log-probs against the sampler's are the mismatch (k3 estimate), whether the
    # loss's ratio is the sampler's (bypass) or the trainer's (a rollout correction).
    m["rollout/mismatch_kl"] = float(step_metrics[0]["rl/mismatch_k3"])
    m["rollout/mismatch_log_ratio_max"] = float(step_metrics[0]["rl/mismatch_logp_abs_diff_max"])
    return m


def _finish(r: build_lib.Run) -> None:
    """Waits for the checkpoint writes; exports the policy as an HF folder when asked."""
    r.manager.wait_until_finished()
    if r.trajectory is not None:
        r.trajectory.wait_until_finished()
    r.writer.close()
    if not r.cfg.export_hf:
        return
    # Whole tensors on every process (a cross-host gather when there are several); process 0
    # writes them, with the tokenizer, so the folder loads as it is.
    params = r.state.params
    if jax.process_count() > 1:
        params = multihost_utils.process_allgather(params, tiled=True)
    if jax.process_index() == 0:
        out = os.path.join(r.workdir, "hf_export")
        hf.save_checkpoint(out, r.model_cfg, params)
        tokenizer_lib.copy_files(r.tok, out)


def _log(line: str) -> None:
    """Process 0 prints a line above the progress bar (a plain print would break the bar)."""
    if jax.process_index() != 0:
        return
    tqdm.tqdm.write(line)
    sys.stdout.flush()


def _postfix(m: dict[str, Any]) -> dict[str, str]:
    """The progress bar's postfix: reward, accuracy, KL (when computed), tokens per second."""
    fields = {
        "rollout/reward_mean": ("reward", "{:.3f}"),
        "rollout/acc": ("acc", "{:.3f}"),
        "rl/kl": ("kl", "{:.3g}"),
        "perf/tokens_per_s": ("tok/s", "{:.0f}"),
    }
    return {name: fmt.format(float(m[k])) for k, (name, fmt) in fields.items() if k in m}


def _fmt(m: dict[str, Any]) -> str:
    keys = (
        "rollout/reward_mean",
        "rollout/acc",
        "rl/kl",
        "eval/pass@1",
        "eval/greedy_acc",
        "eval/success",
        "eval/reward",
        "rollout/mismatch_kl",
        "perf/tokens_per_s",
    )
    # 4 significant digits: the mismatch is ~1e-6 in float32 and must not print as 0.
    return json.dumps({k.split("/")[-1]: float(f"{float(m[k]):.4g}") for k in keys if k in m})
