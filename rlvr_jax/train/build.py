"""Everything a run builds from its typed config before its first RL step: checks, mesh, model,
task, checkpoints, the starting state (resumed or warm-started), the rollout engine, the
evaluator, the train step with its Objective, and the objective's host-side hooks.

Order matters only where it must: every config check comes before anything loads or compiles;
the hooks come after the state, because the frozen reference is the policy at RL step 0.
"""

# pylint: disable=invalid-name
from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
import orbax.checkpoint as ocp
from jax.sharding import Mesh

from rlvr_jax import distributed, sampling, tasks
from rlvr_jax import mesh as mesh_lib
from rlvr_jax.data import iterator as iterator_lib
from rlvr_jax.errors import ConfigError
from rlvr_jax.models import config as config_lib
from rlvr_jax.models import frozen
from rlvr_jax.models import params as params_lib
from rlvr_jax.models import tokenizer as tokenizer_lib
from rlvr_jax.objectives import dapo, hooks, reference
from rlvr_jax.objectives import delta as delta_lib
from rlvr_jax.objectives import distil as distil_lib
from rlvr_jax.objectives import forward as forward_lib
from rlvr_jax.objectives import mismatch as mismatch_lib
from rlvr_jax.objectives import objective as objective_lib
from rlvr_jax.objectives import opd as opd_lib
from rlvr_jax.objectives import rlif as rlif_lib
from rlvr_jax.rollout import multi_turn, single_turn
from rlvr_jax.rollout import types as rollout_types
from rlvr_jax.tasks import base as task_base
from rlvr_jax.train import checkpoint as ckpt_lib
from rlvr_jax.train import evaluate as eval_lib
from rlvr_jax.train import metrics as metrics_lib
from rlvr_jax.train import run_config, setup
from rlvr_jax.train import state as state_lib
from rlvr_jax.train import step as step_lib
from rlvr_jax.train import warm_start as warm_lib


@dataclasses.dataclass
class Run:
    """A built run: its config, devices, model, task and I/O, and the mutable policy state."""

    cfg: run_config.RunConfig
    workdir: str
    mesh: Mesh
    sampler_mesh: Mesh
    model_cfg: config_lib.ModelConfig
    tok: tokenizer_lib.Tokenizer
    sampling_cfg: sampling.SamplingConfig
    task: task_base.Task
    optimizer: optax.GradientTransformation
    param_shd: Any
    state_shd: state_lib.TrainState
    abstract: state_lib.TrainState
    to_sampler: Callable[[params_lib.Params], params_lib.Params]
    writer: metrics_lib.Writer
    manager: ocp.CheckpointManager
    trajectory: ocp.CheckpointManager | None
    data_it: iterator_lib.PromptIterator
    state: state_lib.TrainState | None = None
    start: int = 0
    task_state: Any = None
    source_workdir: str | None = None  # the run ckpt.resume_from continued

    def sampler_params(self) -> params_lib.Params:
        """The current policy weights on the sampler's mesh."""
        return self.to_sampler(self.state.params)

    @property
    def rows_multiple(self) -> int:
        """Each process's rows of a mini-batch are padded to a multiple of this (empty rows)."""
        t = self.cfg.train
        return math.lcm(distributed.local_shards(self.mesh), t.micro_batches, t.ref_micro_batches)


