"""RLConfig: the typed, validated knobs of the RL objective (advantages, clipping, KL, aggregation,
DAPO's dynamic sampling and overlong handling, the policy-loss mode). See docs/grpo.md and
docs/dapo.md."""

from __future__ import annotations

import dataclasses

from rlvr_jax.values import is_int, is_num

ADV_ESTIMATORS = ("grpo", "dr_grpo", "rloo")
KL_ESTIMATORS = ("k1", "k2", "k3", "k3+")
LOSS_AGGS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")
POLICY_LOSSES = ("ppo_clip", "kl_cov", "clip_cov", "gspo", "cispo")
# Sampler/trainer mismatch corrections (docs/mismatch.md): truncated (TIS) or masked (MIS, which is
# IcePop at token level) importance weights pi_old / mu, per token or per sequence.
# "icepop" is token_mis by name (slime's icepop_function): the ratio kept inside [low, high], 0 out.
ROLLOUT_CORRECTIONS = ("none", "token_tis", "seq_tis", "token_mis", "seq_mis", "icepop")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RLConfig:
    """The RL objective. Frozen and hashable: a static jit argument.

    Defaults are GRPO with a symmetric PPO clip and no KL term (beta=0: no reference model). DAPO is
    `eps_high=0.28, loss_agg="token_mean", dynamic_sampling=True` plus an overlong option; Dr. GRPO
    is `adv_estimator="dr_grpo", loss_agg="seq_mean_token_sum_norm", norm_len=<max completion len>`.
    GSPO is `policy_loss="gspo", eps_low=3e-4, eps_high=4e-4, loss_agg="seq_mean_token_mean"`
    (the aggregation is validated, not forced); CISPO is `policy_loss="cispo", eps_low=10,
    eps_high=0.2` (verl's example: no lower bound, cap 1.2; TRL's absolute cap c is eps_high=c-1).
    """

    group_size: int = 8  # G, completions per prompt
    adv_estimator: str = "grpo"  # one of ADV_ESTIMATORS
    adv_eps: float = 1e-6  # GRPO: (r - mean) / (std + adv_eps)
    adv_std_ddof: int = 1  # GRPO's group std: 1 unbiased (verl, TRL), 0 population
    eps_low: float = 0.2  # ratio clipped below at 1 - eps_low
    eps_high: float = 0.2  # ratio clipped above at 1 + eps_high (DAPO clip-higher: 0.28)
    dual_clip: float | None = None  # c > 1: for A < 0 the token loss is capped at c * |A|
    # The token loss, one of POLICY_LOSSES (docs/rlif.md): the PPO clip; KL-Cov (no clip, a
    # |logp - old_logp| penalty on the top-covariance tokens); Clip-Cov (the PPO clip, a random
    # share of the tokens with covariance in (lb, ub) detached). Defaults: the paper's recipes.
    # gspo: GSPO-token, the length-normalised sequence ratio, clipped; cispo: the clipped ratio
    # as a constant weight on -A * logp, every token keeps its gradient (docs/mismatch.md).
    policy_loss: str = "ppo_clip"
    # Sampler/trainer mismatch correction, one of ROLLOUT_CORRECTIONS (docs/mismatch.md). "none"
    # keeps the ratio pi_theta / mu against the sampler's log-probs (bypass). Any other value makes
    # the ratio decoupled, pi_theta / pi_old (the trainer at the rollout weights), and multiplies
    # each token's clipped loss by a stop-gradient weight from pi_old / mu: *_tis truncates it at
    # rollout_clip_high, *_mis and icepop (= token_mis) zero it outside
    # [rollout_clip_low, rollout_clip_high].
    rollout_correction: str = "none"
    rollout_clip_low: float = 0.5  # MIS / IcePop lower bound (TIS ignores it, as verl and TRL)
    rollout_clip_high: float = 2.0  # TIS cap C and MIS / IcePop upper bound
    kl_cov_ratio: float = 0.002  # share of the valid tokens KL-Cov penalises
    kl_cov_coef: float = 1.0  # weight of |logp - old_logp| on them (verl's ppo_kl_coef)
    clip_cov_ratio: float = 0.0002  # share of the valid tokens Clip-Cov detaches
    clip_cov_lb: float = 1.0  # Clip-Cov's candidates have lb < Cov < ub
    clip_cov_ub: float = 5.0
    beta: float = 0.0  # KL(pi_theta || pi_ref) coefficient; 0 needs no reference model
    kl_estimator: str = "k3"  # one of KL_ESTIMATORS
    loss_agg: str = "token_mean"  # one of LOSS_AGGS
    norm_len: int | None = None  # tokens, the constant L of seq_mean_token_sum_norm
    entropy_coef: float = 0.0  # entropy bonus: the loss subtracts entropy_coef * entropy
    num_updates: int = 1  # optimizer updates per rollout batch
    dynamic_sampling: bool = False  # DAPO: drop groups whose rewards are all equal
    max_resample_rounds: int = 0  # extra rollout rounds to refill dropped groups (0: drop only)
    overlong_filter: bool = False  # DAPO: mask truncated completions out of the loss
    overlong_penalty: bool = False  # DAPO soft overlong punishment added to the reward
    overlong_max_len: int | None = None  # tokens, L_max of the soft penalty
    overlong_cache_len: int | None = None  # tokens, L_cache of the soft penalty

    def __post_init__(self):
        def fail(name: str, why: str):
            raise ValueError(f"RLConfig.{name}={getattr(self, name)!r} {why}")

        for name, options in (
            ("adv_estimator", ADV_ESTIMATORS),
            ("kl_estimator", KL_ESTIMATORS),
            ("loss_agg", LOSS_AGGS),
            ("policy_loss", POLICY_LOSSES),
            ("rollout_correction", ROLLOUT_CORRECTIONS),
        ):
            if getattr(self, name) not in options:
                fail(name, f"is not one of {options}")
        for name in ("dynamic_sampling", "overlong_filter", "overlong_penalty"):
            if not isinstance(getattr(self, name), bool):
                fail(name, "must be a bool")
        for name in ("adv_eps", "eps_low", "eps_high", "beta", "entropy_coef", "kl_cov_coef"):
            if not is_num(getattr(self, name)) or getattr(self, name) < 0:
                fail(name, "must be a finite number >= 0")
        if self.adv_std_ddof not in (0, 1) or not is_int(self.adv_std_ddof):
            fail("adv_std_ddof", "must be 0 (population std) or 1 (unbiased std, verl/TRL)")
        if not is_int(self.group_size) or self.group_size < 1:
            fail("group_size", "must be an int >= 1")
        if self.adv_estimator == "rloo" and self.group_size < 2:
            fail("group_size", "must be >= 2 for adv_estimator='rloo' (leave-one-out baseline)")
        if self.eps_low >= 1 and self.policy_loss != "cispo":
            fail("eps_low", "must be < 1 (the lower clip bound 1 - eps_low must be positive)")
        if self.dual_clip is not None and (not is_num(self.dual_clip) or self.dual_clip <= 1):
            fail("dual_clip", "must be None or a number > 1")
        if self.norm_len is not None and (not is_int(self.norm_len) or self.norm_len <= 0):
            fail("norm_len", "must be None or an int > 0")
        if self.loss_agg == "seq_mean_token_sum_norm" and self.norm_len is None:
            fail("norm_len", "must be set (an int > 0) when loss_agg='seq_mean_token_sum_norm'")
        for name in ("kl_cov_ratio", "clip_cov_ratio"):
            if not is_num(getattr(self, name)) or not 0 <= getattr(self, name) <= 1:
                fail(name, "must be a number in [0, 1]")
        for name in ("clip_cov_lb", "clip_cov_ub"):
            if not is_num(getattr(self, name)):
                fail(name, "must be a finite number")
        if self.clip_cov_ub <= self.clip_cov_lb:
            fail("clip_cov_ub", f"must be > clip_cov_lb={self.clip_cov_lb!r}")
        if self.policy_loss in ("kl_cov", "gspo", "cispo") and self.dual_clip is not None:
            fail("dual_clip", f"must be None with policy_loss={self.policy_loss!r} (PPO clip only)")
        if self.policy_loss == "gspo" and self.loss_agg != "seq_mean_token_mean":
            fail("loss_agg", "must be 'seq_mean_token_mean' with policy_loss='gspo' (as verl)")
        for name in ("rollout_clip_low", "rollout_clip_high"):
            if not is_num(getattr(self, name)) or getattr(self, name) < 0:
                fail(name, "must be a finite number >= 0")
        # The band must hold on-policy tokens, whose weight is 1.
        if self.rollout_clip_low > 1:
            fail("rollout_clip_low", "must be <= 1 (an on-policy token's weight is 1)")
        if self.rollout_clip_high < 1:
            fail("rollout_clip_high", "must be >= 1 (an on-policy token's weight is 1)")
        if not is_int(self.num_updates) or self.num_updates < 1:
            fail("num_updates", "must be an int >= 1")
        if not is_int(self.max_resample_rounds) or self.max_resample_rounds < 0:
            fail("max_resample_rounds", "must be an int >= 0")
        for name in ("overlong_max_len", "overlong_cache_len"):
            value = getattr(self, name)
            if value is not None and (not is_int(value) or value <= 0):
                fail(name, "must be None or an int > 0")
        if self.overlong_penalty:
            if self.overlong_max_len is None or self.overlong_cache_len is None:
                fail("overlong_penalty", "needs overlong_max_len and overlong_cache_len set")
            if self.overlong_cache_len > self.overlong_max_len:
                fail("overlong_cache_len", f"must be <= overlong_max_len={self.overlong_max_len}")

    @property
    def needs_reference(self) -> bool:
        """Whether the loss has a KL term, hence needs reference-policy log-probs."""
        return self.beta > 0
