"""The device mesh: axes `data`, `fsdp`, `tensor`; batch, replicated, parameter and KV-cache
shardings.

Parameters carry logical axis names (models/params.param_axes); `DEFAULT_RULES` maps them to mesh
axes, so the model never names a mesh axis. The batch is split over data x fsdp, the KV cache over
the batch and its heads (tensor). On a CPU host, one JAX device per core (`use_cpu_devices`) lets a
data- or tensor-parallel sampler use every core: XLA runs each device's program on its own thread.

Multi-host: the mesh spans every process's devices in `jax.devices()` order (process-major), so
each process holds a contiguous block of the batch rows (rlvr_jax/distributed.py relies on this).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")  # the batch dimension is split over both


def cpu_devices_flag(n: int | None = None) -> str:
    """XLA_FLAGS entry giving the CPU backend `n` devices (default: one per core)."""
    return f"--xla_force_host_platform_device_count={n or os.cpu_count() or 1}"


def use_cpu_devices(n: int | None = None) -> None:
    """Appends `cpu_devices_flag(n)` to XLA_FLAGS unless XLA_FLAGS already sets a device count.

    XLA reads the flag when jax starts its backends (the first device query or array), so call this
    before that; importing jax or this module starts none. Only the CPU backend is affected.
    """
    env = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in env:
        os.environ["XLA_FLAGS"] = f"{env} {cpu_devices_flag(n)}".strip()


def make_mesh(
    shape: Sequence[int] = (-1, 1, 1), devices: Sequence[jax.Device] | None = None
) -> Mesh:
    """A (data, fsdp, tensor) mesh; one entry of `shape` may be -1 (all remaining devices).

    `devices` defaults to every device of every process.
    """
    devices = list(devices if devices is not None else jax.devices())
    shape = list(shape)
    if len(shape) != len(MESH_AXES):
        raise ValueError(f"mesh shape {shape} must have {len(MESH_AXES)} entries {MESH_AXES}")
    if shape.count(-1) > 1:
        raise ValueError(f"mesh shape {shape}: at most one -1")
    if -1 in shape:
        known = math.prod(s for s in shape if s != -1)
        if len(devices) % known:
            raise ValueError(f"mesh shape {shape} does not divide {len(devices)} devices")
        shape[shape.index(-1)] = len(devices) // known
    if math.prod(shape) != len(devices):
        raise ValueError(
            f"mesh shape {shape} needs {math.prod(shape)} devices, have {len(devices)}"
        )
    auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
    return jax.make_mesh(tuple(shape), MESH_AXES, axis_types=auto, devices=devices)


def sub_mesh(shape: Sequence[int], mesh: Mesh) -> Mesh:
    """A (data, fsdp, tensor) mesh of `shape` on the first devices of each of `mesh`'s processes.

    The sampler's mesh: a subset of the training devices (e.g. (4, 1, 1) of a (2, 4, 1) mesh) or
    another layout of all of them (e.g. (2, 1, 4), tensor-parallel decoding without FSDP's
    per-step weight gathers). Every process keeps the same number of devices, so each still
    samples its own rows. A -1 in `shape` takes all of `mesh`'s devices.
    """
    by_process: dict[int, list[jax.Device]] = {}
    for d in mesh.devices.flat:
        by_process.setdefault(d.process_index, []).append(d)
    size = mesh.devices.size if -1 in shape else math.prod(shape)
    per, rem = divmod(size, len(by_process))
    local = min(len(v) for v in by_process.values())
    if rem or not 0 < per <= local:
        raise ValueError(
            f"sub-mesh {tuple(shape)} ({size} devices) must take the same number of devices, "
            f"at most {local}, from each of the {len(by_process)} processes"
        )
    return make_mesh(shape, devices=[d for p in sorted(by_process) for d in by_process[p][:per]])


def reshard_fn(src: Mesh, dst: Mesh, shardings):
    """A function moving a pytree from `src` into `shardings` on `dst`: the identity when the
    meshes are one, a jitted copy when they share their devices (the multi-process path: every
    process runs the same collective program), else `jax.device_put` (one process)."""
    if dst is src:
        return lambda tree: tree
    if set(dst.devices.flat) == set(src.devices.flat):
        return jax.jit(lambda tree: jax.tree.map(jnp.copy, tree), out_shardings=shardings)
    return lambda tree: jax.device_put(tree, shardings)


def batch_size_of(mesh: Mesh) -> int:
    """How many shards the batch dimension is split into."""
    return math.prod(mesh.shape[a] for a in BATCH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over data x fsdp, the rest replicated."""
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def kv_cache_specs() -> tuple[P, P, P]:
    """PartitionSpecs of the sampler's KV cache (models/transformer.KVCache): keys [B, N, K, S],
    values [B, N, S, K] split over the batch and the kv heads, the slot mask [B, S] over the batch.

    XLA derives exactly this layout from the parameter and batch shardings (tests/scale_test.py
    checks it), so the sampler needs no sharding constraint.
    """
    heads = dict(DEFAULT_RULES)["kv_heads"]
    return P(BATCH_AXES, heads), P(BATCH_AXES, heads), P(BATCH_AXES)


# --- Logical axis rules (parameters) ---

# Logical parameter axes (see models/params.param_axes) -> mesh axes. FSDP shards the embedding
# dimension; tensor parallelism splits heads and the MLP. Unlisted logical axes are replicated.
DEFAULT_RULES: tuple[tuple[str, str | None], ...] = (
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("vocab", None),
    ("head_dim", None),
    ("norm", None),
)


def logical_to_spec(logical: P, rules: Sequence[tuple[str, str | None]] = DEFAULT_RULES) -> P:
    """Maps a PartitionSpec of logical names to mesh axes; raises on a mesh-axis collision (two
    dimensions of one tensor on the same mesh axis) and on a logical name listed twice."""
    names = [name for name, _ in rules]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"logical axis rules list {dup} more than once")
    table = dict(rules)
    used: dict[str, str] = {}
    out = []
    for name in logical:
        if name is not None and name not in table:
            raise ValueError(f"logical axis {name!r} has no rule; rules cover {sorted(table)}")
        axis = table.get(name) if name is not None else None
        if axis is not None:
            if axis in used:
                raise ValueError(
                    f"logical axes {used[axis]!r} and {name!r} of {logical} both map to mesh "
                    f"axis {axis!r}"
                )
            used[axis] = name
        out.append(axis)
    return P(*out)


def param_shardings(mesh: Mesh, logical_axes, rules=DEFAULT_RULES):
    """NamedShardings for a pytree of logical PartitionSpecs (e.g. `params.param_axes(cfg)`)."""
    return jax.tree.map(
        lambda spec: NamedSharding(mesh, logical_to_spec(spec, rules)),
        logical_axes,
        is_leaf=lambda x: isinstance(x, P),
    )
