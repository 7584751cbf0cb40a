"""Task kinds beyond math: what the loop loads and how it scores, by `c.data.source`.

- math (synthetic, gsm8k, math, answer, parquet): setup.load_data, the math verifier in worker
  processes.
- code: `c.code.format` synthetic (data/code_synthetic.py), embedded (the shipped task set) or an
  MBPP-, HumanEval- or APPS-shaped jsonl (data.train_files / data.eval_files); every completion
  runs against its task's tests in the sandbox (rewards/code.py), `c.code.max_workers` at a time.
- rubric: the embedded rubric family (data/rubric_tasks.py), graded per criterion on the human
  weights; POW3R (`c.rubric.pow3r`) reweights the training rewards from each group's verdicts,
  evaluation always keeps the human weights (docs/pow3r.md).

Nothing here is jitted except the judge's sampler call; the loop reads the ConfigDict once
through `load` and `scorer`.
"""

# pylint: disable=invalid-name
from __future__ import annotations

import collections
import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from rlvr_jax import sampling
from rlvr_jax.data import code_synthetic, code_tasks, code_tasks_embedded, rubric_tasks
from rlvr_jax.data import types as data_types
from rlvr_jax.models import config as config_lib
from rlvr_jax.models import params as params_lib
from rlvr_jax.models import tokenizer as tokenizer_lib
from rlvr_jax.rewards import code as code_lib
from rlvr_jax.rewards import judge as judge_lib
from rlvr_jax.rewards import pool as pool_lib
from rlvr_jax.rewards import rubric as rubric_lib
from rlvr_jax.rewards import sandbox as sandbox_lib
from rlvr_jax.train import distributed
from rlvr_jax.train import research as research_lib
from rlvr_jax.train import rollout as rollout_lib
from rlvr_jax.train import setup as setup_lib

CODE_FORMATS = ("synthetic", "embedded", "mbpp", "humaneval", "apps")
JUDGES = ("", "policy")  # or a local HF folder
_CODE_LOADERS = {
    "mbpp": code_tasks.load_mbpp,
    "humaneval": code_tasks.load_humaneval,
    "apps": code_tasks.load_apps,
}


@dataclasses.dataclass(frozen=True)
class TaskData:
    """Train and held-out examples; for code, each example's tests by uid."""

    train: list[data_types.Example]
    test: list[data_types.Example]
    code_tasks: Mapping[str, code_tasks.CodeTask] = dataclasses.field(default_factory=dict)


def kind(c: ml_collections.ConfigDict) -> str:
    """'code', 'rubric' or 'math'."""
    return c.data.source if c.data.source in ("code", "rubric") else "math"


def load(c: ml_collections.ConfigDict) -> TaskData:
    """The examples of `c.data.source` (and the code tests they are scored against)."""
    if kind(c) == "rubric":
        # Rubrics are rebuilt per example from its meta (rubric_tasks.rubric_for).
        train = rubric_tasks.make_split("train", c.data.train_size, seed=c.seed)
        test = rubric_tasks.make_split("test", c.data.eval_size, seed=c.seed)
        return TaskData([t.example for t in train], [t.example for t in test])
    if kind(c) == "math":
        train, test = setup_lib.load_data(c)
        return TaskData(train, test)
    fmt = c.code.format
    if fmt == "synthetic":
        train_tasks = code_synthetic.make_split("train", c.data.train_size, seed=c.seed)
        test_tasks = code_synthetic.make_split("test", c.data.eval_size, seed=c.seed)
    elif fmt == "embedded":  # a smoke set: the same 14 tasks for training and evaluation
        train_tasks = test_tasks = list(code_tasks_embedded.embedded_tasks())
    else:
        if not c.data.train_files or not c.data.eval_files:
            raise setup_lib.ConfigError(
                f"code.format={fmt!r} needs data.train_files and data.eval_files (jsonl)"
            )
        loader = _CODE_LOADERS[fmt]
        train_tasks = [t for f in c.data.train_files for t in loader(f)]
        test_tasks = [t for f in c.data.eval_files for t in loader(f)]
    by_uid: dict[str, code_tasks.CodeTask] = {}
    for t in [*train_tasks, *test_tasks]:
        first = by_uid.setdefault(t.uid, t)
        if first is not t and first != t:
            raise setup_lib.ConfigError(f"code task uid {t.uid!r} names two different tasks")
    to_ex = code_synthetic.to_example
    return TaskData([to_ex(t) for t in train_tasks], [to_ex(t) for t in test_tasks], by_uid)