def prepare(cfg: run_config.RunConfig, workdir: str) -> Run:
    """Checks, mesh, model, task and checkpoint managers; no state yet."""
    processes = jax.process_count()
    task_cfg = run_config.task_config(cfg)
    mesh = setup.make_mesh(cfg)
    sampler_mesh = setup.make_sampler_mesh(cfg, mesh)
    run_config.validate(cfg, processes)
    tasks.validate(task_cfg, processes)
    model_cfg, tok = setup.load_model(cfg)
    sampling_cfg = run_config.sampling_config(cfg, tok.eos_ids, tok.pad_id)
    writer = metrics_lib.Writer(
        workdir, enabled=jax.process_index() == 0, tensorboard=cfg.log.tensorboard
    )
    optimizer = state_lib.make_optimizer(cfg.opt)
    manager = ckpt_lib.make_manager(workdir, cfg.ckpt)
    trajectory = None  # RELEX's prefix: dense early policy params (ckpt.trajectory_*)
    if cfg.ckpt.trajectory_until > 0:
        trajectory = ckpt_lib.make_trajectory_manager(workdir)

    # Shardings: params by their logical axes, optimizer moments like their params.
    param_shd = mesh_lib.param_shardings(mesh, params_lib.param_axes(model_cfg))
    state_shd = state_lib.state_shardings(param_shd, optimizer)
    # The one weight transfer between the meshes (none when the sampler shares the policy's).
    sampler_shd = mesh_lib.param_shardings(sampler_mesh, params_lib.param_axes(model_cfg))
    to_sampler = mesh_lib.reshard_fn(mesh, sampler_mesh, sampler_shd)
    shapes = jax.eval_shape(
        lambda p: state_lib.init_state(p, optimizer), params_lib.param_shapes(model_cfg)
    )
    run: Run | None = None

    def generate(params, prompts, judge_cfg, scfg):  # a judge model's greedy sampler calls
        key = distributed.replicated_key(sampler_mesh, cfg.seed, 2, 0)  # unused: greedy
        return single_turn.generate(
            params, prompts, key, model_cfg=judge_cfg, sampling_cfg=scfg, mesh=sampler_mesh
        )

    ctx = task_base.TaskContext(
        tok=tok,
        model_cfg=model_cfg,
        sampling_cfg=sampling_cfg,
        mesh=sampler_mesh,
        policy_params=lambda: run.sampler_params(),
        generate=generate,
        processes=processes,
    )
    task = tasks.build(task_cfg, ctx)
    data_it = iterator_lib.PromptIterator(
        task.train,
        batch_size=cfg.train.prompts_per_step,
        seed=cfg.seed,
        process_index=jax.process_index(),
        process_count=processes,
    )
    run = Run(
        cfg=cfg,
        workdir=workdir,
        mesh=mesh,
        sampler_mesh=sampler_mesh,
        model_cfg=model_cfg,
        tok=tok,
        sampling_cfg=sampling_cfg,
        task=task,
        optimizer=optimizer,
        param_shd=param_shd,
        state_shd=state_shd,
        abstract=ckpt_lib.abstract_state(shapes, state_shd),
        to_sampler=to_sampler,
        writer=writer,
        manager=manager,
        trajectory=trajectory,
        data_it=data_it,
    )
    return run


def restore_or_start(run: Run, log: Callable[[str], None]) -> None:
    """The run's state: its own latest checkpoint, else the latest of `ckpt.resume_from`'s run
    (params, optimizer, step, data cursor and task state; it continues in this workdir; a data
    stream of another seed, size or content starts over, logged), else `model.init_from` (or a
    random init) plus the warm start."""
    cfg = run.cfg
    restored, source = ckpt_lib.restore_latest(run.manager, run.abstract), None
    if restored is None and cfg.ckpt.resume_from:
        source = ckpt_lib.make_reader(cfg.ckpt.resume_from)
        restored = ckpt_lib.restore_latest(source, run.abstract)
        if restored is None:
            raise FileNotFoundError(
                f"ckpt.resume_from={cfg.ckpt.resume_from!r}: no complete checkpoint in "
                f"{source.directory}"
            )
    if restored is not None:
        run.start, run.state, record = restored
        why = run.data_it.mismatch(record["data"])
        if source is not None and why is not None:
            # Another run's weights on this run's data (another seed, context length or
            # dataset): the data starts from its beginning; the run's own checkpoints stay strict.
            log(f"ckpt.resume_from: its data stream differs ({why}); this run's data starts over")
        else:
            run.data_it.restore(record["data"])
        run.task_state = run.task.state_from_record(record)
        run.writer.truncate_after(run.start)
        where = "checkpoint" if source is None else str(source.directory)
        log(f"resumed from {where} at step {run.start}")
    else:
        run.start, run.task_state = 0, run.task.init_state()
        params = setup.init_params(cfg, run.model_cfg, run.param_shd)
        params, losses = warm_lib.run(
            params,
            run.tok,
            run.task.train,
            cfg=cfg.warm_start,
            model_cfg=run.model_cfg,
            system=cfg.system,
            seed=cfg.seed,
            mesh=run.mesh,
            rows=(
                run.task.warm_rows(run.tok, cfg.seed, cfg.multi_turn.episode_tokens)
                if cfg.warm_start.steps
                else None
            ),
        )
        run.state = state_lib.make_init_state(run.optimizer, run.state_shd)(params)  # donated
        if losses:
            run.writer.write(0, {"warm/final_loss": losses[-1]})
    run.source_workdir = None if source is None else os.path.dirname(str(source.directory))


