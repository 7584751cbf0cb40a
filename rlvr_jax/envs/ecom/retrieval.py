"""Lexical retrieval (BM25, the `bm25s` library) over product texts and policy sections.

One index per catalog, built on first use and kept in-process. Retrieval is deliberately
imperfect at high difficulty: `depth` (theta's top_k) cuts the candidate list before any filter,
and `corrupt` swaps neighbouring ranks with probability eps_rank (seeded), so an agent that trusts
the raw order or writes a vague query can miss the item it needs.
"""

from __future__ import annotations

import dataclasses
import logging
import re

import bm25s
import numpy as np

from rlvr_jax.envs.ecom import catalog as catalog_lib

_WORD = re.compile(r"[a-z0-9]+")
# bm25s sets its logger to DEBUG and logs every index build, which absl's handler prints in
# experiment scripts.
logging.getLogger("bm25s").setLevel(logging.WARNING)


def tokenize(text: str) -> list[str]:
    return _WORD.findall(text.lower())


@dataclasses.dataclass(frozen=True, eq=False)
class Index:
    """A BM25 index over a list of documents (indices into the owner's list)."""

    bm25: bm25s.BM25
    size: int

    def rank(self, query: str, depth: int) -> list[int]:
        """Documents with a positive score, best first (ties by index), at most `depth`."""
        tokens = tokenize(query)
        if not tokens or depth <= 0:
            return []
        scores = np.asarray(self.bm25.get_scores(tokens), dtype=np.float64)
        order = np.lexsort((np.arange(self.size), -scores))  # stable: score desc, then index
        return [int(i) for i in order[:depth] if scores[i] > 0]


def build_index(texts: list[str]) -> Index:
    bm25 = bm25s.BM25()
    bm25.index([tokenize(t) for t in texts], show_progress=False)
    return Index(bm25, len(texts))


def product_text(p: catalog_lib.Product) -> str:
    return f"{p.title} {p.group}"


_CACHE: dict[tuple[int, str], Index] = {}


def product_index(cat: catalog_lib.Catalog) -> Index:
    """The catalog's product index, built once per process."""
    key = (cat.seed, "products")
    if key not in _CACHE:
        _CACHE[key] = build_index([product_text(p) for p in cat.products])
    return _CACHE[key]


def policy_index(cat: catalog_lib.Catalog) -> Index:
    key = (cat.seed, "policy")
    if key not in _CACHE:
        _CACHE[key] = build_index([s.text for s in cat.policy])
    return _CACHE[key]


def corrupt(ranking: list[int], eps_rank: float, rng: np.random.Generator) -> list[int]:
    """One pass of neighbour swaps, each with probability eps_rank (theta's retrieval noise)."""
    out = list(ranking)
    if eps_rank <= 0:
        return out
    for i in range(len(out) - 1):
        if rng.random() < eps_rank:
            out[i], out[i + 1] = out[i + 1], out[i]
    return out
