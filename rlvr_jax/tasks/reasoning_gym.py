"""The reasoning-gym task: procedural generators from the `reasoning-gym` package (pinned 0.1.25,
`pip install -e ".[rg]"`), mixed by weight, each scored by the generator's own `score_answer`.

`data.rg_tasks` lists `(name, weight, {config})` entries; `data.train_size` / `data.eval_size`
examples are drawn for the two splits from different seeds. The held-out split holds distinct
questions and the training split never repeats one of them (generators draw `Random(seed + idx)`,
so two seeds overlap; small spaces, like 1-digit sums, would otherwise leak). A completion's
answer is the last `<answer>...</answer>`; scoring runs in `VerifierPool` workers under a hard
wall-clock limit, where a timeout or an exception is its own status. docs/reasoning_gym.md.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from rlvr_jax.data import types as data_types
from rlvr_jax.errors import ConfigError
from rlvr_jax.rewards import pool as pool_lib
from rlvr_jax.tasks import base
from rlvr_jax.tasks import config as task_config

SOURCES = ("reasoning_gym",)
STATUSES = ("correct", "partial", "wrong", "no_answer", "timeout", "verifier_error")
INSTRUCTION = "Put the final answer in <answer></answer>."
_SPLITS = {"train": 0, "test": 1}
_RESERVED = ("seed", "size")  # set per split here, not by the config
_MAX_DRAWS = 50  # generator draws per wanted example before a split gives up


@dataclasses.dataclass(frozen=True)
class Spec:
    """One `data.rg_tasks` entry: a generator, its mixing weight and its JSON config."""

    name: str
    weight: float
    config: dict[str, Any]

    @property
    def key(self) -> str:
        """The config as canonical JSON: the workers' cache key."""
        return json.dumps(self.config, sort_keys=True)


@dataclasses.dataclass(frozen=True)
class RGVerdict:
    """One scored completion. `reward` is reasoning-gym's score in [0, 1] (partial credit for
    some generators); `correct` only at 1.0."""

    reward: float
    correct: bool
    extracted: str | None
    status: str
    task: str = ""
    detail: str = ""

    @property
    def verifier_error(self) -> bool:
        """The scorer failed (an exception, a killed worker): not a 0."""
        return self.status in ("verifier_error", "timeout")


def _package():
    try:
        import reasoning_gym  # optional dependency
    except ImportError:
        raise ConfigError(
            'data.source="reasoning_gym" needs the reasoning-gym package: pip install -e ".[rg]"'
        ) from None
    if not hasattr(reasoning_gym, "create_dataset"):
        raise ConfigError(
            f"`import reasoning_gym` found {reasoning_gym.__file__}, not the package: a file of "
            "that name shadows it on sys.path (a script named reasoning_gym.py puts its folder "
            "there)"
        )
    return reasoning_gym


def parse_specs(rg_tasks: Sequence[Any]) -> list[Spec]:
    """`data.rg_tasks` as Specs (errors name `data.rg_tasks[i]`); configs checked by building
    the generator's own config dataclass."""
    rg = _package()
    if not rg_tasks:
        raise ConfigError(
            "data.rg_tasks is empty: give ((name, weight, {config}), ...), "
            "e.g. (('chain_sum', 1.0, {}),)"
        )
    specs = []
    for i, entry in enumerate(rg_tasks):
        key = f"data.rg_tasks[{i}]"
        if not isinstance(entry, Sequence) or isinstance(entry, str) or len(entry) != 3:
            raise ConfigError(f"{key}={entry!r}: expected (name, weight, {{config}})")
        name, weight, config = entry
        if name not in rg.factory.DATASETS:
            raise ConfigError(f"{key}: unknown reasoning-gym dataset {name!r}")
        if (
            isinstance(weight, bool)
            or not isinstance(weight, int | float)
            or not math.isfinite(weight)
            or weight <= 0
        ):
            raise ConfigError(f"{key}: weight must be a positive number, got {weight!r}")
        if not isinstance(config, Mapping):
            raise ConfigError(f"{key}: config must be a dict, got {config!r}")
        if reserved := sorted(set(config) & set(_RESERVED)):
            raise ConfigError(f"{key}: {reserved} are set per split from the run's seed")
        try:
            config = json.loads(json.dumps(dict(config)))  # tuples -> lists, as in config.json
            config_cls = rg.factory.DATASETS[name][1]
            built = config_cls(**config)
            if hasattr(built, "validate"):
                built.validate()
        except (TypeError, ValueError, AssertionError) as e:
            raise ConfigError(f"{key}: bad {name} config {config!r}: {e}") from None
        specs.append(Spec(name, float(weight), config))
    return specs


