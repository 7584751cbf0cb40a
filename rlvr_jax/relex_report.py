"""RELEX reporting: explained-variance summaries, checkpoint sizes and the peak memory of an
extrapolation (what experiments/relex.py prints next to its accuracy table)."""

from __future__ import annotations

import dataclasses
import math
import threading
import tracemalloc
from collections.abc import Callable, Sequence
from typing import TypeVar

import jax
import numpy as np
from etils import epath

from rlvr_jax import relex

Out = TypeVar("Out")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Footprint:
    """Sizes of one checkpoint's params. The fit's window buffer is `largest_tensor_size × T`
    elements of `store_dtype`."""

    params_bytes: int
    largest_tensor_bytes: int
    largest_tensor_size: int  # elements
    num_tensors: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class PeakMemory:
    """Memory during one call. RSS counts every allocator (numpy, XLA, tensorstore) but is sampled
    (short spikes can be missed) and counts freed heap the allocator keeps; memory freed before the
    call and reused inside it is in `rss_start_bytes`, so measure in a fresh process. tracemalloc
    is exact for Python and numpy allocations but misses tensorstore's read buffers and XLA's."""

    rss_start_bytes: int
    rss_peak_bytes: int
    traced_peak_bytes: int  # above the traced memory at the start


def summarise(fits: Sequence[relex.TensorFit]) -> dict[str, float]:
    """Explained variance over the moved tensors (min/median/mean/max and weighted by tensor
    size: the share of all moved weights' delta energy explained) and the leading R²."""
    moved = [f for f in fits if f.moved]
    ev = np.array([f.explained_variance for f in moved] or [np.nan], np.float64)
    r2 = np.array([f.r2[0] for f in moved] or [np.nan], np.float64)
    size = np.array([f.size for f in moved] or [1], np.float64)
    return {
        "tensors": len(fits), "moved": len(moved), "ev_min": float(ev.min()),
        "ev_median": float(np.median(ev)), "ev_mean": float(ev.mean()),
        "ev_max": float(ev.max()), "ev_weighted": float(ev @ size / size.sum()),
        "r2_min": float(r2.min()), "r2_median": float(np.median(r2)),
    }  # fmt: skip


def format_summary(s: dict[str, float]) -> str:
    """`summarise`'s numbers as one printable line."""
    return (
        f"{s['moved']}/{s['tensors']} tensors moved; explained variance min {s['ev_min']:.4f} "
        f"median {s['ev_median']:.4f} mean {s['ev_mean']:.4f} max {s['ev_max']:.4f} "
        f"size-weighted {s['ev_weighted']:.4f}; R² min {s['r2_min']:.4f} "
        f"median {s['r2_median']:.4f}"
    )


def checkpoint_footprint(traj_dir: str, step: int = 0) -> Footprint:
    """Sizes of the params stored at `<traj_dir>/<step>`, from the checkpoint metadata."""
    return footprint(relex.metadata(epath.Path(traj_dir) / str(step)).tree)


def footprint(tree) -> Footprint:
    """Sizes of a pytree of arrays, ShapeDtypeStructs or orbax ArrayMetadata."""
    leaves = jax.tree.leaves(tree)
    sizes = [(math.prod(x.shape), math.prod(x.shape) * np.dtype(x.dtype).itemsize) for x in leaves]
    largest = max(sizes, key=lambda x: x[1])
    return Footprint(
        params_bytes=sum(b for _, b in sizes),
        largest_tensor_bytes=largest[1],
        largest_tensor_size=largest[0],
        num_tensors=len(sizes),
    )


def measure_peak_memory(fn: Callable[[], Out], interval_s: float = 0.001) -> tuple[Out, PeakMemory]:
    """Runs fn() and returns its result and its memory use (see PeakMemory)."""
    import psutil  # a test extra (setup.py), needed only here

    process = psutil.Process()
    start_rss = peak_rss = process.memory_info().rss
    done = threading.Event()

    def sample():
        nonlocal peak_rss
        while not done.wait(interval_s):
            peak_rss = max(peak_rss, process.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    start_traced = tracemalloc.get_traced_memory()[0]
    sampler.start()
    try:
        out = fn()
    finally:
        done.set()
        sampler.join()
        traced_peak = tracemalloc.get_traced_memory()[1]
        if not was_tracing:
            tracemalloc.stop()
    peak_rss = max(peak_rss, process.memory_info().rss)
    return out, PeakMemory(
        rss_start_bytes=start_rss,
        rss_peak_bytes=peak_rss,
        traced_peak_bytes=traced_peak - start_traced,
    )
