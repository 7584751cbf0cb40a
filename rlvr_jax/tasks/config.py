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
class EcomSection:
    """Ecom-RLVE's environments, difficulty and warm start (rlvr_jax/tasks/ecom.py)."""

    envs: tuple[str, ...] = ("PD", "SUB", "CART", "RETURN", "STATUS", "POLICY")
    # The curriculum over environment sets (C1 {PD} -> C2 +SUB -> C4 +CART, RETURN -> C8 all),
    # one stage per this many RL steps; 0 trains on every environment in `envs` from the start.
    curriculum_every: int = 0
    adaptive: bool = True  # the RLVE rule per environment; False: every episode at `difficulty`
    difficulty: int = 0  # the fixed difficulty when adaptive=False
    tau_num: int = 32  # frontier episodes per promotion decision
    tau_acc: float = 0.9  # frontier accuracy that promotes
    d_delta: int = 4  # the sampled window's width below the frontier
    eval_difficulty: int = 2  # held-out episodes' fixed difficulty
    catalog_seed: int = 0
    workers: int = 2  # environment worker processes
    timeout_s: float = 10.0  # per environment call
    expert_episodes: int = 600  # scripted expert episodes for the warm start
    expert_max_difficulty: int = 3  # their difficulty, uniform in [0, this]

    def __post_init__(self):
        if not self.envs:
            raise ValueError("envs: at least one environment")
        for name in ("curriculum_every", "difficulty", "eval_difficulty", "expert_episodes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        if self.tau_num < 1 or not 0 < self.tau_acc <= 1 or self.d_delta < 0:
            raise ValueError("tau_num >= 1, 0 < tau_acc <= 1 and d_delta >= 0")
        if self.timeout_s <= 0 or self.workers < 0:
            raise ValueError("timeout_s > 0 and workers >= 0")


@dataclasses.dataclass(frozen=True, kw_only=True)
class LongTraceSection:
    """LongTraceRL's data and rubric reward (rlvr_jax/tasks/longtrace.py, docs/longtrace.md)."""

    format: str = "synthetic"  # synthetic (the embedded knowledge graph) | jsonl (data.*_files)
    num_entities: int = 6000  # the synthetic graph's entities
    graph_seed: int = 0
    min_hops: int = 2  # walk lengths, uniform in [min_hops, max_hops]
    max_hops: int = 8
    context_tokens: int = 2048  # packed context per RL / held-out prompt, policy tokens
    tier1_ratio: float = 0.5  # share of distractor documents from Tier-1 (confusable)
    # Held-out questions are packed once per ratio here (accuracy by tier: tier2 / mixed /
    # tier1); (): at tier1_ratio only.
    eval_tier1_ratios: tuple[float, ...] = (0.0, 0.5, 1.0)
    # positive_only (the paper) | negative_only | ungated | outcome (rewards/longtrace.py)
    combination: str = "positive_only"
    rubric_eta: float = 0.3  # the rubric's weight eta
    warm_examples: int = 2000  # short-context questions for the warm start (0: none)
    # compact: gold documents cut to the sentence each hop uses (about 180 tokens a prompt);
    # short: whole gold documents; either with `warm_distractors` distractors.
    warm_form: str = "compact"
    warm_distractors: int = 2  # distractor documents beside their gold ones


@dataclasses.dataclass(frozen=True, kw_only=True)
class TaskConfig:
    """What a task reads of the run config."""

    seed: int = 0
    data: DataConfig = DataConfig()
    verifier: VerifierConfig = VerifierConfig()
    code: CodeSection = CodeSection()
    rubric: RubricSection = RubricSection()
    ecom: EcomSection = EcomSection()
    longtrace: LongTraceSection = LongTraceSection()