def checkpoint_record(run: Run) -> dict[str, Any]:
    """The JSON record saved beside the state: the data cursor and the task's shaping state."""
    return {"data": run.data_it.state(), **run.task.state_to_record(run.task_state)}


def objective(cfg: run_config.RunConfig) -> objective_lib.Objective:
    """The train step's loss. DelTA's coefficients come from the pre-update policy over the whole
    rollout batch: inside the one update, or in one pass before several (a hook, below)."""
    delta_in_step = cfg.delta.enabled and cfg.rl.num_updates == 1
    return objective_lib.compose(
        cfg.rl, delta=cfg.delta if delta_in_step else None, distil=cfg.distil
    )


def train_step(run: Run):
    cfg = run.cfg
    return step_lib.make_train_step(
        model_cfg=run.model_cfg,
        objective=objective(cfg),
        optimizer=run.optimizer,
        temperature=run.sampling_cfg.temperature or 1.0,
        num_micro=cfg.train.micro_batches,
        shardings=run.state_shd,
    )


def make_hooks(run: Run, log: Callable[[str], None]) -> tuple[hooks.Hook, ...]:
    """The objective's host-side hooks, in the order the loop calls them."""
    cfg, rl = run.cfg, run.cfg.rl
    temperature = run.sampling_cfg.temperature or 1.0
    logps_fn = lambda model_cfg, shardings: forward_lib.make_logps_fn(  # noqa: E731
        model_cfg=model_cfg,
        temperature=temperature,
        param_shardings=shardings,
        num_micro=cfg.train.ref_micro_batches,
    )
    out: list[hooks.Hook] = []
    if rl.dynamic_sampling:
        out.append(dapo.DynamicSampling(rl.max_resample_rounds))
    if rl.overlong_penalty:
        out.append(dapo.OverlongPenalty(rl.overlong_max_len, rl.overlong_cache_len))
    if cfg.rlif.enabled:  # label-free: votes and self-certainty, no answers
        out.append(rlif_lib.LabelFree(cfg.rlif, rl.group_size))
    if rl.overlong_filter:  # truncated completions leave the loss entirely
        out.append(dapo.OverlongFilter())
    if cfg.distil.enabled:  # the policy itself (or a frozen model) reads the feedback
        teacher = None
        if cfg.distil.teacher == "model":
            teacher = frozen.load(cfg.distil.teacher_path, run.model_cfg, run.tok, run.mesh)
        topk_cfg = run.model_cfg if teacher is None else teacher.model_cfg
        shardings = run.param_shd if teacher is None else _shardings(teacher.params)
        topk_fn = distil_lib.make_topk_fn(topk_cfg, temperature, cfg.distil.top_k, shardings)
        out.append(
            distil_lib.DistilTargets(
                cfg.distil,
                tok=run.tok,
                system=cfg.system,
                G=rl.group_size,
                sampling_cfg=run.sampling_cfg,
                mesh=run.mesh,
                topk_fn=topk_fn,
                teacher=teacher,
            )
        )
    if cfg.delta.enabled and rl.num_updates > 1:  # once, before any update changes the policy
        delta_fn = delta_lib.make_delta_fn(
            model_cfg=run.model_cfg,
            delta=cfg.delta,
            temperature=temperature,
            num_micro=cfg.train.micro_batches,
            param_shardings=run.param_shd,
        )
        out.append(
            delta_lib.DeltaOnce(delta_fn, run.rows_multiple, run.mesh, rollout_types.pad_rows)
        )
    if rl.rollout_correction != "none" and rl.num_updates > 1:  # pi_old, before any update
        out.append(
            mismatch_lib.TrainerLogps(
                logps_fn(run.model_cfg, run.param_shd),
                run.rows_multiple,
                run.mesh,
                rollout_types.pad_rows,
            )
        )
    if rl.needs_reference:
        ref_params = _reference_params(run, log)
        out.append(reference.ReferenceLogps(ref_params, logps_fn(run.model_cfg, run.param_shd)))
    if cfg.opd.enabled:  # a frozen teacher scores the student's own samples
        teacher = frozen.load(cfg.opd.teacher, run.model_cfg, run.tok, run.mesh)
        teacher_fn = logps_fn(teacher.model_cfg, _shardings(teacher.params))
        out.append(opd_lib.OPDHook(cfg.opd, teacher, teacher_fn))
    return tuple(out)


