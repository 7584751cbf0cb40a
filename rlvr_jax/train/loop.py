"""The RL loop, readable top to bottom: prompts -> sampler -> verifiers -> advantages -> updates.

`run(c, workdir)` takes the experiment's ConfigDict (the only library module that does), converts
each group once into its typed dataclass, and then loops. Resume order: (1) the latest checkpoint in
`workdir`; (2) the latest checkpoint of the run `c.ckpt.resume_from` names (params, optimizer
state, step and data cursor; the run then continues in `workdir`); (3) `c.model.init_from` (an HF
folder, params only) plus the warm start; (4) from scratch. Process 0 shows a progress bar.

Everything lives on one (data, fsdp, tensor) mesh, `c.mesh.shape`: parameters in the shardings of
their logical axes, optimizer moments like their parameters, the batch split over data x fsdp.
The sampler runs on that mesh too, or on `c.mesh.sampler` (a sub-mesh or another layout of the same
devices), with the policy's weights resharded onto it once per rollout (`perf/reshard_s`).
With several processes (experiments/grpo_math.py, RLVR_DIST=1), each one samples and scores its own
share of the prompts, and the global batch is their rows in process order (train/distributed.py).
Only process 0 writes metrics; every process joins the checkpoint saves.
"""

# pylint: disable=invalid-name
from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import tqdm
from jax.experimental import multihost_utils

from rlvr_jax import mesh as mesh_lib
from rlvr_jax import sampling
from rlvr_jax.data import iterator as iterator_lib
from rlvr_jax.models import hf
from rlvr_jax.models import params as params_lib
from rlvr_jax.models import tokenizer as tokenizer_lib
from rlvr_jax.objectives import advantages as advantages_lib
from rlvr_jax.objectives import dapo, rl_config
from rlvr_jax.train import checkpoint as ckpt_lib
from rlvr_jax.train import distributed
from rlvr_jax.train import evaluate as eval_lib
from rlvr_jax.train import metrics as metrics_lib
from rlvr_jax.train import research as research_lib
from rlvr_jax.train import rollout as rollout_lib
from rlvr_jax.train import setup as setup_lib
from rlvr_jax.train import state as state_lib
from rlvr_jax.train import step as step_lib
from rlvr_jax.train import tasks as tasks_lib
from rlvr_jax.train import warm_start as warm_lib


