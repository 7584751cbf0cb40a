"""The math task: final answers checked against a reference by the math verifier
(rewards/math.py) in worker processes with a hard wall-clock limit.

Sources: `synthetic` (the embedded arithmetic word problems, data/synthetic.py, `data.level`) or
jsonl/parquet files (`gsm8k`, `math`, `answer` for MATH-500/AIME, `parquet` for verl rows) through
`data.train_files` / `data.eval_files`.
"""

from __future__ import annotations

from rlvr_jax.data import files as files_lib
from rlvr_jax.data import synthetic
from rlvr_jax.data import types as data_types
from rlvr_jax.errors import ConfigError
from rlvr_jax.rewards import math as math_lib
from rlvr_jax.rewards import pool as pool_lib
from rlvr_jax.tasks import base
from rlvr_jax.tasks import config as task_config

FILE_FORMATS = ("gsm8k", "math", "answer", "parquet")  # data.files.load kinds
SOURCES = ("synthetic", *FILE_FORMATS)


def load_data(
    cfg: task_config.TaskConfig,
) -> tuple[list[data_types.Example], list[data_types.Example]]:
    """(train, held-out eval) examples."""
    d = cfg.data
    if d.source == "synthetic":
        level = synthetic.config_for_level(d.level)
        train = synthetic.make_split(level, "train", d.train_size, seed=cfg.seed)
        test = synthetic.make_split(level, "test", d.eval_size, seed=cfg.seed)
        return train, test
    if not d.train_files or not d.eval_files:
        raise ConfigError(f"data.source={d.source!r} needs data.train_files and data.eval_files")
    train = files_lib.dedupe([ex for f in d.train_files for ex in files_lib.load(d.source, f)])
    test = files_lib.dedupe([ex for f in d.eval_files for ex in files_lib.load(d.source, f)])
    return train, test


def make_score_fn(pool: pool_lib.VerifierPool) -> base.ScoreFn:
    """texts, examples -> verdicts against each example's reference answer, through worker
    processes; a timeout or crash is its own status, never a silent 0 or 1."""

    def score(texts: list[str], examples: list[data_types.Example]) -> list[math_lib.MathVerdict]:
        return pool.map(
            math_lib.score_math_item,
            [(t, ex.answer) for t, ex in zip(texts, examples, strict=True)],
            on_timeout=math_lib.timeout_verdict,
            on_error=math_lib.error_verdict,
        )

    return score


class MathTask(base.Task):
    def __init__(self, cfg: task_config.TaskConfig, ctx: base.TaskContext | None = None):
        del ctx
        self.train, self.test = load_data(cfg)
        self._verifier = cfg.verifier

    def scorer(self):
        return base.pooled(self._verifier, ("rlvr_jax.rewards.math",), make_score_fn)
