"""Rubric rewards (docs/pow3r.md): criteria graded by programmatic checks
or an LLM judge, the normalised rubric score with required vetoes, dependencies and pitfalls, and
POW3R's policy-aware training weights. Host side: no JAX. The programmatic checks live in
rubric_checks.py.

Judge criteria (check=None) are graded through the `Judge` protocol of judge.py (ModelJudge).
Evaluation always scores with the rubric's own (human) weights: `score(..)` / `rewards(.., None)`.
Training may score the same verdicts with POW3R weights: `rewards(verdicts, rubric, weights_BxC)`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Mapping, Sequence

import numpy as np

from rlvr_jax.rewards.judge import Judge
from rlvr_jax.rewards.rubric_checks import Check, run_check
from rlvr_jax.values import is_num

MAX_CHARS = 100_000  # a response longer than this scores 0 ("too_long") before any check runs
STATUSES = ("ok", "required_failed", "required_invalid", "all_invalid", "too_long")

# --- Criteria and rubrics ---


@dataclasses.dataclass(frozen=True, kw_only=True)
class Criterion:
    """One rubric line. A negative weight is a pitfall: `passed` then means "the pitfall occurred"
    and subtracts. `check=None` makes it a judge criterion, graded from `description`."""

    id: str
    description: str
    weight: float
    category: str = "general"
    required: bool = False  # a veto: the response scores 0 unless this passes
    depends_on: tuple[str, ...] = ()  # no credit unless every criterion listed here passed
    check: Check | None = None

    def __post_init__(self):
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(f"Criterion.id={self.id!r} must be a non-empty str")
        if not is_num(self.weight):
            raise ValueError(f"Criterion {self.id}: weight={self.weight!r} must be finite")
        if not isinstance(self.required, bool):
            raise ValueError(f"Criterion {self.id}: required={self.required!r} must be a bool")
        if self.required and self.weight < 0:
            raise ValueError(f"Criterion {self.id}: a pitfall (weight < 0) cannot be required")
        object.__setattr__(self, "depends_on", tuple(self.depends_on))


@dataclasses.dataclass(frozen=True)
class Rubric:
    """Criteria in display order; validated: non-empty, unique ids, known acyclic dependencies,
    positive total weight. `order` is a dependency-first evaluation order."""

    criteria: tuple[Criterion, ...]
    order: tuple[int, ...] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "criteria", tuple(self.criteria))
        ids = [c.id for c in self.criteria]
        if not ids:
            raise ValueError("empty rubric")
        if len(set(ids)) < len(ids):
            raise ValueError(f"duplicate criterion ids in {ids}")
        if sum(max(c.weight, 0.0) for c in self.criteria) <= 0:
            raise ValueError(f"rubric {ids}: no positive weight")
        index = {cid: i for i, cid in enumerate(ids)}
        for c in self.criteria:
            if missing := [d for d in c.depends_on if d not in index]:
                raise ValueError(f"Criterion {c.id}: depends_on unknown {missing}")
        order, done = [], set()
        while len(order) < len(ids):  # Kahn's algorithm, stable in display order
            ready = [i for i, c in enumerate(self.criteria) if i not in done and all(
                index[d] in done for d in c.depends_on)]  # fmt: skip
            if not ready:
                raise ValueError(f"rubric {ids}: depends_on has a cycle")
            order += ready
            done.update(ready)
        object.__setattr__(self, "order", tuple(order))

    @property
    def weights(self) -> tuple[float, ...]:
        return tuple(float(c.weight) for c in self.criteria)

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(c.category for c in self.criteria)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.criteria)


# --- Scoring ---


@dataclasses.dataclass(frozen=True)
class RubricVerdict:
    """reward in [0, 1]; passed[c] per criterion in rubric order: True / False, or None when
    unresolved (an invalid verdict, or a dependency unresolved); `invalid` counts invalid
    verdicts (judge or predicate errors); `strict`: every required criterion passed."""

    reward: float
    passed: tuple[bool | None, ...]
    invalid: int
    status: str
    strict: bool

    @property
    def correct(self) -> bool:
        """Full marks on the human weights: every positive criterion met, no pitfall."""
        return self.status == "ok" and self.reward >= 1.0 - 1e-9

    @property
    def verifier_error(self) -> bool:
        """No criterion could be resolved (every check or judge verdict invalid)."""
        return self.status == "all_invalid"


def _weights(rubric: Rubric, weights: Sequence[float] | None) -> np.ndarray:
    if weights is None:
        return np.asarray(rubric.weights, np.float64)
    w = np.asarray(weights, np.float64)
    if w.shape != (len(rubric.criteria),) or not np.all(np.isfinite(w)):
        raise ValueError(f"weights {w!r}: need {len(rubric.criteria)} finite values")
    return w


def reward_from_passed(
    passed: Sequence[bool | None], rubric: Rubric, weights: Sequence[float] | None = None
) -> tuple[float, str]:
    """(reward, status) of per-criterion verdicts: a failed (or unresolved) required criterion
    gives 0; else clip(sum_{passed} w_c / sum_{resolved, w_c > 0} w_c, 0, 1), so a triggered
    pitfall subtracts, and an unresolved criterion is left out of both sums."""
    w = _weights(rubric, weights)
    if len(passed) != len(w):
        raise ValueError(f"{len(passed)} verdicts for {len(w)} criteria")
    for c, crit in enumerate(rubric.criteria):
        if crit.required and passed[c] is not True:
            return 0.0, "required_failed" if passed[c] is False else "required_invalid"
    den = sum(w[c] for c in range(len(w)) if w[c] > 0 and passed[c] is not None)
    if den <= 0:
        return 0.0, "all_invalid"
    num = sum(w[c] for c in range(len(w)) if passed[c] is True)
    return float(min(max(num / den, 0.0), 1.0)), "ok"


def score(
    response: str,
    rubric: Rubric,
    judge: Judge | None = None,
    weights: Sequence[float] | None = None,
    *,
    prompt: str = "",
) -> RubricVerdict:
    """Grade `response`, dependencies first: a child of a failed criterion is not evaluated and
    gets no credit (passed False); a child of an unresolved one is unresolved (None). `weights`
    (e.g. POW3R's) replace the human weights in the reward only; None gives the evaluation reward.
    """
    C = len(rubric.criteria)
    if len(response) > MAX_CHARS:
        return RubricVerdict(0.0, (False,) * C, 0, "too_long", False)
    index = {cid: i for i, cid in enumerate(rubric.ids)}
    passed: list[bool | None] = [None] * C
    invalid = 0
    for c in rubric.order:
        crit = rubric.criteria[c]
        parents = [passed[index[d]] for d in crit.depends_on]
        if False in parents or None in parents:
            passed[c] = False if False in parents else None
        elif crit.check is None:
            if judge is None:
                raise ValueError(f"criterion {crit.id} needs a judge, and none was given")
            passed[c] = judge.judge(prompt, response, crit).passed
            invalid += passed[c] is None
        else:
            try:
                passed[c] = run_check(crit.check, response)
            except Exception:  # noqa: BLE001 - a predicate error is invalid, not a 0 or 1
                passed[c] = None
                invalid += 1
    reward, status = reward_from_passed(passed, rubric, weights)
    strict = all(passed[c] is True for c in range(C) if rubric.criteria[c].required)
    return RubricVerdict(reward, tuple(passed), invalid, status, strict)


def pass_table(verdicts: Sequence[RubricVerdict]) -> np.ndarray:
    """pass_BxC float64: 1 passed, 0 failed, nan unresolved (POW3R's input)."""
    return np.array([[np.nan if p is None else float(p) for p in v.passed] for v in verdicts])


def rewards(
    verdicts: Sequence[RubricVerdict], rubric: Rubric, weights_BxC: np.ndarray | None = None
) -> np.ndarray:
    """rewards_B float32 of verdicts on one rubric: with row-wise training weights (POW3R), or
    with the human weights (None: the evaluation reward, equal to each verdict's own reward)."""
    out = []
    for b, v in enumerate(verdicts):
        if v.status == "too_long":
            out.append(0.0)
        else:
            row = None if weights_BxC is None else weights_BxC[b]
            out.append(reward_from_passed(v.passed, rubric, row)[0])
    return np.asarray(out, np.float32)


# --- POW3R ---


@dataclasses.dataclass(frozen=True, kw_only=True)
class Pow3rConfig:
    """POW3R knobs (docs/pow3r.md; a formalization: the paper's exact formula is unpublished)."""

    alpha: float = 0.5  # Beta/Laplace pseudo-count of the pass-rate smoothing
    m_min: float = 0.2  # floor of the contrast multiplier: every criterion keeps some weight
    m_max: float = 3.0  # cap of the contrast multiplier
    ema: float = 0.0  # beta of the contrast EMA across steps, per group key; 0: none

    def __post_init__(self):
        def fail(name: str, why: str):
            raise ValueError(f"Pow3rConfig.{name}={getattr(self, name)!r} {why}")

        if not is_num(self.alpha) or self.alpha < 0:
            fail("alpha", "must be a finite number >= 0")
        if not is_num(self.m_min) or self.m_min <= 0:
            fail("m_min", "must be a finite number > 0")
        if not is_num(self.m_max) or self.m_max < self.m_min:
            fail("m_max", f"must be a finite number >= m_min={self.m_min!r}")
        if not is_num(self.ema) or not 0 <= self.ema < 1:
            fail("ema", "must be a number in [0, 1)")


@dataclasses.dataclass(frozen=True)
class Pow3rState:
    """The EMA memory: the last contrast s_C (nan: never seen) of each group key."""

    contrast: Mapping[Hashable, np.ndarray] = dataclasses.field(default_factory=dict)


def _multipliers(s_C: np.ndarray, categories: Sequence[str], cfg: Pow3rConfig) -> np.ndarray:
    """m_c = clip(s_c / mean_{c' in k(c)} s_c', m_min, m_max); 1 where s_c is unknown (no valid
    verdict) or the whole category has zero contrast (its weights are then kept as they are)."""
    m_C = np.ones_like(s_C)
    cats = np.asarray(categories)
    for k in dict.fromkeys(categories):
        known = (cats == k) & np.isfinite(s_C)
        mean = s_C[known].mean() if known.any() else 0.0
        if mean > 0:
            m_C[known] = np.clip(s_C[known] / mean, cfg.m_min, cfg.m_max)
    return m_C


def _rescale(w_C: np.ndarray, m_C: np.ndarray, categories: Sequence[str]) -> np.ndarray:
    """w~_c = w_c m_c sum_S |w| / sum_S |w| m over S = (category, sign) of c: each category keeps
    its total positive weight and its total pitfall weight."""
    out = w_C * m_C
    cats, sign = np.asarray(categories), np.sign(w_C)
    for k in dict.fromkeys(categories):
        for s in (-1.0, 1.0):
            S = (cats == k) & (sign == s)
            total_m = np.sum(np.abs(w_C[S]) * m_C[S])
            if total_m > 0:
                out[S] *= np.sum(np.abs(w_C[S])) / total_m
    return out


def pow3r_weights(
    pass_BxC: np.ndarray,
    group_ids_B: Sequence[Hashable] | None,
    base_weights_C: Sequence[float],
    categories_C: Sequence[str],
    cfg: Pow3rConfig,
    *,
    state: Pow3rState | None = None,
    ids: Sequence[str] | None = None,
) -> tuple[np.ndarray, Pow3rState, dict[str, float]]:
    """POW3R training weights (Tyagi et al. 2026, arXiv 2605.20164; docs/pow3r.md: a formalization).

    Per group g (rows sharing a group id; None: one group) and criterion c, over the valid
    (non-nan) verdicts v in [0, 1] of its n_c rollouts:
      p_c = (sum v + alpha) / (n_c + 2 alpha);  s_c = sqrt(p_c (1 - p_c))
      s_c <- ema s_c^prev + (1 - ema) s_c      (if cfg.ema > 0 and the group key was seen)
      m_c = clip(s_c / mean_{c' in k(c)} s_c', m_min, m_max)
      w~_c = w_c m_c sum_S |w| / sum_S |w| m   (S: c's category and sign; totals kept)
    Saturated (all pass) and unreachable (none pass) criteria have the lowest contrast. Returns
    (weights_BxC: each row its group's w~, the new state, metrics: rubric/pass_rate/<id>,
    rubric/weight/<id> (means over rows), rubric/frac_saturated and rubric/frac_unreachable over
    (group, criterion) pairs). Training rewards use w~; evaluation keeps the human w_c.
    """
    v_BxC = np.asarray(pass_BxC, np.float64)
    w_C = np.asarray(base_weights_C, np.float64)
    B, C = v_BxC.shape
    if w_C.shape != (C,) or len(categories_C) != C or not np.all(np.isfinite(w_C)):
        raise ValueError(f"need {C} finite base weights and {C} categories")
    if np.any((v_BxC < 0) | (v_BxC > 1)):
        raise ValueError("verdicts must lie in [0, 1] (nan: unresolved)")
    groups = [0] * B if group_ids_B is None else list(group_ids_B)
    if len(groups) != B:
        raise ValueError(f"{len(groups)} group ids for {B} rows")
    prev = {} if state is None else dict(state.contrast)
    new, out_BxC, flat = dict(prev), np.zeros((B, C)), []
    for key in dict.fromkeys(groups):
        rows = np.array([g == key for g in groups])
        valid_GxC = np.isfinite(v_BxC[rows])
        n_C, hits_C = valid_GxC.sum(0), np.where(valid_GxC, v_BxC[rows], 0.0).sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            p_C = (hits_C + cfg.alpha) / (n_C + 2 * cfg.alpha)  # nan iff n_c = 0 and alpha = 0
        s_C = np.where(n_C > 0, np.sqrt(p_C * (1 - p_C)), np.nan)
        if cfg.ema > 0 and key in prev:  # mix where both are known, else keep the known one
            old_C = prev[key]
            mixed_C = cfg.ema * old_C + (1 - cfg.ema) * s_C
            s_C = np.where(np.isnan(old_C), s_C, np.where(np.isnan(s_C), old_C, mixed_C))
        new[key] = s_C
        out_BxC[rows] = _rescale(w_C, _multipliers(s_C, categories_C, cfg), categories_C)
        flat.append(np.where(n_C > 0, hits_C / np.maximum(n_C, 1), np.nan))
    ids = [f"c{c}" for c in range(C)] if ids is None else list(ids)
    rate_NxC, valid_BxC = np.array(flat), np.isfinite(v_BxC)
    n_C = valid_BxC.sum(0)
    pass_rate_C = np.where(valid_BxC, v_BxC, 0.0).sum(0) / np.maximum(n_C, 1)
    pass_rate_C = np.where(n_C > 0, pass_rate_C, np.nan)
    metrics = {f"rubric/pass_rate/{i}": float(r) for i, r in zip(ids, pass_rate_C, strict=True)}
    metrics |= {f"rubric/weight/{i}": float(w) for i, w in zip(ids, out_BxC.mean(0), strict=True)}
    metrics["rubric/frac_saturated"] = float(np.mean(rate_NxC == 1.0))
    metrics["rubric/frac_unreachable"] = float(np.mean(rate_NxC == 0.0))
    return out_BxC, Pow3rState(new), metrics