def validate(c: ml_collections.ConfigDict) -> None:
    """The code and rubric sections' values, named by key, before anything compiles."""
    if kind(c) == "code":
        if c.code.format not in CODE_FORMATS:
            raise setup_lib.ConfigError(
                f"code.format={c.code.format!r} is not one of {CODE_FORMATS}"
            )
        try:
            code_config(c)
        except ValueError as e:
            raise setup_lib.ConfigError(f"code: {e}") from None
    if kind(c) == "rubric":
        try:
            pow3r_config(c)
        except ValueError as e:
            raise setup_lib.ConfigError(f"rubric: {e}") from None
        if c.rubric.judge and jax.process_count() > 1:
            raise setup_lib.ConfigError(
                f"rubric.judge={c.rubric.judge!r}: a model judge runs in one process only (each "
                "process judges its own rollouts, and the sampler is a collective call)"
            )


def code_config(c: ml_collections.ConfigDict) -> code_lib.CodeConfig:
    k = c.code
    box = sandbox_lib.SandboxConfig(
        timeout_s=k.timeout_s, memory_mb=k.memory_mb, allow_weak=k.allow_weak
    )
    return code_lib.CodeConfig(
        reward_mode=k.reward_mode,
        max_workers=k.max_workers,
        feedback_chars=k.feedback_chars,
        sandbox=box,
    )


def pow3r_config(c: ml_collections.ConfigDict) -> rubric_lib.Pow3rConfig:
    r = c.rubric
    return rubric_lib.Pow3rConfig(alpha=r.alpha, m_min=r.m_min, m_max=r.m_max, ema=r.ema)


ScoreFn = Callable[[list[str], list[data_types.Example]], list]


@contextlib.contextmanager
def scorer(
    c: ml_collections.ConfigDict, data: TaskData, judge: judge_lib.Judge | None = None
) -> Iterator[ScoreFn]:
    """score_fn(texts, examples) -> verdicts (.reward, .correct, .status) for the task kind."""
    if kind(c) == "code":
        cfg = code_config(c)
        if not cfg.sandbox.allow_weak:
            try:
                sandbox_lib.probe_isolation()
            except sandbox_lib.SandboxUnavailable as e:
                raise sandbox_lib.SandboxUnavailable(
                    f"data.source='code': {e} In the experiment config: code.allow_weak=True "
                    "(rlimits only, logged on every run, refused as root)."
                ) from None
        else:
            logging.warning(
                "code.allow_weak=True: programs may run with rlimits only (no namespaces); "
                "every such run is logged"
            )

        def score_code(texts, examples):
            return code_lib.score_many(texts, [data.code_tasks[ex.uid] for ex in examples], cfg)

        yield score_code
    elif kind(c) == "rubric":
        judged = judge is not None and c.rubric.judge_criteria

        def score_rubric(texts, examples):
            rubrics = [rubric_tasks.rubric_for(ex.meta, judge=judged) for ex in examples]
            batch_judge = None
            if judged:  # every judge criterion of the batch in one batched sampler call
                items = [
                    (ex.prompt, t, crit)
                    for t, ex, r in zip(texts, examples, rubrics, strict=True)
                    for crit in r.criteria
                    if crit.check is None
                ]
                batch_judge = _BatchJudge(judge, items)
            return [
                rubric_lib.score(t, r, batch_judge, prompt=ex.prompt)
                for t, ex, r in zip(texts, examples, rubrics, strict=True)
            ]

        yield score_rubric
    else:
        with pool_lib.VerifierPool(
            c.verifier.workers, c.verifier.timeout_s, preload=("rlvr_jax.rewards.math",)
        ) as pool:
            yield setup_lib.make_score_fn(pool)


class _BatchJudge:
    """A batch's judge verdicts, fetched in one `judge_many` call and served to rubric.score (an
    invalid verdict is not re-judged: it stays invalid, counted once)."""

    def __init__(self, judge: judge_lib.ModelJudge, items: Sequence[tuple[str, str, Any]]):
        verdicts = judge.judge_many(items) if items else []
        self._judge = judge
        self._got = {(p, r, c.id): v for (p, r, c), v in zip(items, verdicts, strict=True)}

    def judge(self, prompt: str, response: str, criterion: Any) -> judge_lib.JudgeVerdict:
        got = self._got.get((prompt, response, criterion.id))
        return got if got is not None else self._judge.judge(prompt, response, criterion)


# --- Metrics and reweighting of a scored rollout ---


def code_metrics(verdicts: Sequence[Any]) -> dict[str, float]:
    """Shares of code verdict statuses and of tests passed (this process's rows)."""
    if not verdicts or not isinstance(verdicts[0], code_lib.CodeVerdict):
        return {}
    counts = collections.Counter(v.status for v in verdicts)
    m = {f"code/{s}_frac": counts[s] / len(verdicts) for s in code_lib.STATUSES}
    m["code/tests_passed_frac"] = float(np.mean([v.passed / max(v.total, 1) for v in verdicts]))
    return m


