"""The LongTraceRL task: multi-hop questions over long packed contexts, the outcome by normalised
exact match and the entity rubric on correct answers (rewards/longtrace.py, docs/longtrace.md).

Examples come from the embedded knowledge graph (`longtrace.format='synthetic'`: random walks of
`min_hops`..`max_hops`, gold documents and tiered distractors packed to `context_tokens` of the
policy's tokenizer) or from the released LongTraceRL jsonl (`'jsonl'`: `data.train_files` /
`data.eval_files`). A completion is asked for the chain of entities it followed, then
`Answer: <name>`; the warm start fits that form on the same questions with short contexts (the
gold documents and `warm_distractors` others). `shape` normalises each group's rubric shares by
its maximum and combines them with the outcome (`longtrace.combination`, eta =
`longtrace.rubric_eta`); held-out accuracy is reported by hop count and by distractor tier.
"""

# pylint: disable=invalid-name
from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any

import numpy as np

from rlvr_jax.data import longtrace_context as context_lib
from rlvr_jax.data import longtrace_jsonl as jsonl_lib
from rlvr_jax.data import longtrace_kg as kg_lib
from rlvr_jax.data import types as data_types
from rlvr_jax.errors import ConfigError
from rlvr_jax.rewards import longtrace as rewards_lib
from rlvr_jax.tasks import base
from rlvr_jax.tasks import config as task_config

SOURCES = ("longtrace",)
FORMATS = ("synthetic", "jsonl")
WARM_FORMS = ("compact", "short")
WARM_SEED_OFFSET = 7_919  # the warm start's questions: another draw than the RL split's


def validate(cfg: task_config.TaskConfig, processes: int = 1) -> None:
    del processes
    s = cfg.longtrace
    if s.format not in FORMATS:
        raise ConfigError(f"longtrace.format={s.format!r} is not one of {FORMATS}")
    if s.combination not in rewards_lib.COMBINATIONS:
        raise ConfigError(
            f"longtrace.combination={s.combination!r} is not one of {rewards_lib.COMBINATIONS}"
        )
    if not 0 <= s.rubric_eta <= 1:
        raise ConfigError(f"longtrace.rubric_eta={s.rubric_eta} must be in [0, 1]")
    if s.warm_form not in WARM_FORMS:
        raise ConfigError(f"longtrace.warm_form={s.warm_form!r} is not one of {WARM_FORMS}")
    if s.format == "jsonl" and (not cfg.data.train_files or not cfg.data.eval_files):
        raise ConfigError("longtrace.format='jsonl' needs data.train_files and data.eval_files")
    if s.format == "synthetic":
        if not 2 <= s.min_hops <= s.max_hops <= 8:
            raise ConfigError(
                f"longtrace.min_hops={s.min_hops}, max_hops={s.max_hops}: need 2 <= min <= max <= 8"
            )
        for ratio in (s.tier1_ratio, *s.eval_tier1_ratios):
            if not 0 <= ratio <= 1:
                raise ConfigError(
                    f"longtrace.tier1_ratio / eval_tier1_ratios: {ratio} is not in [0, 1]"
                )
        if s.context_tokens < 64:
            raise ConfigError(f"longtrace.context_tokens={s.context_tokens} must be >= 64")
        if s.num_entities < 5000:
            raise ConfigError(f"longtrace.num_entities={s.num_entities} must be >= 5000")