def validate(cfg: task_config.TaskConfig, processes: int) -> None:
    del processes
    parse_specs(cfg.data.rg_tasks)
    for k in ("train_size", "eval_size"):
        if getattr(cfg.data, k) < 1:
            raise ConfigError(f"data.{k}={getattr(cfg.data, k)} must be >= 1")


# --- Splits ---


def _draws(spec: Spec, seed: int, split: str, index: int, n: int) -> Iterator[dict[str, Any]]:
    """Up to `n` items of one generator, its seed derived from (run seed, split, entry)."""
    rg = _package()
    ds_seed = int(np.random.SeedSequence([seed, _SPLITS[split], index]).generate_state(1)[0])
    ds = rg.create_dataset(spec.name, seed=ds_seed, size=n, **spec.config)
    for idx in range(n):
        yield ds[idx]


def draw_split(
    specs: Sequence[Spec],
    split: str,
    size: int,
    seed: int,
    *,
    exclude: frozenset[str] = frozenset(),
    distinct: bool = False,
) -> list[data_types.Example]:
    """`size` examples mixed by weight, none of whose questions is in `exclude` (and no two
    alike when `distinct`); deterministic in (specs, split, size, seed, exclude)."""
    weights = np.asarray([s.weight for s in specs])
    rng = np.random.default_rng([seed, _SPLITS[split]])
    picks = rng.choice(len(specs), size=size, p=weights / weights.sum())
    counts = collections.Counter(picks.tolist())
    items: dict[int, list[dict[str, Any]]] = {}
    for i, spec in enumerate(specs):
        want, seen, got = counts[i], set(exclude), []
        budget = _MAX_DRAWS * want + 100
        for item in _draws(spec, seed, split, i, budget) if want else ():
            if len(got) == want:
                break
            if item["question"] in seen:
                continue
            if distinct:
                seen.add(item["question"])
            got.append(item)
        if len(got) < want:
            raise ConfigError(
                f"data.rg_tasks[{i}] ({spec.name}): only {len(got)} of {want} {split} questions "
                f"in {budget} draws that are {'distinct and ' if distinct else ''}not in the "
                "other split; lower data.eval_size or widen the generator's config"
            )
        items[i] = got
    taken = collections.Counter()
    out = []
    for j, i in enumerate(picks.tolist()):
        item = items[i][taken[i]]
        taken[i] += 1
        out.append(to_example(item, specs[i], f"rg/{split}/{seed}/{j}"))
    return out


def to_example(item: Mapping[str, Any], spec: Spec, uid: str) -> data_types.Example:
    """A reasoning-gym item as an Example; `meta` carries what the scorer needs to rebuild the
    generator (its name and config) and the JSON item itself."""
    try:
        entry = json.loads(json.dumps(item))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"reasoning-gym {spec.name}: an item is not JSON: {e}") from None
    answer = str(entry["answer"])
    return data_types.Example(
        uid=uid,
        prompt=f"{entry['question']}\n{INSTRUCTION}",
        answer=answer,
        solution=f"<answer>{answer}</answer>",
        source="reasoning_gym",
        meta={"rg_task": spec.name, "rg_config": spec.config, "entry": entry},
    )


