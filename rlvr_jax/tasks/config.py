"""The task sections of the run config (`data`, `verifier`, `code`, `rubric`) and `TaskConfig`,
the task's view of a run: these sections and the seed."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataConfig:
    """The task's examples. `source` picks the task kind (rlvr_jax.tasks.KINDS)."""

    source: str = "synthetic"
    level: int = 1  # synthetic difficulty, 1..4
    train_size: int = 4000  # generated examples (synthetic, code, rubric, reasoning_gym)
    eval_size: int = 128
    train_files: tuple[str, ...] = ()
    eval_files: tuple[str, ...] = ()
    system: str = ""  # system prompt; empty: none
    # reasoning_gym: ((name, weight, {config}), ...) (rlvr_jax/tasks/reasoning_gym.py)
    rg_tasks: tuple = ()


@dataclasses.dataclass(frozen=True, kw_only=True)
class VerifierConfig:
    """The math verifier's worker processes."""

    workers: int = 2
    timeout_s: float = 10.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class CodeSection:
    """The code task: data format, reward and sandbox limits (rlvr_jax/tasks/code.py)."""

    format: str = "synthetic"  # synthetic | embedded | mbpp | humaneval | apps
    reward_mode: str = "all_pass"
    max_workers: int = 4  # programs at once
    timeout_s: float = 5.0  # wall clock per run
    memory_mb: int = 512  # address space per process
    allow_weak: bool = False
    feedback_chars: int = 1000


@dataclasses.dataclass(frozen=True, kw_only=True)
class RubricSection:
    """The rubric task: POW3R weights and the optional judge (rlvr_jax/tasks/rubric.py)."""

    pow3r: bool = True
    alpha: float = 0.5
    m_min: float = 0.2
    m_max: float = 3.0
    ema: float = 0.0
    judge: str = ""  # "", "policy" or a local HF folder
    judge_criteria: bool = True
    judge_max_new_tokens: int = 32
    judge_retries: int = 2


@dataclasses.dataclass(frozen=True, kw_only=True)
class TaskConfig:
    """What a task reads of the run config."""

    seed: int = 0
    data: DataConfig = DataConfig()
    verifier: VerifierConfig = VerifierConfig()
    code: CodeSection = CodeSection()
    rubric: RubricSection = RubricSection()
