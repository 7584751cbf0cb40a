"""Checkpoints: orbax CheckpointManager over the TrainState plus a JSON record (data cursor, RNG,
config).

Saves are asynchronous and atomic (orbax writes to a temporary directory and renames it when
complete), so a crash during a save leaves the previous checkpoint usable and an unfinished one is
never listed. Restore goes against an abstract state that carries the target shardings, so a
checkpoint restores onto whatever mesh the resuming run uses.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from rlvr_jax.train import state as state_lib


@dataclasses.dataclass(frozen=True, kw_only=True)
class CheckpointConfig:
    every: int = 10  # save every this many RL steps
    max_to_keep: int = 3
    async_save: bool = True


class CheckpointShapeError(ValueError):
    """A checkpoint does not match the model the run builds."""


def make_manager(workdir: str, cfg: CheckpointConfig) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=cfg.max_to_keep,
        enable_async_checkpointing=cfg.async_save,
        create=True,
    )
    return ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, "ckpt")),
        options=options,
        item_handlers={
            "state": ocp.StandardCheckpointHandler(),
            "record": ocp.JsonCheckpointHandler(),
        },
    )


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
    """(step, state, record) of the latest complete checkpoint, or None when there is none."""
    step = manager.latest_step()
    if step is None:
        return None
    _check_shapes(manager, step, abstract_state)
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), record=ocp.args.JsonRestore()
        ),
    )
    return step, restored.state, restored.record


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
    meta = manager.item_metadata(step)
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


def abstract_like(state: state_lib.TrainState) -> state_lib.TrainState:
    """ShapeDtypeStructs with the shardings of `state`, the restore target."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
    )
