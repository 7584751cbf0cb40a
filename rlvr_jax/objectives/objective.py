"""The Objective: one frozen value that describes the loss of the train step.

The policy-gradient family and its built-in terms (PPO clip / KL-Cov / Clip-Cov, KL to the
reference, entropy, loss aggregation) come from `rl`; optional terms (`term.LossTerm`) add to it.
`compose` is the one place that lists them: a new loss term is its module plus one line here.
"""

from __future__ import annotations

import dataclasses

from rlvr_jax.objectives import delta as delta_lib
from rlvr_jax.objectives import distil as distil_lib
from rlvr_jax.objectives import rl_config
from rlvr_jax.objectives import term as term_lib


@dataclasses.dataclass(frozen=True)
class Objective:
    rl: rl_config.RLConfig
    terms: tuple[term_lib.LossTerm, ...] = ()

    def check(self, num_micro: int) -> None:
        for t in self.terms:
            t.check(num_micro)


def compose(
    rl: rl_config.RLConfig,
    *,
    delta: delta_lib.DeltaConfig | None = None,
    distil: distil_lib.DistilConfig | None = None,
) -> Objective:
    """The train step's objective; a disabled (or None) technique adds no term."""
    terms: list[term_lib.LossTerm] = []
    if delta is not None and delta.enabled:
        terms.append(delta_lib.DeltaTerm(delta))
    if distil is not None and distil.enabled:
        terms.append(distil_lib.DistilTerm(distil))
    return Objective(rl, tuple(terms))