def run(c: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains with the config `c` in `workdir`; rerunning the same call resumes. Returns final
    metrics."""
    # --- Typed configs, mesh and validation (every error here comes before any compile) ---
    rl = rl_config.RLConfig(**c.rl)
    opt_cfg = state_lib.OptConfig(**c.opt)
    warm_cfg = warm_lib.WarmStartConfig(**c.warm_start)
    mesh = setup_lib.make_mesh(c)
    sampler_mesh = setup_lib.make_sampler_mesh(c, mesh)
    setup_lib.validate(c, rl, jax.process_count())
    tasks_lib.validate(c)
    research = research_lib.configs(c, rl, micro=c.train.micro_batches)
    model_cfg, tok = setup_lib.load_model(c)
    task_data = tasks_lib.load(c)
    train_examples, eval_examples = task_data.train, task_data.test
    sampling_cfg = sampling.SamplingConfig(eos_ids=tok.eos_ids, pad_id=tok.pad_id, **c.sampling)
    system = c.data.system or None
    G, P = rl.group_size, c.train.prompts_per_step
    writer = metrics_lib.Writer(
        workdir, enabled=jax.process_index() == 0, tensorboard=c.log.tensorboard
    )
    writer.write_config(c.to_dict())
    optimizer = state_lib.make_optimizer(opt_cfg)
    # resume_from is read through the dataclass default when the config has no such key.
    ckpt_cfg = ckpt_lib.CheckpointConfig(**c.ckpt)
    manager = ckpt_lib.make_manager(workdir, ckpt_cfg)
    trajectory = None  # RELEX's prefix: dense early policy params (ckpt.trajectory_*)
    if ckpt_cfg.trajectory_until > 0:
        trajectory = ckpt_lib.make_trajectory_manager(workdir)

    # --- Shardings: params by their logical axes, optimizer moments like their params ---
    param_shd = mesh_lib.param_shardings(mesh, params_lib.param_axes(model_cfg))
    state_shd = state_lib.state_shardings(param_shd, optimizer)
    # The one weight transfer between the meshes (none when the sampler shares the policy's).
    sampler_shd = mesh_lib.param_shardings(sampler_mesh, params_lib.param_axes(model_cfg))
    to_sampler = mesh_lib.reshard_fn(mesh, sampler_mesh, sampler_shd)
    shapes = jax.eval_shape(
        lambda p: state_lib.init_state(p, optimizer), params_lib.param_shapes(model_cfg)
    )
    abstract = ckpt_lib.abstract_state(shapes, state_shd)

    # --- Resume or start: own checkpoint > resume_from's checkpoint > warm start ---
    data_it = iterator_lib.PromptIterator(
        train_examples,
        batch_size=P,
        seed=c.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    pow3r_cfg = tasks_lib.pow3r_config(c) if tasks_lib.kind(c) == "rubric" else None
    pow3r_state = {}  # POW3R's EMA memory per rubric family (checkpointed)
    restored, source = ckpt_lib.restore_latest(manager, abstract), None
    if restored is None and ckpt_cfg.resume_from:
        source = ckpt_lib.make_reader(ckpt_cfg.resume_from)
        restored = ckpt_lib.restore_latest(source, abstract)
        if restored is None:
            raise FileNotFoundError(
                f"ckpt.resume_from={ckpt_cfg.resume_from!r}: no complete checkpoint in "
                f"{source.directory}"
            )
    if restored is not None:
        start, state, record = restored
        data_it.restore(record["data"])
        pow3r_state = tasks_lib.pow3r_state_from_json(record.get("pow3r", {}))
        writer.truncate_after(start)
        where = "checkpoint" if source is None else str(source.directory)
        _log(f"resumed from {where} at step {start}")
    else:
        start = 0
        params = setup_lib.init_params(c, model_cfg, param_shd)
        params, losses = warm_lib.run(
            params,
            tok,
            train_examples,
            cfg=warm_cfg,
            model_cfg=model_cfg,
            system=system,
            seed=c.seed,
            mesh=mesh,
        )
        state = state_lib.make_init_state(optimizer, state_shd)(params)  # params donated
        if losses:
            writer.write(0, {"warm/final_loss": losses[-1]})
    source_workdir = None if source is None else os.path.dirname(str(source.directory))
    ref_params = _reference_params(rl, state, abstract.params, workdir, start, source_workdir)

    temperature = sampling_cfg.temperature or 1.0
    # DelTA's coefficients come from the pre-update policy over the whole rollout batch: inside
    # the one update, or in one pass before several.
    delta_once = research.delta.enabled and rl.num_updates > 1
    train_step = step_lib.make_train_step(
        model_cfg=model_cfg,
        rl=rl,
        optimizer=optimizer,
        temperature=temperature,
        num_micro=c.train.micro_batches,
        shardings=state_shd,
        delta=None if delta_once else research.delta,
        distil=research.distil,
    )
    delta_fn = None
    if delta_once:
        delta_fn = step_lib.make_delta_fn(
            model_cfg=model_cfg,
            delta=research.delta,
            temperature=temperature,
            num_micro=c.train.micro_batches,
            param_shardings=param_shd,
        )
    ref_logps_fn = step_lib.make_logps_fn(
        model_cfg=model_cfg,
        temperature=temperature,
        param_shardings=param_shd,
        num_micro=c.train.ref_micro_batches,
    )
    teacher = teacher_logps_fn = topk_fn = None
    if research.opd.enabled:  # a frozen teacher scores the student's own samples
        teacher = research_lib.load_teacher(research.opd_teacher, model_cfg, tok, mesh)
        teacher_logps_fn = step_lib.make_logps_fn(
            model_cfg=teacher.model_cfg,
            temperature=temperature,
            param_shardings=jax.tree.map(lambda x: x.sharding, teacher.params),
            num_micro=c.train.ref_micro_batches,
        )
    if research.distil.enabled:  # the policy itself (or a model) reads the feedback
        if research.distil.teacher == "model":
            teacher = research_lib.load_teacher(research.distil_teacher, model_cfg, tok, mesh)
        topk_cfg = teacher.model_cfg if teacher is not None else model_cfg
        topk_fn = research_lib.make_topk_fn(
            topk_cfg,
            temperature,
            research.distil.top_k,
            param_shd if teacher is None else jax.tree.map(lambda x: x.sharding, teacher.params),
        )
    evaluator = eval_lib.Evaluator(
        tok,
        eval_examples[: c.eval.num_prompts],
        model_cfg=model_cfg,
        system=system,
        sampling_cfg=sampling_cfg,
        k=c.eval.k,
        mesh=sampler_mesh,
    )
    # Each process's rows of a mini-batch are padded to a multiple of this (empty rows).
    rows_multiple = math.lcm(
        distributed.local_shards(mesh), c.train.micro_batches, c.train.ref_micro_batches
    )
    eval_key = lambda step: distributed.replicated_key(sampler_mesh, c.seed, 1, step)

    judge = None
    if tasks_lib.kind(c) == "rubric":  # a judge model for criteria without a programmatic check
        judge = tasks_lib.make_judge(
            c,
            tok=tok,
            model_cfg=model_cfg,
            sampling_cfg=sampling_cfg,
            mesh=sampler_mesh,
            policy_params=lambda: to_sampler(state.params),
        )
    with tasks_lib.scorer(c, task_data, judge) as score_fn:
        if start == 0:
            if trajectory is not None:
                ckpt_lib.save_trajectory(trajectory, 0, state.params)
            m = evaluator(to_sampler(state.params), eval_key(0), score_fn)
            writer.write(0, m)
            _log(f"step 0: {_fmt(m)}")
        last = {}
        bar = tqdm.tqdm(
            range(start + 1, c.train.steps + 1),
            desc="RL",
            unit="step",
            initial=start,
            total=c.train.steps,
            disable=jax.process_index() != 0,
        )
        for step in bar:
            t0 = time.perf_counter()
            step_sampling = research_lib.rollout_sampling(sampling_cfg, research.opd, step)
            sampler_params = jax.block_until_ready(to_sampler(state.params))
            t_reshard = time.perf_counter() - t0
            # --- Rollout (with DAPO dynamic sampling: refill dropped groups from more prompts) ---
            rounds, keeps = [], []
            for round_ in range(1 + (rl.max_resample_rounds if rl.dynamic_sampling else 0)):
                r = rollout_lib.sample(
                    sampler_params,
                    tok,
                    data_it.next(),
                    distributed.replicated_key(sampler_mesh, c.seed, 0, step, round_),
                    G=G,
                    system=system,
                    model_cfg=model_cfg,
                    sampling_cfg=step_sampling,
                    score_fn=score_fn,
                    mesh=sampler_mesh,
                )
                keep_P = np.ones(len(r.examples), bool)
                if rl.dynamic_sampling:
                    keep_P = dapo.keep_groups(r.rewards_B, G)
                rounds.append(r)
                keeps.append(keep_P)
                if distributed.count(sum(int(k.sum()) for k in keeps)) >= P:  # over processes
                    break
            # The first P kept groups in global order: what one process sampling it all would keep.
            keeps = distributed.first_groups(keeps, P)
            r = rollout_lib.concat(
                [rollout_lib.select_groups(x, k, G) for x, k in zip(rounds, keeps, strict=True)]
            )
            t_rollout = time.perf_counter() - t0
            stats = distributed.gather_rows(rollout_lib.stats(r))  # every process's rows
            m = setup_lib.rollout_metrics(stats, G)
            m["rollout/resample_rounds"] = len(rounds) - 1
            if m["rollout/prompts"] == 0:
                _log(f"step {step}: every group had equal rewards; no update")
                writer.write(step, m)
                bar.set_postfix(_postfix(m))
                continue

            # --- Rewards -> advantages (per group: each process computes its own groups') ---
            rewards_B = r.rewards_B.copy()
            m.update(tasks_lib.code_metrics(r.verdicts))
            if tasks_lib.kind(c) == "rubric":  # POW3R weights (or the human ones) per family
                rr = tasks_lib.rubric_rewards(
                    r.examples,
                    r.verdicts,
                    G,
                    cfg=pow3r_cfg if c.rubric.pow3r else None,
                    state=pow3r_state,
                    judge_criteria=judge is not None and c.rubric.judge_criteria,
                )
                rewards_B, pow3r_state = rr.rewards_B, rr.state
                m.update(rr.metrics)
                m.update(tasks_lib.judge_metrics(judge))
            if rl.overlong_penalty:
                rewards_B += dapo.soft_overlong_penalty(
                    np.asarray(r.sample.lengths_B), rl.overlong_max_len, rl.overlong_cache_len
                )
            if research.rlif is not None:  # label-free: votes and self-certainty, no answers
                adv_B, rlif_m = research_lib.rlif_advantages(r, research.rlif, G)
                m.update(rlif_m)
            else:
                adv_B = np.asarray(advantages_lib.compute(rewards_B, rl), np.float32)
            batch = rollout_lib.to_batch(r, adv_B)
            if rl.overlong_filter:  # truncated completions leave the loss entirely
                batch = dapo.filter_overlong(batch, ~np.asarray(r.sample.stopped_B))
            if research.distil.enabled:
                batch, _ = research_lib.distil_targets(
                    r,
                    batch,
                    tok=tok,
                    system=system,
                    G=G,
                    cfg=research.distil,
                    topk_fn=topk_fn,
                    teacher_params=state.params if teacher is None else teacher.params,
                    sampling_cfg=sampling_cfg,
                    mesh=mesh,
                )
            if research.opd.enabled:
                m["opd/horizon"] = step_sampling.max_new_tokens

            # --- Updates: num_updates mini-batches, each one optimizer step ---
            # Every process pads its rows of a mini-batch to the same count (DAPO may keep more
            # groups on one process than on another), a multiple of its shards and micro-batches.
            if delta_fn is not None:  # once, before any update changes the policy
                batch, delta_m = _delta_once(delta_fn, state.params, batch, rows_multiple, mesh)
                m.update(delta_m)
            rows = -(-distributed.max_over_processes(len(adv_B)) // rl.num_updates)
            rows = -(-rows // rows_multiple) * rows_multiple
            step_metrics = []
            for part in rollout_lib.split_rows(batch, rl.num_updates):
                part = distributed.global_rows(rollout_lib.pad_rows(part, rows), mesh)
                if rl.needs_reference:
                    part = part.replace(
                        ref_logps_BxTc=ref_logps_fn(
                            ref_params,
                            part.prompt_BxTp,
                            part.prompt_mask_BxTp,
                            part.completion_BxTc,
                            part.completion_mask_BxTc,
                        )
                    )
                if research.opd.enabled:
                    part, opd_m = research_lib.opd_advantages(
                        part, teacher, teacher_logps_fn, research.opd
                    )
                    sm_extra = opd_m
                else:
                    sm_extra = {}
                state, sm = train_step(state, part)
                sm = {**sm, **sm_extra}
                step_metrics.append(sm)
            step_metrics = jax.device_get(step_metrics)  # replicated: every process has them
            for k in step_metrics[0]:
                m[k] = float(np.mean([sm[k] for sm in step_metrics]))
            # Sampler vs trainer on the same tokens: the first update's forward runs at the
            # rollout's weights, so its ratio to the sampler's log-probs is the mismatch.
            m["rollout/mismatch_kl"] = float(step_metrics[0]["rl/approx_kl"])
            m["rollout/mismatch_log_ratio_max"] = float(step_metrics[0]["rl/log_ratio_abs_max"])
            if m["train/skipped"] > 0:
                _log(f"step {step}: non-finite loss or gradient; update skipped")
            dt = time.perf_counter() - t0
            m["perf/step_s"] = dt
            m["perf/rollout_s"] = t_rollout
            m["perf/reshard_s"] = t_reshard
            m["perf/tokens_per_s"] = float(np.sum(stats["lengths"])) / dt

            # --- Eval / log / checkpoint ---
            if c.eval.every and step % c.eval.every == 0 or step == c.train.steps:
                m.update(evaluator(to_sampler(state.params), eval_key(step), score_fn))
            writer.write(step, m)
            bar.set_postfix(_postfix(m))
            if step % c.log.every == 0 or step == c.train.steps:
                _log(f"step {step}: {_fmt(m)}")
            if step % ckpt_cfg.every == 0 or step == c.train.steps:
                if m["train/skipped"] == 0:  # never checkpoint a state right after a NaN
                    record = {"data": data_it.state()}
                    if pow3r_state:
                        record["pow3r"] = tasks_lib.pow3r_state_to_json(pow3r_state)
                    ckpt_lib.save(manager, step, state, record)
            if trajectory is not None and ckpt_cfg.trajectory_due(step) and m["train/skipped"] == 0:
                ckpt_lib.save_trajectory(trajectory, step, state.params)
            last = m
        bar.close()
    manager.wait_until_finished()
    if trajectory is not None:
        trajectory.wait_until_finished()
    writer.close()
    if c.export_hf:
        # Whole tensors on every process (a cross-host gather when there are several); process 0
        # writes them.
        params = state.params
        if jax.process_count() > 1:
            params = multihost_utils.process_allgather(params, tiled=True)
        if jax.process_index() == 0:  # with the tokenizer, so the folder loads as it is
            out = os.path.join(workdir, "hf_export")
            hf.save_checkpoint(out, model_cfg, params)
            tokenizer_lib.copy_files(tok, out)
    return last


def _delta_once(delta_fn, params, batch, rows_multiple, mesh):
    """This process's batch with DelTA's coefficients over the global batch folded into its
    advantages, and their stats (floats)."""
    n = batch.completion_BxTc.shape[0]
    rows = -(-distributed.max_over_processes(n) // rows_multiple) * rows_multiple
    full = distributed.global_rows(rollout_lib.pad_rows(batch, rows), mesh)
    out, stats = delta_fn(params, full)
    adv_BxTc = np.asarray(distributed.local_rows(out.adv_BxTc, mesh))[:n]
    return batch.replace(adv_BxTc=adv_BxTc), {k: float(v) for k, v in jax.device_get(stats).items()}


def _reference_params(rl, state, target, workdir, start, source_workdir):
    """The frozen reference: the policy at RL step 0, saved once so a resumed run reloads it.

    A run continued from another run's checkpoint (ckpt.resume_from) takes that run's reference.
    When no reference was ever saved (the earlier run had rl.beta=0), the current policy becomes it.
    It lives on the policy's mesh, in the policy's shardings (`target`).
    """
    if not rl.needs_reference:
        return None
    path = os.path.abspath(os.path.join(workdir, "reference"))
    checkpointer = ocp.StandardCheckpointer()
    # Every process must see the same files: none may look before another has finished saving.
    distributed.sync("rlvr_jax_reference_lookup")
    if os.path.exists(path):
        return checkpointer.restore(path, target)
    source = source_workdir and os.path.join(source_workdir, "reference")
    if source and os.path.exists(source):
        params = checkpointer.restore(source, target)
    else:
        if start > 0:
            _log(f"no saved reference policy; the policy at step {start} becomes the reference")
        shardings = jax.tree.map(lambda x: x.sharding, target)
        params = jax.jit(lambda p: jax.tree.map(jnp.copy, p), out_shardings=shardings)(state.params)
    checkpointer.save(path, params)
    checkpointer.wait_until_finished()
    return params


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
        "rollout/mismatch_kl",
        "perf/tokens_per_s",
    )
    # 4 significant digits: the mismatch is ~1e-6 in float32 and must not print as 0.
    return json.dumps({k.split("/")[-1]: float(f"{float(m[k]):.4g}") for k in keys if k in m})
