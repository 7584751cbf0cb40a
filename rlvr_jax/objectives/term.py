"""The interface of an optional loss term inside the jitted train step.

A term may fold something into the batch once per step (`prepass`, before micro-batching), change
the per-token advantage from the loss's own forward pass (`advantages`), and add to or replace the
policy-gradient loss (`loss`). Terms are frozen dataclasses (static arguments of the jitted step);
each lives in its technique's module, and `objective.compose` lists them.
"""

# pylint: disable=invalid-name
from __future__ import annotations

import dataclasses
from typing import Any

import jax


@dataclasses.dataclass(frozen=True)
class LossTerm:
    """No-op defaults; a term overrides what it needs."""

    def check(self, num_micro: int) -> None:
        """Raises ValueError when the term cannot run with `num_micro` micro-batches."""
        del num_micro

    def prepass(self, params, batch, *, num_micro: int, model_cfg, temperature: float):
        """(batch, stats) once per step over the whole batch, before micro-batching."""
        del params, num_micro, model_cfg, temperature
        return batch, {}

    def advantages(
        self, fwd, mb, adv_BxTc: jax.Array, *, num_micro: int
    ) -> tuple[jax.Array, dict[str, Any]]:
        """The micro-batch's per-token advantage, from its forward pass `fwd`."""
        del fwd, mb, num_micro
        return adv_BxTc, {}

    def loss(self, fwd, mb, loss: jax.Array, *, G: int) -> tuple[jax.Array, dict[str, Any]]:
        """The micro-batch's loss given the policy-gradient (and KL, entropy) loss `loss`."""
        del fwd, mb, G
        return loss, {}
