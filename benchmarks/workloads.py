"""The RLVR rollout workload the benchmarks share (no torch, no JAX): 64 prompts x G=8 rows, a
512-token budget, long-tailed per-row completion lengths."""

from __future__ import annotations

import numpy as np

P, G, BUDGET, PROMPT_LEN = 64, 8, 512, 32


def row_lengths(seed: int = 0) -> np.ndarray:
    """R = P*G completion lengths: lognormal with mean 128 (25% of the budget), clipped."""
    sigma = 1.0
    mu = np.log(BUDGET / 4) - sigma**2 / 2
    x = np.random.RandomState(seed).lognormal(mu, sigma, P * G)
    return np.clip(np.round(x), 1, BUDGET).astype(np.int32)
