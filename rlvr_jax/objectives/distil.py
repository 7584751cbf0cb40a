"""DistIL: forward cross-entropy to a feedback-conditioned, stop-gradient teacher over on-policy
prefixes, with an optional REINFORCE term on the cross-entropy return-to-go (docs/distil.md).

Agrawal, Fein-Ashley, Rashidinejad, "Reinforcement Learning from Rich Feedback with Distributional
DAgger" (arXiv 2606.05152). No official code exists: the top-k teacher, the group-mean baseline and
the token-mean normalisation are a formalization (docs/distil.md), with their knobs in DistilConfig.
"""

# pylint: disable=invalid-name
from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np

from rlvr_jax import distributed, sampling
from rlvr_jax.data import feedback as feedback_lib
from rlvr_jax.objectives import forward as forward_lib
from rlvr_jax.objectives import hooks
from rlvr_jax.objectives import term as term_lib
from rlvr_jax.values import is_int, is_num

FEEDBACKS = ("verifier", "sibling", "reference")  # data/feedback.py FEEDBACKS, kept equal by a test
TEACHERS = ("self", "model")


def topk_teacher(teacher_logits_BxTxV: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """The teacher's k most likely tokens (int32) and their probabilities renormalised to sum to 1.

    softmax over the k top logits equals p_E(a) / sum_topk p_E, and never underflows to 0 / 0.
    Both outputs are stop-gradient: the teacher is a fixed target.
    """
    chex.assert_rank(teacher_logits_BxTxV, 3)
    V = teacher_logits_BxTxV.shape[-1]
    if not 1 <= k <= V:
        raise ValueError(f"top-k needs 1 <= k <= V={V}, got k={k}")
    logits_BxTxV = jax.lax.stop_gradient(teacher_logits_BxTxV).astype(jnp.float32)
    top_BxTxK, ids_BxTxK = jax.lax.top_k(logits_BxTxV, k)
    return ids_BxTxK.astype(jnp.int32), jax.nn.softmax(top_BxTxK, axis=-1)


def _topk_logps(student_logits_BxTxV: jax.Array, ids_BxTxK: jax.Array) -> jax.Array:
    """log pi_theta(a|s_t) at the teacher's top-k ids, float32 (fp32 log_softmax under bf16)."""
    logp_BxTxV = jax.nn.log_softmax(student_logits_BxTxV.astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(logp_BxTxV, ids_BxTxK, axis=-1)


def _ce(logp_BxTxK: jax.Array, probs_BxTxK: jax.Array, mask_BxTc: jax.Array) -> jax.Array:
    # Zero teacher probs on padding before the product: a nan there would give 0 * nan = nan
    # gradients even though the forward where drops it. p = 0 terms are 0 even at log pi = -inf.
    p_BxTxK = jnp.where(mask_BxTc[..., None], jax.lax.stop_gradient(probs_BxTxK), 0.0)
    p_BxTxK = p_BxTxK.astype(jnp.float32)
    ce_BxTc = -jnp.sum(jnp.where(p_BxTxK > 0, p_BxTxK * logp_BxTxK, 0.0), axis=-1)
    return jnp.where(mask_BxTc, ce_BxTc, 0.0)


def _check_topk(student_logits_BxTxV, ids_BxTxK, probs_BxTxK, mask_BxTc) -> None:
    chex.assert_rank([student_logits_BxTxV, ids_BxTxK, probs_BxTxK, mask_BxTc], [3, 3, 3, 2])
    chex.assert_equal_shape([ids_BxTxK, probs_BxTxK])
    chex.assert_equal_shape_prefix([student_logits_BxTxV, ids_BxTxK], 2)
    chex.assert_equal_shape_prefix([student_logits_BxTxV, mask_BxTc], 2)


def forward_ce(
    student_logits_BxTxV: jax.Array,
    ids_BxTxK: jax.Array,
    probs_BxTxK: jax.Array,
    mask_BxTc: jax.Array,
) -> jax.Array:
    """H_t = -sum_{a in topk} p_E(a) log pi_theta(a|s_t), float32, 0 on padding.

    The forward (mass-covering) cross-entropy H^x(sg[pi_E], pi_theta) restricted to the teacher's
    renormalised top-k; its gradient wrt the student logits is softmax(student) - p_E (scattered).
    """
    _check_topk(student_logits_BxTxV, ids_BxTxK, probs_BxTxK, mask_BxTc)
    logp_BxTxK = _topk_logps(student_logits_BxTxV, ids_BxTxK)
    return _ce(logp_BxTxK, probs_BxTxK, mask_BxTc.astype(bool))


def return_to_go(ce_BxTc: jax.Array, mask_BxTc: jax.Array) -> jax.Array:
    """rtg_t = sum_{t' > t} H_t' over valid positions (strictly future), float32, 0 on padding."""
    chex.assert_rank(ce_BxTc, 2)
    chex.assert_equal_shape([ce_BxTc, mask_BxTc])
    mask_BxTc = mask_BxTc.astype(bool)
    x_BxTc = jnp.where(mask_BxTc, ce_BxTc.astype(jnp.float32), 0.0)
    suffix_BxTc = jnp.flip(jnp.cumsum(jnp.flip(x_BxTc, axis=1), axis=1), axis=1)  # sum_{t' >= t}
    # Shift by one instead of subtracting x_t: exactly 0 at the last token, no cancellation.
    future_BxTc = jnp.concatenate([suffix_BxTc[:, 1:], jnp.zeros_like(suffix_BxTc[:, :1])], axis=1)
    return jnp.where(mask_BxTc, future_BxTc, 0.0)


def group_baseline(rtg_BxTc: jax.Array, mask_BxTc: jax.Array, G: int) -> jax.Array:
    """b_t: per-position mean of rtg over the G rollouts of a prompt that are valid at t.

    Rows p*G .. p*G+G-1 are prompt p's group. The mean includes the rollout itself (as GRPO's
    does), so G = 1 gives b = rtg and no sequence-term signal. float32, 0 on padding.
    """
    chex.assert_rank(rtg_BxTc, 2)
    chex.assert_equal_shape([rtg_BxTc, mask_BxTc])
    B, Tc = rtg_BxTc.shape
    if G < 1 or B % G:
        raise ValueError(f"batch of {B} rollouts is not a multiple of G={G}")
    mask_PxGxTc = mask_BxTc.astype(bool).reshape(-1, G, Tc)
    x_PxGxTc = jnp.where(mask_PxGxTc, rtg_BxTc.astype(jnp.float32).reshape(-1, G, Tc), 0.0)
    n_Px1xTc = jnp.sum(mask_PxGxTc, axis=1, keepdims=True)
    mean_Px1xTc = jnp.sum(x_PxGxTc, axis=1, keepdims=True) / jnp.maximum(n_Px1xTc, 1)
    b_PxGxTc = jnp.broadcast_to(mean_Px1xTc, mask_PxGxTc.shape)
    return jnp.where(mask_PxGxTc, b_PxGxTc, 0.0).reshape(B, Tc)


def _token_mean(x_BxTc: jax.Array, mask_BxTc: jax.Array) -> jax.Array:
    return jnp.sum(jnp.where(mask_BxTc, x_BxTc, 0.0)) / jnp.maximum(jnp.sum(mask_BxTc), 1)


def distil_loss(
    student_logits_BxTxV: jax.Array,
    student_logps_BxTc: jax.Array,
    ids_BxTxK: jax.Array,
    probs_BxTxK: jax.Array,
    mask_BxTc: jax.Array,
    *,
    G: int,
    sequence_term: bool,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The DistIL loss to minimise, and float32 metrics (masked token means).

    loss = mean_t H_t                                          (token-local forward CE)
         + mean_t sg[rtg_t - b_t] * log pi_theta(y_t|s_t)      (if sequence_term)
    with rtg_t = sum_{t'>t} H_t' and b_t the group baseline, so the gradient is docs/distil.md's
    sum_t grad H_t + sum_t grad log pi(y_t) (sum_{t'>t} H_t' - b_t), over the valid-token count.
    `student_logps_BxTc` are log pi_theta of the sampled tokens y_t, from the same forward pass as
    the logits (differentiable). Metrics: distil/ce, distil/rtg, distil/baseline,
    distil/seq_adv_abs, distil/seq_loss, distil/student_topk_mass.
    """
    _check_topk(student_logits_BxTxV, ids_BxTxK, probs_BxTxK, mask_BxTc)
    # One [B, T, V] log_softmax serves the loss and the top-k mass metric.
    logp_BxTxK = _topk_logps(student_logits_BxTxV, ids_BxTxK)
    return distil_loss_from_topk(
        logp_BxTxK,
        student_logps_BxTc,
        probs_BxTxK,
        mask_BxTc,
        G=G,
        sequence_term=sequence_term,
    )


def distil_loss_from_topk(
    logp_BxTxK: jax.Array,
    student_logps_BxTc: jax.Array,
    probs_BxTxK: jax.Array,
    mask_BxTc: jax.Array,
    *,
    G: int,
    sequence_term: bool,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`distil_loss` given the student's log-probs at the teacher's top-k ids (float32 [B, T, k],
    differentiable) instead of its full logits: what the train step's chunked LM head gives
    (forward.completion_forward's gathered_logps_BxTcxK)."""
    chex.assert_rank([logp_BxTxK, student_logps_BxTc], [3, 2])
    chex.assert_equal_shape([student_logps_BxTc, mask_BxTc])
    chex.assert_equal_shape([logp_BxTxK, probs_BxTxK])
    mask_BxTc = mask_BxTc.astype(bool)
    sg = jax.lax.stop_gradient
    ce_BxTc = _ce(logp_BxTxK, probs_BxTxK, mask_BxTc)
    loss = _token_mean(ce_BxTc, mask_BxTc)

    mass_BxTc = jnp.sum(jnp.exp(sg(logp_BxTxK)), axis=-1)  # student mass on the teacher's top-k
    rtg_BxTc = return_to_go(sg(ce_BxTc), mask_BxTc)
    b_BxTc = group_baseline(rtg_BxTc, mask_BxTc, G)
    adv_BxTc = sg(rtg_BxTc - b_BxTc)  # REINFORCE coefficient: a constant
    metrics = {
        "distil/ce": _token_mean(ce_BxTc, mask_BxTc),
        "distil/rtg": _token_mean(rtg_BxTc, mask_BxTc),
        "distil/baseline": _token_mean(b_BxTc, mask_BxTc),
        "distil/seq_adv_abs": _token_mean(jnp.abs(adv_BxTc), mask_BxTc),
        "distil/student_topk_mass": _token_mean(mass_BxTc, mask_BxTc),
    }
    if sequence_term:
        logps_BxTc = jnp.where(mask_BxTc, student_logps_BxTc.astype(jnp.float32), 0.0)
        seq_loss = _token_mean(adv_BxTc * logps_BxTc, mask_BxTc)
        metrics["distil/seq_loss"] = seq_loss
        loss = loss + seq_loss
    return loss, jax.tree.map(lambda m: sg(m).astype(jnp.float32), metrics)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DistilConfig:
    """DistIL knobs. Frozen and hashable: a static jit argument.

    The teacher is pi_E(. | x, f, y_<t): the student itself with the feedback f in its prompt
    ("self", one extra forward pass, no gradient) or a separate frozen model ("model") sharing
    the tokenizer. The train loss is coef * distil_loss + grpo_coef * (GRPO policy loss).
    """

    enabled: bool = False
    top_k: int = 20  # teacher tokens kept per position, renormalised (docs/distil.md: 20-100)
    sequence_term: bool = False  # add the REINFORCE term on the CE return-to-go
    coef: float = 1.0  # weight of the DistIL loss
    feedback: str = "verifier"  # one of FEEDBACKS: verifier hint, correct sibling, reference
    teacher: str = "self"  # one of TEACHERS
    teacher_path: str = ""  # HF folder when teacher == "model"
    grpo_coef: float = 0.0  # weight of the GRPO policy loss mixed in; 0 = pure DistIL

    def __post_init__(self):
        def fail(name: str, why: str):
            raise ValueError(f"DistilConfig.{name}={getattr(self, name)!r} {why}")

        for name in ("enabled", "sequence_term"):
            if not isinstance(getattr(self, name), bool):
                fail(name, "must be a bool")
        if not is_int(self.top_k) or self.top_k < 1:
            fail("top_k", "must be an int >= 1")
        for name in ("coef", "grpo_coef"):
            if not is_num(getattr(self, name)) or getattr(self, name) < 0:
                fail(name, "must be a finite number >= 0")
        if self.feedback not in FEEDBACKS:
            fail("feedback", f"is not one of {FEEDBACKS}")
        if self.teacher not in TEACHERS:
            fail("teacher", f"is not one of {TEACHERS}")


@dataclasses.dataclass(frozen=True)
class DistilTerm(term_lib.LossTerm):
    """DistIL inside the train step: forward CE to the teacher top-k in the batch, weighted
    against the policy-gradient loss by `coef` / `grpo_coef`."""

    cfg: DistilConfig

    def check(self, num_micro):
        if self.cfg.sequence_term and num_micro > 1:
            raise ValueError("DistIL's sequence term needs whole groups: use one micro-batch")

    def loss(self, fwd, mb, loss, *, G):
        # The train step's forward gathered the student's log-probs at the batch's teacher ids.
        d_loss, metrics = distil_loss_from_topk(
            fwd.gathered_logps_BxTcxK,
            fwd.logps_BxTc,
            mb.teacher_probs_BxTcxK,
            mb.completion_mask_BxTc,
            G=G,
            sequence_term=self.cfg.sequence_term,
        )
        return self.cfg.grpo_coef * loss + self.cfg.coef * d_loss, metrics


# --- The loop's side: the teacher's top-k targets of a rollout (objectives/hooks.py) ---


def make_topk_fn(model_cfg, temperature: float, k: int, param_shardings):
    """Jitted teacher top-k (ids, renormalised probs) [B, Tc, k] at the completion positions."""
    # The forward pass takes the top-k itself (per LM-head chunk under model_cfg.logits_chunk),
    # as topk_teacher does over the full logits.
    return forward_lib.make_completion_fn(
        lambda fwd: (fwd.top_ids_BxTcxK, fwd.top_probs_BxTcxK),
        model_cfg=model_cfg,
        temperature=temperature,
        param_shardings=param_shardings,
        top_k=k,
    )


class DistilTargets(hooks.Hook):
    """The teacher reads each rollout's prompt plus its feedback (docs/distil.md), then the
    student's completion; its top-k distribution at each completion position goes into the batch.
    The teacher is the policy itself (`teacher=None`: the current params) or a frozen model."""

    def __init__(self, cfg, *, tok, system, G, sampling_cfg, mesh, topk_fn, teacher=None):
        self.cfg, self.tok, self.system, self.G = cfg, tok, system, G
        self.sampling_cfg, self.mesh, self.topk_fn, self.teacher = (
            sampling_cfg,
            mesh,
            topk_fn,
            teacher,
        )

    def batch(self, r, batch, params):
        teacher_params = params if self.teacher is None else self.teacher.params
        prompts: list[list[int]] = []
        for p, ex in enumerate(r.examples):
            rows = slice(p * self.G, (p + 1) * self.G)
            fbs = feedback_lib.group_feedback(
                self.cfg.feedback, ex, r.texts[rows], r.correct_B[rows], r.verdicts[rows]
            )
            for fb in fbs:
                prompt = feedback_lib.feedback_prompt(ex.prompt, fb)
                prompts.append(self.tok.apply_chat_template(prompt, system=self.system))
        fb_BxTf, fb_mask_BxTf = sampling.pad_prompts(prompts, self.sampling_cfg)
        n = len(prompts)
        rows = (fb_BxTf, fb_mask_BxTf, batch.completion_BxTc, batch.completion_mask_BxTc)
        args = distributed.pad_to_shards(rows, self.mesh)
        ids, probs = distributed.local_rows(
            self.topk_fn(teacher_params, *distributed.global_rows(args, self.mesh)), self.mesh
        )
        ids, probs = np.asarray(ids)[:n], np.asarray(probs)[:n]
        return batch.replace(teacher_ids_BxTcxK=ids, teacher_probs_BxTcxK=probs), {}
