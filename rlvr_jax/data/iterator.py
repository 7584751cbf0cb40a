"""The prompt stream: seeded epoch-wise shuffles, per-process slices of each global batch, resume.

The stream is the concatenation of one permutation per epoch (epoch e shuffled by
numpy.random.default_rng([seed, e])), cut into global batches of `batch_size`. A batch that crosses
an epoch boundary takes the end of one permutation and the start of the next, so nothing is
dropped. Process p reads the p-th contiguous slice of every global batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from rlvr_jax.data import types


def _fingerprint(examples: Sequence[types.Example]) -> str:
    """A short hash of the uids and prompts: a cursor is never applied to other data."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(ex.uid.encode("utf-8") + b"\0" + ex.prompt.encode("utf-8") + b"\0")
    return h.hexdigest()[:16]


class PromptIterator:
    """Deterministic batches of Examples for one process; `state()` / `restore()` resume exactly.

    The cursor is a position in the global stream (epoch, offset in that epoch's permutation), so
    a run may resume with another process_count or batch_size and the stream continues unchanged.
    """

    def __init__(
        self,
        examples: Sequence[types.Example],
        *,
        batch_size: int,
        seed: int,
        process_index: int = 0,
        process_count: int = 1,
    ):
        if not examples:
            raise ValueError("PromptIterator needs at least one example")
        if batch_size < 1 or batch_size % process_count:
            raise ValueError(
                f"batch_size ({batch_size}) must be positive and divisible by process_count "
                f"({process_count})"
            )
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} not in [0, {process_count})")
        self._examples = list(examples)
        self._batch_size = batch_size  # global: summed over processes
        self._seed = seed
        self._local = batch_size // process_count
        self._offset = process_index * self._local
        self._fingerprint = _fingerprint(self._examples)
        self._epoch, self._position = 0, 0
        self._perm_epoch, self._perm = -1, np.empty(0, np.int64)  # cache of one permutation

    @property
    def local_batch_size(self) -> int:
        """Examples per `next()` on this process: batch_size // process_count."""
        return self._local

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            rng = np.random.default_rng([self._seed, epoch])
            self._perm, self._perm_epoch = rng.permutation(len(self._examples)), epoch
        return self._perm

    def next(self) -> list[types.Example]:
        """This process's slice of the next global batch; advances the cursor by the whole batch."""
        n = len(self._examples)
        indices = []
        while len(indices) < self._batch_size:
            take = min(self._batch_size - len(indices), n - self._position)
            perm = self._permutation(self._epoch)
            indices.extend(perm[self._position : self._position + take].tolist())
            self._position += take
            if self._position == n:
                self._epoch, self._position = self._epoch + 1, 0
        return [self._examples[i] for i in indices[self._offset : self._offset + self._local]]

    def __next__(self) -> list[types.Example]:
        return self.next()

    def __iter__(self) -> PromptIterator:
        return self

    def state(self) -> dict[str, Any]:
        """The JSON-serialisable cursor; the other keys guard `restore` against different data."""
        return {
            "epoch": self._epoch,
            "position": self._position,
            "seed": self._seed,
            "num_examples": len(self._examples),
            "fingerprint": self._fingerprint,
        }

    def mismatch(self, state: dict[str, Any]) -> str | None:
        """Why `state` belongs to another stream (seed, size or content), or None."""
        for key, want in (
            ("seed", self._seed),
            ("num_examples", len(self._examples)),
            ("fingerprint", self._fingerprint),
        ):
            if state.get(key) != want:
                return f"state {key}={state.get(key)!r} does not match this iterator's ({want!r})"
        return None

    def restore(self, state: dict[str, Any]) -> None:
        """Moves the cursor to `state` (from `state()`); raises if it belongs to another stream."""
        if (why := self.mismatch(state)) is not None:
            raise ValueError(why)
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position < len(self._examples):
            raise ValueError(f"bad cursor: epoch {epoch}, position {position}")
        self._epoch, self._position = epoch, position
