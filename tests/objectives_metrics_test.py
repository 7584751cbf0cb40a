"""pass@k: the unbiased estimator against brute-force enumeration of k-subsets."""

import itertools
import math

import pytest

from rlvr_jax.objectives import metrics


def _brute_force(n, c, k):
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(samples, k))
    return sum(any(s) for s in subsets) / len(subsets)


def test_pass_at_k_matches_enumeration():
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert metrics.pass_at_k(n, c, k) == pytest.approx(_brute_force(n, c, k), abs=1e-12)


def test_pass_at_k_edges_and_large_n():
    assert metrics.pass_at_k(10, 0, 5) == 0.0 and metrics.pass_at_k(10, 6, 5) == 1.0
    assert metrics.pass_at_k(10, 3, 1) == pytest.approx(0.3)
    exact = 1 - math.comb(1900, 100) / math.comb(2000, 100)  # binomials of ~200 digits
    assert metrics.pass_at_k(2000, 100, 100) == pytest.approx(exact, rel=1e-9)
    with pytest.raises(ValueError):
        metrics.pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        metrics.pass_at_k(4, 1, 0)
