"""The rubric task: the embedded rubric family (data/rubric_tasks.py), graded per criterion on the
human weights; POW3R (`rubric.pow3r`) reweights the training rewards from each group's verdicts
and keeps its EMA memory as this task's checkpointed state; evaluation always keeps the human
weights (docs/pow3r.md). An optional judge model grades the criteria without a check.
"""

# pylint: disable=invalid-name
from __future__ import annotations

import collections
import contextlib
import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from rlvr_jax.data import rubric_tasks
from rlvr_jax.data import types as data_types
from rlvr_jax.errors import ConfigError
from rlvr_jax.models import frozen
from rlvr_jax.rewards import judge as judge_lib
from rlvr_jax.rewards import rubric as rubric_lib
from rlvr_jax.tasks import base
from rlvr_jax.tasks import config as task_config

SOURCES = ("rubric",)
JUDGES = ("", "policy")  # or a local HF folder


def pow3r_config(section: task_config.RubricSection) -> rubric_lib.Pow3rConfig:
    try:
        return rubric_lib.Pow3rConfig(
            alpha=section.alpha, m_min=section.m_min, m_max=section.m_max, ema=section.ema
        )
    except ValueError as e:
        raise ConfigError(f"rubric: {e}") from None


def validate(cfg: task_config.TaskConfig, processes: int) -> None:
    pow3r_config(cfg.rubric)
    if cfg.rubric.judge and processes > 1:
        raise ConfigError(
            f"rubric.judge={cfg.rubric.judge!r}: a model judge runs in one process only (each "
            "process judges its own rollouts, and the sampler is a collective call)"
        )


class RubricTask(base.Task):
    def __init__(self, cfg: task_config.TaskConfig, ctx: base.TaskContext | None = None):
        self._section = cfg.rubric
        self._pow3r = pow3r_config(cfg.rubric) if cfg.rubric.pow3r else None
        # Rubrics are rebuilt per example from its meta (rubric_tasks.rubric_for).
        train = rubric_tasks.make_split("train", cfg.data.train_size, seed=cfg.seed)
        test = rubric_tasks.make_split("test", cfg.data.eval_size, seed=cfg.seed)
        self.train, self.test = [t.example for t in train], [t.example for t in test]
        self.judge = make_judge(cfg, ctx) if ctx is not None else None
        self._judged = self.judge is not None and cfg.rubric.judge_criteria

    @contextlib.contextmanager
    def scorer(self) -> Iterator[base.ScoreFn]:
        judge, judged = self.judge, self._judged

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

    def init_state(self) -> dict[str, rubric_lib.Pow3rState]:
        return {}  # POW3R's EMA memory per rubric family

    def shape(self, examples, verdicts, G, state) -> base.Shaped:
        rr = rubric_rewards(
            examples, verdicts, G, cfg=self._pow3r, state=state, judge_criteria=self._judged
        )
        return base.Shaped(rr.rewards_B, rr.state, {**rr.metrics, **judge_metrics(self.judge)})

    def state_to_record(self, state) -> dict[str, Any]:
        return {"pow3r": pow3r_state_to_json(state)} if state else {}

    def state_from_record(self, record) -> dict[str, rubric_lib.Pow3rState]:
        return pow3r_state_from_json(record.get("pow3r", {}))


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


def make_judge(cfg: task_config.TaskConfig, ctx: base.TaskContext) -> judge_lib.ModelJudge | None:
    """The rubric's judge: none, the policy itself ("policy", its current weights each call), or
    a local HF model sharing the policy's tokenizer; run greedily by our own sampler."""
    name = cfg.rubric.judge
    if not name:
        return None
    if name == "policy":
        judge_cfg, get_params = ctx.model_cfg, ctx.policy_params
    else:
        loaded = frozen.load(name, ctx.model_cfg, ctx.tok, ctx.mesh)
        judge_cfg, get_params = loaded.model_cfg, lambda: loaded.params
    greedy = dataclasses.replace(
        ctx.sampling_cfg, temperature=0.0, max_new_tokens=cfg.rubric.judge_max_new_tokens
    )
    tok = ctx.tok

    def generate(prompts: list[str]) -> list[str]:
        ids = [tok.apply_chat_template(p, system=None) for p in prompts]
        out = ctx.generate(get_params(), ids, judge_cfg, greedy)
        return [
            tok.decode(row[:n], skip_special_tokens=True)
            for row, n in zip(out.tokens_BxTc, out.lengths_B, strict=True)
        ]

    return judge_lib.ModelJudge(generate, max_retries=cfg.rubric.judge_retries)


def judge_metrics(judge: judge_lib.ModelJudge | None) -> dict[str, float]:
    """The judge's running counters (requests, cache hits, invalid verdicts, ...)."""
    if judge is None:
        return {}
    return {f"judge/{k}": float(v) for k, v in sorted(judge.stats.items())}