def held_out(graph, cfg: task_config.TaskConfig, common: dict[str, Any]):
    """`data.eval_size` held-out examples: the same questions packed once per ratio of
    `longtrace.eval_tier1_ratios` (a paired comparison across distractor tiers), interleaved so
    that any prefix (`eval.num_prompts`) holds every ratio."""
    ratios = cfg.longtrace.eval_tier1_ratios or (cfg.longtrace.tier1_ratio,)
    n = -(-cfg.data.eval_size // len(ratios))
    per_ratio = []
    for ratio in ratios:
        examples = context_lib.make_examples(
            graph, n, seed=cfg.seed, split="test", **{**common, "tier1_ratio": ratio}
        )
        per_ratio.append(
            [
                data_types.Example(
                    f"{ex.uid}/tier1_{ratio:g}",
                    ex.prompt,
                    ex.answer,
                    source=ex.source,
                    meta=ex.meta,
                )  # fmt: skip
                for ex in examples
            ]
        )
    return [ex for group in zip(*per_ratio, strict=True) for ex in group][: cfg.data.eval_size]


def solution(example: data_types.Example) -> str:
    """The worked form a completion is asked for: the chain, then the answer."""
    chain = (example.meta or {}).get("gold_entities") or []
    return f"Chain: {' -> '.join(chain)}\nAnswer: {example.answer}"


class LongTraceTask(base.Task):
    def __init__(self, cfg: task_config.TaskConfig, ctx: base.TaskContext | None = None):
        self._s, self._system = cfg.longtrace, cfg.data.system or None
        if self._s.format == "jsonl":
            self.train = [ex for f in cfg.data.train_files for ex in jsonl_lib.load_jsonl(f)]
            self.test = [ex for f in cfg.data.eval_files for ex in jsonl_lib.load_jsonl(f)]
            self._graph = None
            return
        if ctx is None:
            raise ConfigError(
                "data.source='longtrace' packs contexts in the policy's tokens: build the task "
                "with a TaskContext (its tokenizer)"
            )
        self._count = lambda text: len(ctx.tok.encode(text))
        s = self._s
        self._graph = kg_lib.build_graph(s.num_entities, seed=s.graph_seed)
        common = dict(
            min_hops=s.min_hops,
            max_hops=s.max_hops,
            max_tokens=s.context_tokens,
            count_tokens=self._count,
            tier1_ratio=s.tier1_ratio,
        )
        self.train = self._with_solutions(
            context_lib.make_examples(
                self._graph, cfg.data.train_size, seed=cfg.seed, split="train", **common
            )
        )
        self.test = self._with_solutions(held_out(self._graph, cfg, common))

    @staticmethod
    def _with_solutions(examples):
        return [
            data_types.Example(
                ex.uid, ex.prompt, ex.answer, solution(ex), source=ex.source, meta=ex.meta
            )
            for ex in examples
        ]

    def warm_rows(self, tok, seed: int, max_tokens: int | None = None):
        """Short contexts (gold documents and a few distractors) with the worked chain; None for
        jsonl data (the warm start then fits the examples' answers, if it runs at all)."""
        del max_tokens
        s = self._s
        if self._graph is None or not s.warm_examples:
            return None
        common = dict(
            seed=seed + WARM_SEED_OFFSET,
            min_hops=s.min_hops,
            max_hops=s.max_hops,
            n_distractors=s.warm_distractors,
            split="train",
        )
        if s.warm_form == "compact":
            examples = context_lib.compact_examples(self._graph, s.warm_examples, **common)
        else:
            examples = context_lib.short_examples(
                self._graph,
                s.warm_examples,
                count_tokens=self._count,
                tier1_ratio=s.tier1_ratio,
                **common,
            )
        return [
            (
                tok.apply_chat_template(ex.prompt, system=self._system),
                tok.encode(ex.solution) + [tok.eos_ids[0]],
                None,
            )
            for ex in self._with_solutions(examples)
        ]

    def scorer(self):
        def score(texts: list[str], examples: list[data_types.Example]):
            return [
                rewards_lib.score(t, ex.answer, (ex.meta or {}).get("gold_entities") or ())
                for t, ex in zip(texts, examples, strict=True)
            ]

        return base.no_resources(score)

    def shape(self, examples, verdicts, G, state) -> base.Shaped:
        s = self._s
        correct_B = np.asarray([v.correct for v in verdicts], bool)
        rubric_B = np.asarray([v.rubric for v in verdicts], np.float64)
        rewards_B = rewards_lib.combine(
            correct_B, rubric_B, G, mode=s.combination, eta=s.rubric_eta
        )
        norm_B = rewards_lib.group_normalize(rubric_B, G)
        metrics = {
            "longtrace/outcome_mean": float(correct_B.mean()),
            "longtrace/rubric_mean": float(rubric_B.mean()),
            "longtrace/rubric_norm_mean": float(norm_B.mean()),
            "longtrace/reward_train_mean": float(rewards_B.mean()),
            **self.metrics(verdicts),
        }
        return base.Shaped(rewards_B, state, metrics)

    def metrics(self, verdicts: Sequence[Any]) -> dict[str, float]:
        return rubric_split(verdicts, "longtrace")

    def eval_metrics(self, examples, verdicts) -> dict[str, float]:
        """Held-out accuracy by hop count and by distractor tier, the rubric on correct ones."""
        groups: dict[str, list[bool]] = collections.defaultdict(list)
        for ex, v in zip(examples, verdicts, strict=True):
            meta = ex.meta or {}
            if meta.get("hops") is not None:
                groups[f"hops_{int(meta['hops'])}"].append(v.correct)
            if meta.get("tier"):
                groups[f"tier_{meta['tier']}"].append(v.correct)
        out = {f"eval/acc/{k}": float(np.mean(c)) for k, c in sorted(groups.items())}
        return {**out, **rubric_split(verdicts, "eval")}


def rubric_split(verdicts: Sequence[Any], prefix: str) -> dict[str, float]:
    """r_rub (before group normalisation) on correct and on wrong answers; -1 where none."""
    on = lambda keep: [v.rubric for v in verdicts if keep(v)]  # noqa: E731
    right, wrong = on(lambda v: v.correct), on(lambda v: not v.correct)
    return {
        f"{prefix}/rubric_on_correct": float(np.mean(right)) if right else -1.0,
        f"{prefix}/rubric_on_wrong": float(np.mean(wrong)) if wrong else -1.0,
        f"{prefix}/no_answer_frac": float(np.mean([v.status == "no_answer" for v in verdicts])),
    }