@dataclasses.dataclass(frozen=True)
class RubricRewards:
    """Training rewards of one rubric rollout, and POW3R's memory for the next step."""

    rewards_B: np.ndarray  # float32: POW3R-weighted (or the human-weighted ones when off)
    state: Mapping[str, rubric_lib.Pow3rState]  # per rubric family
    metrics: dict[str, float]


def rubric_rewards(
    examples: Sequence[data_types.Example],
    verdicts: Sequence[rubric_lib.RubricVerdict],
    G: int,
    *,
    cfg: rubric_lib.Pow3rConfig | None,
    state: Mapping[str, rubric_lib.Pow3rState],
    judge_criteria: bool = False,
) -> RubricRewards:
    """POW3R training rewards of a group-major rollout (`cfg=None`: the verdicts' own human-weight
    rewards), per rubric family; each prompt's G rollouts are one contrast group. Per-criterion
    pass rates and training weights are logged either way, as rubric/<family>/<metric>."""
    B = len(verdicts)
    rewards_B = np.asarray([v.reward for v in verdicts], np.float32)
    families: dict[str, list[int]] = collections.defaultdict(list)
    for b in range(B):
        families[examples[b // G].meta["family"]].append(b)
    new_state, metrics = dict(state), {}
    for family, rows in families.items():
        rubric = rubric_tasks.rubric_for(examples[rows[0] // G].meta, judge=judge_criteria)
        rows_v = [verdicts[b] for b in rows]
        weights_BxC, new_state[family], m = rubric_lib.pow3r_weights(
            rubric_lib.pass_table(rows_v),
            [examples[b // G].uid for b in rows],
            rubric.weights,
            rubric.categories,
            cfg or rubric_lib.Pow3rConfig(),
            state=state.get(family),
            ids=rubric.ids,
        )
        metrics |= {k.replace("rubric/", f"rubric/{family}/", 1): v for k, v in m.items()}
        if cfg is not None:
            rewards_B[rows] = rubric_lib.rewards(rows_v, rubric, weights_BxC)
    metrics["rubric/reward_human_mean"] = float(np.mean([v.reward for v in verdicts]))
    metrics["rubric/reward_train_mean"] = float(rewards_B.mean())
    metrics["rubric/invalid_frac"] = float(np.mean([v.invalid > 0 for v in verdicts]))
    return RubricRewards(rewards_B, new_state, metrics)


def pow3r_state_to_json(state: Mapping[str, rubric_lib.Pow3rState]) -> dict[str, Any]:
    """POW3R's EMA memory as JSON (nan -> None) for the checkpoint record."""
    return {
        family: {
            str(k): [None if np.isnan(x) else float(x) for x in v] for k, v in s.contrast.items()
        }
        for family, s in state.items()
    }


def pow3r_state_from_json(data: Mapping[str, Any]) -> dict[str, rubric_lib.Pow3rState]:
    return {
        family: rubric_lib.Pow3rState(
            {
                k: np.asarray([np.nan if x is None else x for x in v], np.float64)
                for k, v in d.items()
            }
        )
        for family, d in data.items()
    }


def make_judge(
    c: ml_collections.ConfigDict,
    *,
    tok: tokenizer_lib.Tokenizer,
    model_cfg: config_lib.ModelConfig,
    sampling_cfg: sampling.SamplingConfig,
    mesh: jax.sharding.Mesh,
    policy_params: Callable[[], params_lib.Params],
) -> judge_lib.ModelJudge | None:
    """The rubric's judge: none, the policy itself ("policy", its current weights each call), or
    a local HF model sharing the policy's tokenizer; run greedily by our own sampler."""
    judge = c.rubric.judge
    if not judge:
        return None
    if judge == "policy":
        judge_cfg, get_params = model_cfg, policy_params
    else:
        loaded = research_lib.load_teacher(judge, model_cfg, tok, mesh)
        judge_cfg, get_params = loaded.model_cfg, lambda: loaded.params
    greedy = dataclasses.replace(
        sampling_cfg, temperature=0.0, max_new_tokens=c.rubric.judge_max_new_tokens
    )
    key = distributed.replicated_key(mesh, c.seed, 2, 0)  # unused at temperature 0

    def generate(prompts: list[str]) -> list[str]:
        ids = [tok.apply_chat_template(p, system=None) for p in prompts]
        out = rollout_lib.generate(
            get_params(), ids, key, model_cfg=judge_cfg, sampling_cfg=greedy, mesh=mesh
        )
        return [
            tok.decode(row[:n], skip_special_tokens=True)
            for row, n in zip(out.tokens_BxTc, out.lengths_B, strict=True)
        ]

    return judge_lib.ModelJudge(generate, max_retries=c.rubric.judge_retries)


def judge_metrics(judge: judge_lib.ModelJudge | None) -> dict[str, float]:
    """The judge's running counters (requests, cache hits, invalid verdicts, ...)."""
    if judge is None:
        return {}
    return {f"judge/{k}": float(v) for k, v in sorted(judge.stats.items())}