def evaluator(run: Run, engine=None):
    """Held-out evaluation: sampled completions (single-turn), or greedy episodes played with
    the rollout `engine` (multi-turn)."""
    cfg = run.cfg
    if run.task.rollout == "multi_turn":
        return eval_lib.EpisodeEvaluator(
            run.task.test[: cfg.eval.num_prompts], engine, run.sampling_cfg
        )
    return eval_lib.Evaluator(
        run.tok,
        run.task.test[: cfg.eval.num_prompts],
        model_cfg=sampler_model_cfg(run),
        system=cfg.system,
        sampling_cfg=run.sampling_cfg,
        k=cfg.eval.k,
        mesh=run.sampler_mesh,
        breakdown=run.task.eval_metrics,
    )


def engine(run: Run):
    """The rollout engine of the task's kind: `(params, examples, key, sampling_cfg, score_fn)
    -> Rollout`."""
    if run.task.rollout == "multi_turn":
        engine_cfg = _engine_config(run, force=True)
        return multi_turn.MultiTurn(
            run.tok,
            sampler_model_cfg(run),
            run.cfg.rl.group_size,
            engine_cfg=engine_cfg,
            mt=run.cfg.multi_turn,
            mesh=run.sampler_mesh,
            prepare=lambda examples, key: run.task.episode_examples(examples, run.task_state, key),
        )
    return single_turn.SingleTurn(
        tok=run.tok,
        model_cfg=sampler_model_cfg(run),
        G=run.cfg.rl.group_size,
        system=run.cfg.system,
        mesh=run.sampler_mesh,
        continuous=_continuous(run),
    )


def sampler_model_cfg(run: Run) -> config_lib.ModelConfig:
    """The model config every sampler of the run decodes with (rollouts and evaluation): the
    policy's, in `sampling.compute_dtype` when set (e.g. bf16 against a float32 trainer)."""
    dtype = run.cfg.sampling.compute_dtype
    return dataclasses.replace(run.model_cfg, compute_dtype=dtype) if dtype else run.model_cfg


def _continuous(run: Run) -> single_turn.Continuous | None:
    engine_cfg = _engine_config(run)
    return None if engine_cfg is None else single_turn.Continuous(engine_cfg)


def _engine_config(run: Run, force: bool = False):
    engine_cfg = run_config.engine_config(run.cfg, force=force)
    shards = mesh_lib.batch_size_of(run.sampler_mesh)
    if engine_cfg is not None and engine_cfg.slots % shards:
        raise ConfigError(
            f"sampling.slots={engine_cfg.slots} must be a multiple of the sampler mesh's "
            f"{shards} batch shards"
        )
    return engine_cfg


def _shardings(params: params_lib.Params):
    return jax.tree.map(lambda x: x.sharding, params)


def _reference_params(run: Run, log: Callable[[str], None]) -> params_lib.Params:
    """The frozen reference: the policy at RL step 0, saved once so a resumed run reloads it.

    A run continued from another run's checkpoint (ckpt.resume_from) takes that run's reference.
    When no reference was ever saved (the earlier run had rl.beta=0), the current policy becomes it.
    It lives on the policy's mesh, in the policy's shardings.
    """
    target = run.abstract.params
    path = os.path.abspath(os.path.join(run.workdir, "reference"))
    checkpointer = ocp.StandardCheckpointer()
    # Every process must see the same files: none may look before another has finished saving.
    distributed.sync("rlvr_jax_reference_lookup")
    if os.path.exists(path):
        return checkpointer.restore(path, target)
    source = run.source_workdir and os.path.join(run.source_workdir, "reference")
    if source and os.path.exists(source):
        params = checkpointer.restore(source, target)
    else:
        if run.start > 0:
            log(f"no saved reference policy; the policy at step {run.start} becomes the reference")
        params = jax.jit(lambda p: jax.tree.map(jnp.copy, p), out_shardings=_shardings(target))(
            run.state.params
        )
    checkpointer.save(path, params)
    checkpointer.wait_until_finished()
    return params
