"""On-policy distillation (OPD): per-token reverse-KL advantages against a teacher, the hybrid
GRPO + OPD advantage, and the TOPD / POPD rollout horizons (docs/opd.md).
"""

# pylint: disable=invalid-name
from __future__ import annotations

import dataclasses
import fractions
import math

import chex
import jax
import jax.numpy as jnp

from rlvr_jax.objectives import batch as batch_lib
from rlvr_jax.objectives import forward as forward_lib
from rlvr_jax.objectives import hooks
from rlvr_jax.values import is_int, is_num

HORIZONS = ("full", "truncated", "linear", "staged")


def opd_advantages(
    logps_BxTc: jax.Array, teacher_logps_BxTc: jax.Array, mask_BxTc: jax.Array
) -> jax.Array:
    """A_t = -(log pi_theta(y_t|s_t) - log pi_T(y_t|s_t)), discount 0, float32, 0 on padding.

    Thinking Machines, "On-Policy Distillation" (Lu et al., 2025): minus the one-sample estimate of
    the per-token reverse KL(pi_theta || pi_T), each token graded on its own step (no return-to-go).
    It replaces the RL advantage in `policy_loss`, which treats it as a constant.
    """
    chex.assert_rank(logps_BxTc, 2)
    chex.assert_equal_shape([logps_BxTc, teacher_logps_BxTc, mask_BxTc])
    diff_BxTc = teacher_logps_BxTc.astype(jnp.float32) - logps_BxTc.astype(jnp.float32)
    # where, not multiply: a -inf log-prob on a padded slot must not become nan.
    return jnp.where(mask_BxTc.astype(bool), diff_BxTc, 0.0)


