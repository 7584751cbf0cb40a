"""The CPU's measured float32 matmul peak, shared by the benchmarks' "% of limit" columns."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import torch


def matmul_peak_flops() -> float:
    """The CPU's measured float32 matmul peak: the best of JAX and torch on 2048^3 products."""
    n = 2048
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = 0.0
    for _ in range(5):
        t = time.perf_counter()
        f(a).block_until_ready()
        best = max(best, 2 * n**3 / (time.perf_counter() - t))
    b = torch.ones(n, n)
    b @ b
    for _ in range(5):
        t = time.perf_counter()
        b @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t))
    return best
