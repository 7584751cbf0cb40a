"""Checkpoints: orbax CheckpointManager over the TrainState plus a JSON record (data cursor, RNG,
config).

Saves are asynchronous and atomic: orbax writes `<step>.orbax-checkpoint-tmp/`, puts
`commit_success.txt` in it last and renames it to `<step>/`, so a crash during a save leaves the
previous checkpoint usable. A `<step>/` without that marker (a non-atomic rename on a FUSE mount, a
partial copy of a run) is unfinished: it is never loaded, and `make_manager` sets it aside so that
the step can be saved again. Restore goes against an abstract state that carries the target
shardings, so a checkpoint restores onto whatever mesh the resuming run uses.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

from rlvr_jax.train import state as state_lib


@dataclasses.dataclass(frozen=True, kw_only=True)
class CheckpointConfig:
    every: int = 10  # save every this many RL steps
    max_to_keep: int = 3
    async_save: bool = True
    resume_from: str = ""  # another run's workdir (or its ckpt/) to continue when workdir has none
    # RELEX trajectory (workdir/trajectory, params only, never deleted): every `trajectory_every`
    # steps from step 0 up to `trajectory_until` (the prefix RELEX fits; 0: no trajectory), then
    # every `trajectory_sparse_every` steps (0: none), the real run to compare extrapolations to.
    trajectory_until: int = 0
    trajectory_every: int = 1
    trajectory_sparse_every: int = 0

    def __post_init__(self):
        for name in ("every", "trajectory_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"ckpt.{name}={getattr(self, name)} must be >= 1")
        for name in ("trajectory_until", "trajectory_sparse_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"ckpt.{name}={getattr(self, name)} must be >= 0")

    def trajectory_due(self, step: int) -> bool:
        """Whether RL step `step` (0: the policy RL starts from) goes into the trajectory."""
        if self.trajectory_until <= 0:
            return False
        if step <= self.trajectory_until:
            return step % self.trajectory_every == 0
        return self.trajectory_sparse_every > 0 and step % self.trajectory_sparse_every == 0


# The last file orbax writes into a step directory before publishing it (orbax 0.12 atomicity).
COMMIT_MARKER = "commit_success.txt"


class CheckpointShapeError(ValueError):
    """A checkpoint does not match the model the run builds."""


class CheckpointReadError(RuntimeError):
    """A checkpoint marked complete cannot be read (truncated or corrupted files)."""


def _item_handlers() -> dict[str, ocp.CheckpointHandler]:
    return {"state": ocp.StandardCheckpointHandler(), "record": ocp.JsonCheckpointHandler()}


def make_manager(workdir: str, cfg: CheckpointConfig) -> ocp.CheckpointManager:
    """The manager of workdir/ckpt; unfinished step directories left by a crash are set aside."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=cfg.max_to_keep,
        enable_async_checkpointing=cfg.async_save,
        create=True,
        cleanup_tmp_directories=True,  # a crashed save's tmp dir can hold a whole model
    )
    manager = ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, "ckpt")),
        options=options,
        item_handlers=_item_handlers(),
    )
    _set_aside_unfinished(manager)
    return manager


TRAJECTORY_DIR = "trajectory"
TRAJECTORY_ITEM = "params"  # rlvr_jax.relex reads this item


def make_trajectory_manager(workdir: str) -> ocp.CheckpointManager:
    """The manager of workdir/trajectory: params only, every save kept (RELEX's input)."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None, enable_async_checkpointing=True, create=True, cleanup_tmp_directories=True
    )
    manager = ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, TRAJECTORY_DIR)),
        options=options,
        item_handlers={TRAJECTORY_ITEM: ocp.StandardCheckpointHandler()},
    )
    _set_aside_unfinished(manager)
    return manager


def save_trajectory(manager: ocp.CheckpointManager, step: int, params) -> None:
    """Starts saving the policy's params at RL step `step`; a step already there (a resumed run
    redoing it, bitwise the same) is kept as it is."""
    if step in manager.all_steps():
        return
    manager.save(step, args=ocp.args.Composite(**{TRAJECTORY_ITEM: ocp.args.StandardSave(params)}))


def make_reader(path: str) -> ocp.CheckpointManager:
    """A read-only manager over another run's checkpoints; `path` is its workdir or its ckpt/."""
    ckpt_dir = os.path.join(path, "ckpt") if os.path.isdir(os.path.join(path, "ckpt")) else path
    if not os.path.isdir(ckpt_dir):
        raise FileNotFoundError(f"{path}: no such run directory or checkpoint directory")
    options = ocp.CheckpointManagerOptions(read_only=True, create=False)
    return ocp.CheckpointManager(
        os.path.abspath(ckpt_dir), options=options, item_handlers=_item_handlers()
    )


