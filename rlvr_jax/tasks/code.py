"""The code task: every completion's program runs against its task's tests in the sandbox
(rewards/code.py), `code.max_workers` at a time.

`code.format`: synthetic (data/code_synthetic.py), embedded (the shipped task set, the same 14
tasks for training and evaluation) or an MBPP-, HumanEval- or APPS-shaped jsonl through
`data.train_files` / `data.eval_files`.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from absl import logging

from rlvr_jax.data import code_synthetic, code_tasks, code_tasks_embedded
from rlvr_jax.errors import ConfigError
from rlvr_jax.rewards import code as code_lib
from rlvr_jax.rewards import sandbox as sandbox_lib
from rlvr_jax.tasks import base
from rlvr_jax.tasks import config as task_config

SOURCES = ("code",)
FORMATS = ("synthetic", "embedded", "mbpp", "humaneval", "apps")
_LOADERS = {
    "mbpp": code_tasks.load_mbpp,
    "humaneval": code_tasks.load_humaneval,
    "apps": code_tasks.load_apps,
}


def code_config(section: task_config.CodeSection) -> code_lib.CodeConfig:
    """The verifier's config from the `code` section (errors name the key)."""
    if section.format not in FORMATS:
        raise ConfigError(f"code.format={section.format!r} is not one of {FORMATS}")
    try:
        box = sandbox_lib.SandboxConfig(
            timeout_s=section.timeout_s, memory_mb=section.memory_mb, allow_weak=section.allow_weak
        )
        return code_lib.CodeConfig(
            reward_mode=section.reward_mode,
            max_workers=section.max_workers,
            feedback_chars=section.feedback_chars,
            sandbox=box,
        )
    except ValueError as e:
        raise ConfigError(f"code: {e}") from None


def validate(cfg: task_config.TaskConfig, processes: int) -> None:
    del processes
    code_config(cfg.code)


def load_tasks(cfg: task_config.TaskConfig):
    """(train tasks, test tasks) of `code.format`."""
    fmt, d = cfg.code.format, cfg.data
    if fmt == "synthetic":
        train = code_synthetic.make_split("train", d.train_size, seed=cfg.seed)
        test = code_synthetic.make_split("test", d.eval_size, seed=cfg.seed)
        return train, test
    if fmt == "embedded":
        tasks = list(code_tasks_embedded.embedded_tasks())
        return tasks, tasks
    if not d.train_files or not d.eval_files:
        raise ConfigError(f"code.format={fmt!r} needs data.train_files and data.eval_files (jsonl)")
    loader = _LOADERS[fmt]
    return [t for f in d.train_files for t in loader(f)], [
        t for f in d.eval_files for t in loader(f)
    ]


class CodeTask(base.Task):
    def __init__(self, cfg: task_config.TaskConfig, ctx: base.TaskContext | None = None):
        del ctx
        self._cfg = code_config(cfg.code)
        train_tasks, test_tasks = load_tasks(cfg)
        self.by_uid: dict[str, Any] = {}
        for t in [*train_tasks, *test_tasks]:
            first = self.by_uid.setdefault(t.uid, t)
            if first is not t and first != t:
                raise ConfigError(f"code task uid {t.uid!r} names two different tasks")
        self.train = [code_synthetic.to_example(t) for t in train_tasks]
        self.test = [code_synthetic.to_example(t) for t in test_tasks]

    @contextlib.contextmanager
    def scorer(self) -> Iterator[base.ScoreFn]:
        cfg = self._cfg
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
            return code_lib.score_many(texts, [self.by_uid[ex.uid] for ex in examples], cfg)

        yield score_code

    def metrics(self, verdicts: Sequence[Any]) -> dict[str, float]:
        return code_metrics(verdicts)


def code_metrics(verdicts: Sequence[Any]) -> dict[str, float]:
    """Shares of code verdict statuses and of tests passed (this process's rows)."""
    if not verdicts:
        return {}
    counts = collections.Counter(v.status for v in verdicts)
    m = {f"code/{s}_frac": counts[s] / len(verdicts) for s in code_lib.STATUSES}
    m["code/tests_passed_frac"] = float(np.mean([v.passed / max(v.total, 1) for v in verdicts]))
    return m
