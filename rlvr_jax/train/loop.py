"""The RL loop, readable top to bottom: prompts -> sampler -> verifiers -> advantages -> updates.

`run(c, workdir)` takes the experiment's ConfigDict (the only library module that does), converts
each group once into its typed dataclass, and then loops. Resume order: (1) the latest checkpoint in
`workdir`; (2) the latest checkpoint of the run `c.ckpt.resume_from` names (params, optimizer
state, step and data cursor; the run then continues in `workdir`); (3) `c.model.init_from` (an HF
folder, params only) plus the warm start; (4) from scratch. Process 0 shows a progress bar.
"""

# pylint: disable=invalid-name
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import tqdm

from rlvr_jax import sampling
from rlvr_jax.data import iterator as iterator_lib
from rlvr_jax.models import hf
from rlvr_jax.models import params as params_lib
from rlvr_jax.objectives import advantages as advantages_lib
from rlvr_jax.objectives import dapo, rl_config
from rlvr_jax.rewards import pool as pool_lib
from rlvr_jax.train import checkpoint as ckpt_lib
from rlvr_jax.train import evaluate as eval_lib
from rlvr_jax.train import metrics as metrics_lib
from rlvr_jax.train import rollout as rollout_lib
from rlvr_jax.train import setup as setup_lib
from rlvr_jax.train import state as state_lib
from rlvr_jax.train import step as step_lib
from rlvr_jax.train import warm_start as warm_lib