def mix_advantages(
    grpo_adv_B: jax.Array, opd_adv_BxTc: jax.Array, mask_BxTc: jax.Array, lambda_opd: float
) -> jax.Array:
    """Hybrid A_t = A^GRPO + lambda_opd * A^OPD_t (slime `--use-opd`), float32, 0 on padding.

    The sequence advantage A^GRPO (one per rollout) is broadcast over the rollout's tokens.
    """
    chex.assert_rank([grpo_adv_B, opd_adv_BxTc], [1, 2])
    chex.assert_equal_shape([opd_adv_BxTc, mask_BxTc])
    chex.assert_equal_shape_prefix([grpo_adv_B, opd_adv_BxTc], 1)
    seq_BxTc = jnp.broadcast_to(grpo_adv_B.astype(jnp.float32)[:, None], opd_adv_BxTc.shape)
    adv_BxTc = seq_BxTc + jnp.float32(lambda_opd) * opd_adv_BxTc.astype(jnp.float32)
    return jnp.where(mask_BxTc.astype(bool), adv_BxTc, 0.0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class OPDConfig:
    """On-policy distillation knobs. Frozen and hashable: a static jit argument.

    Pure OPD (`mix_grpo=False`) uses A_t = opd_advantages(...) alone, with no GRPO term and no
    reward; `lambda_opd` is then unused. `mix_grpo=True` uses the hybrid mix_advantages(...), which
    needs rewards, hence full rollouts. The horizon schedule sets the sampler's max_new_tokens per
    step (`horizon_tokens`); each distinct horizon is one sampler compile, so a "linear" ramp
    compiles up to ramp_steps + 1 times and "staged" once per stage.
    """

    enabled: bool = False
    teacher: str = ""  # HF folder of the teacher (shares the student's tokenizer)
    lambda_opd: float = 1.0  # weight of the OPD term in the hybrid advantage (mix_grpo only)
    mix_grpo: bool = False  # True: A_t = A^GRPO + lambda_opd * A^OPD_t
    horizon: str = "full"  # one of HORIZONS: full L, TOPD truncated, POPD linear or staged
    rho: float = 0.1  # TOPD: distill the first ceil(rho * L) tokens, fraction in (0, 1]
    h0_frac: float = 0.1  # linear POPD: H_0 = ceil(h0_frac * L), fraction in (0, 1]
    ramp_steps: int = 100  # linear POPD: steps K_ramp for the horizon to reach L
    # staged POPD: (start_step, fraction of L) pairs; the first starts at step 0.
    stages: tuple[tuple[int, float], ...] = ((0, 0.1), (25, 0.25), (50, 0.5), (75, 1.0))

    def __post_init__(self):
        def fail(name: str, why: str):
            raise ValueError(f"OPDConfig.{name}={getattr(self, name)!r} {why}")

        for name in ("enabled", "mix_grpo"):
            if not isinstance(getattr(self, name), bool):
                fail(name, "must be a bool")
        if not is_num(self.lambda_opd) or self.lambda_opd < 0:
            fail("lambda_opd", "must be a finite number >= 0")
        if self.horizon not in HORIZONS:
            fail("horizon", f"is not one of {HORIZONS}")
        for name in ("rho", "h0_frac"):
            if not is_num(getattr(self, name)) or not 0 < getattr(self, name) <= 1:
                fail(name, "must be a fraction in (0, 1]")
        if not is_int(self.ramp_steps) or self.ramp_steps < 1:
            fail("ramp_steps", "must be an int >= 1")
        try:
            # Lists (from a JSON or ConfigDict round trip) become tuples: the config stays hashable.
            stages = tuple((start, frac) for start, frac in self.stages)
        except (TypeError, ValueError):
            fail("stages", "must be a sequence of (start_step, fraction) pairs")
        if not stages or stages[0][0] != 0:
            fail("stages", "must be non-empty and start at step 0")
        for start, frac in stages:
            if not is_int(start) or start < 0 or not is_num(frac) or not 0 < frac <= 1:
                fail("stages", "needs int start_step >= 0 and fraction in (0, 1] in every pair")
        for (s0, f0), (s1, f1) in zip(stages, stages[1:], strict=False):
            if s1 <= s0 or f1 < f0:
                fail("stages", "needs strictly increasing start steps, non-decreasing fractions")
        object.__setattr__(self, "stages", stages)


def _ceil_frac(frac: float, full_len: int) -> int:
    """ceil(frac * L) in [1, L], exact: the decimal `frac` spells, so 0.1 * 30 is 3, not 4."""
    tokens = math.ceil(fractions.Fraction(str(frac)) * full_len)
    return min(full_len, max(1, tokens))


def horizon_tokens(cfg: OPDConfig, step: int, full_len: int) -> int:
    """H_k, the number of completion tokens to sample and distill at training step `step`.

    full: L.  truncated (TOPD): ceil(rho * L).  linear (POPD): min(L, ceil(H_0 + (L - H_0) * k /
    K_ramp)) with H_0 = ceil(h0_frac * L).  staged (POPD): ceil(f * L) for the last stage whose
    start_step <= k.  Always an int in [1, L] (arXiv 2605.31490; the schedule is our
    formalization, docs/opd.md). Host-side Python: the sampler's max_new_tokens is static.
    """
    if not is_int(full_len) or full_len < 1:
        raise ValueError(f"full_len must be an int >= 1, got {full_len!r}")
    if not is_int(step) or step < 0:
        raise ValueError(f"step must be an int >= 0, got {step!r}")
    if cfg.horizon == "full":
        return full_len
    elif cfg.horizon == "truncated":
        return _ceil_frac(cfg.rho, full_len)
    elif cfg.horizon == "linear":
        h0 = _ceil_frac(cfg.h0_frac, full_len)
        ramp = fractions.Fraction((full_len - h0) * min(step, cfg.ramp_steps), cfg.ramp_steps)
        return min(full_len, h0 + math.ceil(ramp))
    elif cfg.horizon == "staged":
        frac = [f for start, f in cfg.stages if start <= step][-1]
        return _ceil_frac(frac, full_len)
    raise ValueError(f"OPDConfig.horizon={cfg.horizon!r} is not one of {HORIZONS}")


def compute(
    cfg: OPDConfig,
    logps_BxTc: jax.Array,
    teacher_logps_BxTc: jax.Array,
    mask_BxTc: jax.Array,
    grpo_adv_B: jax.Array | None = None,
) -> jax.Array:
    """The per-token advantage `cfg` asks for: pure OPD, or the hybrid with `grpo_adv_B`."""
    opd_adv_BxTc = opd_advantages(logps_BxTc, teacher_logps_BxTc, mask_BxTc)
    if not cfg.mix_grpo:
        return opd_adv_BxTc
    if grpo_adv_B is None:
        raise ValueError("OPDConfig.mix_grpo=True needs grpo_adv_B")
    return mix_advantages(grpo_adv_B, opd_adv_BxTc, mask_BxTc, cfg.lambda_opd)


# --- The loop's side: horizon per step, teacher advantages per mini-batch (objectives/hooks.py) ---


class OPDHook(hooks.Hook):
    """On-policy distillation: the TOPD/POPD horizon sets each step's sampler budget, and a frozen
    teacher scores each mini-batch for the per-token advantage (optionally mixed with GRPO's)."""

    def __init__(self, cfg: OPDConfig, teacher, teacher_logps_fn):
        self.cfg, self.teacher, self.logps_fn = cfg, teacher, teacher_logps_fn
        self._horizon = 0

    def sampling(self, cfg, step):
        """The sampler config of RL step `step` (1-based)."""
        self._horizon = horizon_tokens(self.cfg, step - 1, cfg.max_new_tokens)
        return dataclasses.replace(cfg, max_new_tokens=self._horizon)

    def batch(self, r, batch, params):
        del r, params
        return batch, {"opd/horizon": self._horizon}

    def minibatch(self, part):
        """The mini-batch with OPD's per-token advantage, and the teacher-student reverse-KL
        estimate on the sampled tokens."""
        teacher_logps_BxTc = self.logps_fn(
            self.teacher.params,
            part.prompt_BxTp,
            part.prompt_mask_BxTp,
            part.completion_BxTc,
            batch_lib.attention_mask(part),
        )
        mask = part.completion_mask_BxTc
        grpo_B = None
        if self.cfg.mix_grpo:
            grpo_B = forward_lib.sequence_advantages(part.adv_BxTc, mask)
        adv_BxTc = compute(self.cfg, part.old_logps_BxTc, teacher_logps_BxTc, mask, grpo_B)
        count = jnp.maximum(jnp.sum(mask), 1)
        rkl = jnp.sum(jnp.where(mask, part.old_logps_BxTc - teacher_logps_BxTc, 0.0))
        return part.replace(adv_BxTc=adv_BxTc), {"opd/reverse_kl": rkl / count}