def load_data(
    cfg: task_config.TaskConfig,
) -> tuple[list[data_types.Example], list[data_types.Example]]:
    """(train, held-out): the held-out questions are distinct, and none is trained on."""
    specs = parse_specs(cfg.data.rg_tasks)
    test = draw_split(specs, "test", cfg.data.eval_size, cfg.seed, distinct=True)
    held_out = frozenset(ex.meta["entry"]["question"] for ex in test)
    train = draw_split(specs, "train", cfg.data.train_size, cfg.seed, exclude=held_out)
    return train, test


# --- Scoring (in the pool's workers) ---


@functools.lru_cache(maxsize=64)
def _dataset(name: str, config_key: str):
    """The generator that scores `name` items, built once per worker per (name, config)."""
    return _package().create_dataset(name, **json.loads(config_key))


def score_rg_item(item: tuple[str, str, str, dict[str, Any]]) -> RGVerdict:
    """(completion, dataset name, config key, entry) -> verdict: the last <answer> scored by
    the generator's `score_answer`. Picklable and module-level, for the pool."""
    text, name, config_key, entry = item
    from reasoning_gym.utils import extract_answer  # optional dependency

    answer = extract_answer(text, tag_name="answer")
    if answer is None:
        return RGVerdict(0.0, False, None, "no_answer", name)
    raw = _dataset(name, config_key).score_answer(answer, entry)
    try:
        score = float(raw)
    except (TypeError, ValueError):
        score = math.nan
    if not 0.0 <= score <= 1.0:  # NaN too
        return RGVerdict(0.0, False, answer, "verifier_error", name, f"score {raw!r}")
    status = "correct" if score == 1.0 else "partial" if score > 0.0 else "wrong"
    return RGVerdict(score, score == 1.0, answer, status, name)


def timeout_verdict(item: tuple) -> RGVerdict:
    """The pool's `on_timeout`: the worker was killed at the hard wall-clock limit."""
    return RGVerdict(0.0, False, None, "timeout", item[1], "hard timeout: worker killed")


def error_verdict(item: tuple, message: str) -> RGVerdict:
    """The pool's `on_error`: score_answer raised or the worker died."""
    return RGVerdict(0.0, False, None, "verifier_error", item[1], message[-300:])


def make_score_fn(pool: pool_lib.VerifierPool) -> base.ScoreFn:
    """texts, examples -> RGVerdicts through the pool's workers."""

    def score(texts: list[str], examples: list[data_types.Example]) -> list[RGVerdict]:
        items = [
            (t, ex.meta["rg_task"], json.dumps(ex.meta["rg_config"], sort_keys=True),
             ex.meta["entry"])
            for t, ex in zip(texts, examples, strict=True)
        ]  # fmt: skip
        return pool.map(score_rg_item, items, on_timeout=timeout_verdict, on_error=error_verdict)

    return score


def rg_metrics(verdicts: Sequence[RGVerdict]) -> dict[str, float]:
    """Shares of each status, and each generator's accuracy (this process's rows)."""
    if not verdicts:
        return {}
    counts = collections.Counter(v.status for v in verdicts)
    m = {f"rg/{s}_frac": counts[s] / len(verdicts) for s in STATUSES}
    by_task = collections.defaultdict(list)
    for v in verdicts:
        by_task[v.task].append(v.correct)
    m.update({f"rg/{t}/acc": float(np.mean(c)) for t, c in sorted(by_task.items())})
    return m


class ReasoningGymTask(base.Task):
    def __init__(self, cfg: task_config.TaskConfig, ctx: base.TaskContext | None = None):
        del ctx
        self.train, self.test = load_data(cfg)
        self._verifier = cfg.verifier

    def scorer(self):
        return base.pooled(self._verifier, ("reasoning_gym", __name__), make_score_fn)

    def metrics(self, verdicts: Sequence[Any]) -> dict[str, float]:
        return rg_metrics(verdicts)
