"""Multi-host plumbing: host-local rows <-> global arrays, cross-host gathers, barriers, RNG keys.

Every process runs the same program (multi-controller JAX) and holds one contiguous block of the
global batch's rows, in process order: the mesh lists devices process-major (mesh.make_mesh), and
the prompt iterator gives process p the p-th slice of every global batch. A group's G samples never
straddle two processes, so advantages are computed where the rewards are. Everything that crosses
hosts goes through an explicit call here, and each one is a no-op (or a plain device transfer) when
there is a single process. Control flow that depends on data (DAPO's rounds, NaN skips) must depend
only on gathered or replicated values, so every process takes the same branch.
"""

# pylint: disable=invalid-name
from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from rlvr_jax import mesh as mesh_lib


def initialize_from_env(env: dict[str, str]) -> bool:
    """`jax.distributed.initialize` when env["RLVR_DIST"] == "1"; True if it ran.

    RLVR_COORDINATOR (host:port), RLVR_NUM_PROCESSES and RLVR_PROCESS_ID are passed on when set;
    unset ones are left to JAX's cluster autodetection (TPU pods, SLURM).
    """
    if env.get("RLVR_DIST") != "1":
        return False
    num, pid = env.get("RLVR_NUM_PROCESSES"), env.get("RLVR_PROCESS_ID")
    jax.distributed.initialize(
        coordinator_address=env.get("RLVR_COORDINATOR") or None,
        num_processes=int(num) if num else None,
        process_id=int(pid) if pid else None,
    )
    return True


def local_shards(mesh: Mesh) -> int:
    """How many batch shards (data x fsdp) this process's devices hold."""
    return mesh_lib.batch_size_of(mesh) // jax.process_count()


def shard_rows(n: int, mesh: Mesh) -> int:
    """`n` rows rounded up to a multiple of this process's batch shards."""
    shards = local_shards(mesh)
    return -(-n // shards) * shards


def pad_to_shards(tree: Any, mesh: Mesh) -> Any:
    """Every leaf's rows (numpy, leading axis) padded to `shard_rows` by repeating its last row;
    the caller drops the repeats from the result."""

    def pad(x):
        extra = shard_rows(x.shape[0], mesh) - x.shape[0]
        return np.concatenate([x, np.repeat(x[-1:], extra, axis=0)]) if extra else x

    return jax.tree.map(pad, tree)


def global_rows(tree: Any, mesh: Mesh) -> Any:
    """This process's rows (numpy, batch first) -> global arrays split over the batch axes.

    The global batch is every process's rows, concatenated in process order; the number of rows
    must be the same on every process and divisible by `local_shards(mesh)`.
    """
    return multihost_utils.host_local_array_to_global_array(tree, mesh, P(mesh_lib.BATCH_AXES))


def local_rows(tree: Any, mesh: Mesh) -> Any:
    """This process's rows of global arrays (batch first), as numpy: the inverse of global_rows."""
    rows = mesh_lib.batch_sharding(mesh)

    def to_rows(x: jax.Array) -> jax.Array:
        if x.sharding.is_equivalent_to(rows, x.ndim):
            return x
        return _reshard(rows)(x)  # e.g. a replicated output of an XLA-partitioned program

    tree = jax.tree.map(to_rows, tree)
    local = multihost_utils.global_array_to_host_local_array(tree, mesh, P(mesh_lib.BATCH_AXES))
    return jax.device_get(local)


@functools.lru_cache(maxsize=16)
def _reshard(sharding: jax.sharding.Sharding):
    return jax.jit(lambda x: x, out_shardings=sharding)


def gather_rows(tree: Any) -> Any:
    """Every process's numpy rows concatenated along axis 0 in process order (on every process).

    Each process may hold a different number of rows. Identity on a single process.
    """
    if jax.process_count() == 1:
        return tree
    leaves, treedef = jax.tree.flatten(tree)
    counts = multihost_utils.process_allgather(np.asarray([len(x) for x in leaves], np.int64))
    counts = np.asarray(counts).reshape(jax.process_count(), len(leaves))
    most = counts.max(axis=0)
    if not most.any():  # nothing anywhere (e.g. DAPO dropped every group)
        return tree
    # process_allgather needs equal shapes: pad each leaf to the longest, then cut the padding.
    padded = [
        np.concatenate([x, np.zeros((m - len(x), *x.shape[1:]), x.dtype)])
        for x, m in zip(leaves, most, strict=True)
    ]
    stacked = multihost_utils.process_allgather(padded)  # [processes, most, ...] per leaf
    out = [
        np.concatenate([np.asarray(s)[p, : counts[p, i]] for p in range(len(counts))])
        for i, s in enumerate(stacked)
    ]
    return jax.tree.unflatten(treedef, out)


def place(tree: Any, shardings: Any) -> Any:
    """Host arrays that every process holds in full -> global arrays with `shardings`.

    Each device receives only its own shard, sliced on the host: no device ever holds the whole
    array (unless its sharding says so) and nothing crosses hosts.
    """
    return jax.tree.map(
        lambda x, s: jax.make_array_from_callback(np.shape(x), s, lambda idx: np.asarray(x)[idx]),
        tree,
        shardings,
    )


def replicated_key(mesh: Mesh, seed: int, *folds: int) -> jax.Array:
    """`jax.random.key(seed)` folded in with each of `folds` in turn, replicated over `mesh`.

    Built by a jitted function, so every process computes the same global key locally.
    """
    return _key_fn(mesh, len(folds))(np.uint32(seed), np.asarray(folds, np.uint32))


@functools.lru_cache(maxsize=16)
def _key_fn(mesh: Mesh, n: int):
    def key(seed, folds):
        k = jax.random.key(seed)
        for i in range(n):
            k = jax.random.fold_in(k, folds[i])
        return k

    return jax.jit(key, out_shardings=mesh_lib.replicated(mesh))


def sync(name: str) -> None:
    """A barrier across processes (no-op on one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def first_groups(keep_rounds: Sequence[np.ndarray], limit: int) -> list[np.ndarray]:
    """Keeps the first `limit` kept groups in global order (round, then process, then index).

    `keep_rounds[r]` flags this process's groups of round r (DAPO's filter). Returns the same flags
    with those past the first `limit` (counted over all processes) cleared, so the union over
    processes is exactly what one process sampling the whole batch would keep.
    """
    counts_R = np.asarray([int(np.sum(k)) for k in keep_rounds], np.int64)
    counts_NxR = gather_rows(counts_R[None, :])  # [processes, rounds]
    me = jax.process_index()
    out = []
    for r, keep in enumerate(keep_rounds):
        before = int(counts_NxR[:, :r].sum() + counts_NxR[:me, r].sum())
        rank = before + np.cumsum(keep) - 1  # global rank of each kept group
        out.append(np.asarray(keep, bool) & (rank < limit))
    return out


def count(n: int) -> int:
    """The sum of `n` over processes."""
    return int(gather_rows(np.asarray([n], np.int64)).sum())


def max_over_processes(n: int) -> int:
    return int(gather_rows(np.asarray([n], np.int64)).max())
