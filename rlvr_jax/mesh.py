"""The device mesh: axes `data`, `fsdp`, `tensor`, and the shardings of batches and replicated
values.

Issue "scale-out" extends this with logical-axis rules for parameters; the sampler already shards
its batch here. On a CPU host, one JAX device per core (`cpu_devices_flag`) lets a data-parallel
batch use every core: XLA runs each device's program on its own thread.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import jax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")  # the batch dimension is split over both


def cpu_devices_flag(n: int | None = None) -> str:
    """XLA_FLAGS entry giving the CPU backend `n` devices (default: one per core).

    Must be in the environment before jax is imported; experiment mains call
    `os.environ["XLA_FLAGS"] = mesh.cpu_devices_flag()` at the top.
    """
    return f"--xla_force_host_platform_device_count={n or os.cpu_count() or 1}"


def make_mesh(
    shape: Sequence[int] = (-1, 1, 1), devices: Sequence[jax.Device] | None = None
) -> Mesh:
    """A (data, fsdp, tensor) mesh; one entry of `shape` may be -1 (all remaining devices)."""
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


def batch_size_of(mesh: Mesh) -> int:
    """How many shards the batch dimension is split into."""
    return math.prod(mesh.shape[a] for a in BATCH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over data x fsdp, the rest replicated."""
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())