def _is_committed(manager: ocp.CheckpointManager, step: int) -> bool:
    return (manager.directory / str(step) / COMMIT_MARKER).exists()


def _set_aside_unfinished(manager: ocp.CheckpointManager) -> None:
    """Renames each `<step>/` without the commit marker to `<step>.unfinished-<ns>`.

    Left in place, orbax would count it as saved and silently skip saving that step (and any
    earlier one) again. Renamed, not deleted: nothing is destroyed on the marker's say-so.
    """
    unfinished = [s for s in manager.all_steps() if not _is_committed(manager, s)]
    if not unfinished:
        return
    if jax.process_index() == 0:
        for step in unfinished:
            src = manager.directory / str(step)
            dst = manager.directory / f"{step}.unfinished-{time.time_ns()}"
            logging.warning(
                "%s: unfinished checkpoint (no %s); moved to %s", src, COMMIT_MARKER, dst
            )
            src.rename(dst)
    ocp.multihost.sync_global_processes("rlvr_jax_set_aside_unfinished_checkpoints")
    manager.reload()


def save(
    manager: ocp.CheckpointManager, step: int, state: state_lib.TrainState, record: dict[str, Any]
) -> None:
    """Starts saving `state` and the JSON-serialisable `record` at RL step `step`."""
    manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), record=ocp.args.JsonSave(record)
        ),
    )


def restore_latest(
    manager: ocp.CheckpointManager, abstract_state: state_lib.TrainState
) -> tuple[int, state_lib.TrainState, dict[str, Any]] | None:
    """(step, state, record) of the latest complete checkpoint, or None when there is none.

    Step directories without the commit marker are skipped. A checkpoint that has the marker but
    cannot be read raises `CheckpointReadError` rather than silently falling back to an older one.
    """
    steps = [s for s in sorted(manager.all_steps(), reverse=True) if _is_committed(manager, s)]
    if not steps:
        return None
    step = steps[0]
    _check_shapes(manager, step, abstract_state)
    try:
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), record=ocp.args.JsonRestore()
            ),
        )
    except (OSError, ValueError) as e:  # tensorstore reports missing or short files as these
        raise _read_error(manager, step, e) from e
    return step, restored.state, restored.record


def _read_error(manager, step, e) -> CheckpointReadError:
    return CheckpointReadError(
        f"{manager.directory / str(step)}: checkpoint is marked complete but could not be "
        f"restored ({type(e).__name__}: {str(e)[:300]}). If its files are truncated or "
        "corrupted, move it away to resume from the one before."
    )


def _path(keypath) -> str:
    """A key path as 'params/layers/0/q', whether it came from dataclasses or from metadata
    dicts."""
    parts = []
    for k in keypath:
        for attr in ("name", "key", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
    return "/".join(parts)


def _check_shapes(manager, step, abstract_state) -> None:
    """Raises naming the first parameter whose stored shape differs from the model's."""
    try:
        meta = manager.item_metadata(step)
    except (OSError, ValueError) as e:
        raise _read_error(manager, step, e) from e
    stored = meta["state"] if meta is not None and "state" in meta else None
    if stored is None:
        return
    have = {_path(p): v for p, v in jax.tree_util.tree_flatten_with_path(stored)[0]}
    where = os.path.join(str(manager.directory), str(step))
    for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_state.params)[0]:
        key = "params/" + _path(path)
        got = have.get(key)
        shape = None if got is None else tuple(getattr(got, "shape", ()))
        if shape != tuple(leaf.shape):
            raise CheckpointShapeError(
                f"{where}: checkpoint tensor {key} has shape {shape}, the model expects "
                f"{tuple(leaf.shape)} (a checkpoint from a different model shape?)"
            )


def abstract_state(shapes: state_lib.TrainState, shardings: state_lib.TrainState):
    """The restore target: `shapes` (from `jax.eval_shape`) carrying `shardings`.

    Orbax reads each process's shards of every array straight into these shardings, whatever the
    mesh and process count that wrote the checkpoint.
    """
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, shardings
    )


def abstract_like(state: state_lib.TrainState) -> state_lib.TrainState:
    """ShapeDtypeStructs with the shardings of `state`, the restore target."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
    )