def run(c: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains with the config `c` in `workdir`; rerunning the same call resumes. Returns final
    metrics."""
    # --- Typed configs and validation (every error here comes before any compile) ---
    rl = rl_config.RLConfig(**c.rl)
    opt_cfg = state_lib.OptConfig(**c.opt)
    warm_cfg = warm_lib.WarmStartConfig(**c.warm_start)
    setup_lib.validate(c, rl)
    model_cfg, init_params, tok = setup_lib.load_model(c)
    train_examples, eval_examples = setup_lib.load_data(c)
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
    root_key = jax.random.key(c.seed)
    train_key, eval_key = jax.random.fold_in(root_key, 0), jax.random.fold_in(root_key, 1)

    # --- Resume or start: own checkpoint > resume_from's checkpoint > warm start ---
    state = state_lib.init_state(init_params, optimizer)
    data_it = iterator_lib.PromptIterator(train_examples, batch_size=P, seed=c.seed)
    abstract = ckpt_lib.abstract_like(state)
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
        writer.truncate_after(start)
        where = "checkpoint" if source is None else str(source.directory)
        _log(f"resumed from {where} at step {start}")
    else:
        start = 0
        params, losses = warm_lib.run(
            init_params,
            tok,
            train_examples,
            cfg=warm_cfg,
            model_cfg=model_cfg,
            system=system,
            seed=c.seed,
        )
        state = state_lib.init_state(params, optimizer)
        if losses:
            writer.write(0, {"warm/final_loss": losses[-1]})
    source_workdir = None if source is None else os.path.dirname(str(source.directory))
    ref_params = _reference_params(rl, state, workdir, start, source_workdir)

    train_step = step_lib.make_train_step(
        model_cfg=model_cfg,
        rl=rl,
        optimizer=optimizer,
        temperature=sampling_cfg.temperature or 1.0,
        num_micro=c.train.micro_batches,
    )
    ref_logps_fn = step_lib.make_logps_fn(
        model_cfg=model_cfg, temperature=sampling_cfg.temperature or 1.0
    )
    evaluator = eval_lib.Evaluator(
        tok,
        eval_examples[: c.eval.num_prompts],
        model_cfg=model_cfg,
        system=system,
        sampling_cfg=sampling_cfg,
        k=c.eval.k,
    )

    with pool_lib.VerifierPool(
        c.verifier.workers, c.verifier.timeout_s, preload=("rlvr_jax.rewards.math",)
    ) as pool:
        score_fn = setup_lib.make_score_fn(pool)
        if start == 0:
            m = evaluator(state.params, jax.random.fold_in(eval_key, 0), score_fn)
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
            step_key = jax.random.fold_in(train_key, step)
            # --- Rollout (with DAPO dynamic sampling: refill dropped groups from more prompts) ---
            rollouts, kept = [], 0
            for round_ in range(1 + (rl.max_resample_rounds if rl.dynamic_sampling else 0)):
                r = rollout_lib.sample(
                    state.params,
                    tok,
                    data_it.next(),
                    jax.random.fold_in(step_key, round_),
                    G=G,
                    system=system,
                    model_cfg=model_cfg,
                    sampling_cfg=sampling_cfg,
                    score_fn=score_fn,
                )
                if rl.dynamic_sampling:
                    r = rollout_lib.select_groups(r, dapo.keep_groups(r.rewards_B, G), G)
                rollouts.append(r)
                kept += len(r.examples)
                if kept >= P:
                    break
            r = rollout_lib.concat(rollouts)
            if kept > P:
                r = rollout_lib.select_groups(r, np.arange(kept) < P, G)
            t_rollout = time.perf_counter() - t0
            m = setup_lib.rollout_metrics(r, G, sampling_cfg)
            m["rollout/resample_rounds"] = len(rollouts) - 1
            if len(r.examples) == 0:
                _log(f"step {step}: every group had equal rewards; no update")
                writer.write(step, m)
                bar.set_postfix(_postfix(m))
                continue

            # --- Rewards -> advantages ---
            rewards_B = r.rewards_B.copy()
            if rl.overlong_penalty:
                rewards_B += dapo.soft_overlong_penalty(
                    np.asarray(r.sample.lengths_B), rl.overlong_max_len, rl.overlong_cache_len
                )
            adv_B = np.asarray(advantages_lib.compute(rewards_B, rl), np.float32)
            if rl.overlong_filter:
                adv_B = adv_B * dapo.overlong_mask(~np.asarray(r.sample.stopped_B))
            ref_logps = None
            if rl.needs_reference:
                s = r.sample
                ref_logps = np.asarray(
                    ref_logps_fn(
                        ref_params, s.prompt_BxTp, s.prompt_mask_BxTp, s.tokens_BxTc, s.mask_BxTc
                    )
                )
            batch = rollout_lib.to_batch(r, adv_B, ref_logps)

            # --- Updates: num_updates mini-batches, each one optimizer step ---
            n_rows = batch.completion_BxTc.shape[0]
            mb = n_rows // rl.num_updates
            step_metrics = []
            for u in range(rl.num_updates):
                part = jax.tree.map(lambda x, u=u, mb=mb: x[u * mb : (u + 1) * mb], batch)
                state, sm = train_step(state, part)
                step_metrics.append(sm)
            step_metrics = jax.device_get(step_metrics)
            for k in step_metrics[0]:
                m[k] = float(np.mean([sm[k] for sm in step_metrics]))
            if m["train/skipped"] > 0:
                _log(f"step {step}: non-finite loss or gradient; update skipped")
            dt = time.perf_counter() - t0
            m["perf/step_s"] = dt
            m["perf/rollout_s"] = t_rollout
            m["perf/tokens_per_s"] = float(np.sum(r.sample.lengths_B)) / dt

            # --- Eval / log / checkpoint ---
            if c.eval.every and step % c.eval.every == 0 or step == c.train.steps:
                m.update(evaluator(state.params, jax.random.fold_in(eval_key, step), score_fn))
            writer.write(step, m)
            bar.set_postfix(_postfix(m))
            if step % c.log.every == 0 or step == c.train.steps:
                _log(f"step {step}: {_fmt(m)}")
            if step % ckpt_cfg.every == 0 or step == c.train.steps:
                if m["train/skipped"] == 0:  # never checkpoint a state right after a NaN
                    ckpt_lib.save(manager, step, state, {"data": data_it.state()})
            last = m
        bar.close()
    manager.wait_until_finished()
    writer.close()
    if c.export_hf:
        hf.save_checkpoint(os.path.join(workdir, "hf_export"), model_cfg, state.params)
    return last


def _reference_params(rl, state, workdir, start, source_workdir) -> params_lib.Params | None:
    """The frozen reference: the policy at RL step 0, saved once so a resumed run reloads it.

    A run continued from another run's checkpoint (ckpt.resume_from) takes that run's reference.
    When no reference was ever saved (the earlier run had rl.beta=0), the current policy becomes it.
    """
    if not rl.needs_reference:
        return None
    path = os.path.abspath(os.path.join(workdir, "reference"))
    checkpointer = ocp.StandardCheckpointer()
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state.params)
    if os.path.exists(path):
        return checkpointer.restore(path, target)
    source = source_workdir and os.path.join(source_workdir, "reference")
    if source and os.path.exists(source):
        params = checkpointer.restore(source, target)
    else:
        if start > 0:
            _log(f"no saved reference policy; the policy at step {start} becomes the reference")
        params = jax.tree.map(lambda x: x.copy(), state.params)
    checkpointer.save(path, params)
    checkpointer.wait_until_finished()
    return params


def _log(line: str) -> None:
    """Prints a line above the progress bar (a plain print would break the bar)."""
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
        "perf/tokens_per_s",
    )
    return json.dumps({k.split("/")[-1]: round(float(m[k]), 4) for k in keys if k in m})
