"""DistIL: top-k renormalisation, forward CE against numpy, return-to-go and group baseline by
hand, the local-term gradient softmax(student) - p_E, the sequence term, padding invariance."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlvr_jax.data import feedback
from rlvr_jax.objectives import distil
from rlvr_jax.objectives import policy_loss as pl

# Jitted once per signature: on a small CPU, eager mode compiles every primitive separately.
TOPK = jax.jit(distil.topk_teacher, static_argnums=1)
FORWARD_CE = jax.jit(distil.forward_ce)
RETURN_TO_GO = jax.jit(distil.return_to_go)
BASELINE = jax.jit(distil.group_baseline, static_argnames="G")


def _logits(seed, B=4, T=5, V=11, scale=2.0):
    # numpy, not jax.random: eager jax ops each compile, and the file must stay fast.
    rng = np.random.default_rng(seed)
    return tuple(jnp.asarray(scale * rng.standard_normal((B, T, V)), jnp.float32) for _ in "ts")


def _np_log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def test_topk_renormalises_the_teacher():
    logits_1x1x4 = jnp.log(jnp.array([[[0.1, 0.4, 0.2, 0.3]]]))
    ids_1x1xK, probs_1x1xK = TOPK(logits_1x1x4, 2)
    assert ids_1x1xK.dtype == jnp.int32 and probs_1x1xK.dtype == jnp.float32
    np.testing.assert_array_equal(ids_1x1xK, [[[1, 3]]])
    np.testing.assert_allclose(probs_1x1xK, [[[4 / 7, 3 / 7]]], rtol=1e-6)
    teacher_BxTxV, _ = _logits(0)
    ids_BxTxK, probs_BxTxK = TOPK(teacher_BxTxV.astype(jnp.bfloat16), 5)
    assert ids_BxTxK.shape == probs_BxTxK.shape == (4, 5, 5)
    np.testing.assert_allclose(probs_BxTxK.sum(-1), 1.0, rtol=1e-6)
    # k = V keeps the whole distribution.
    _, full_BxTxV = TOPK(teacher_BxTxV, 11)
    np.testing.assert_allclose(full_BxTxV.sum(-1), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="k=12"):
        TOPK(teacher_BxTxV, 12)


def test_forward_ce_matches_numpy():
    teacher_BxTxV, student_BxTxV = _logits(1)
    mask_BxTc = jnp.arange(5)[None, :] < jnp.array([5, 2, 0, 4])[:, None]
    ids_BxTxK, probs_BxTxK = TOPK(teacher_BxTxV, 3)
    ce_BxTc = FORWARD_CE(student_BxTxV, ids_BxTxK, probs_BxTxK, mask_BxTc)
    logp = _np_log_softmax(np.asarray(student_BxTxV, np.float64))
    gathered = np.take_along_axis(logp, np.asarray(ids_BxTxK), axis=-1)
    expected = -(np.asarray(probs_BxTxK) * gathered).sum(-1) * np.asarray(mask_BxTc)
    assert ce_BxTc.dtype == jnp.float32
    np.testing.assert_allclose(ce_BxTc, expected, rtol=1e-5, atol=1e-6)


def test_return_to_go_and_group_baseline_by_hand():
    ce_4x3 = jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 9.0], [1.0, 1.0, 1.0], [2.0, 0.0, 6.0]])
    mask_4x3 = jnp.array([[1, 1, 1], [1, 1, 0], [1, 1, 1], [0, 0, 0]])
    rtg = RETURN_TO_GO(ce_4x3, mask_4x3)
    # Strictly future, padded CE (the 9 and row 3) never counted.
    np.testing.assert_array_equal(rtg, [[5, 3, 0], [5, 0, 0], [2, 1, 0], [0, 0, 0]])
    b = BASELINE(rtg, mask_4x3, G=2)
    # Group 0: t0 (5+5)/2, t1 (3+0)/2, t2 only row 0 valid -> 0. Group 1: row 3 is all padding.
    np.testing.assert_array_equal(b, [[5, 1.5, 0], [5, 1.5, 0], [2, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(BASELINE(rtg, mask_4x3, G=1), rtg)
    with pytest.raises(ValueError, match="multiple of G=3"):
        BASELINE(rtg, mask_4x3, G=3)


def test_local_gradient_is_softmax_minus_teacher():
    teacher_BxTxV, student_BxTxV = _logits(2, B=2, T=3, V=6)
    mask_BxTc = jnp.array([[1, 1, 0], [1, 0, 0]])
    ids_BxTxK, probs_BxTxK = TOPK(teacher_BxTxV, 4)
    logps_BxTc = jnp.zeros((2, 3))  # unused by the local term

    def loss(s_BxTxV):
        return distil.distil_loss(
            s_BxTxV, logps_BxTc, ids_BxTxK, probs_BxTxK, mask_BxTc, G=2, sequence_term=False
        )[0]

    grad_BxTxV = jax.jit(jax.grad(loss))(student_BxTxV)
    p_E_BxTxV = np.zeros((2, 3, 6), np.float32)
    np.put_along_axis(p_E_BxTxV, np.asarray(ids_BxTxK), np.asarray(probs_BxTxK), axis=-1)
    # d mean_t H_t / d logits_t = (softmax - p_E) / #tokens on valid positions, 0 on padding.
    softmax = np.exp(_np_log_softmax(np.asarray(student_BxTxV, np.float64)))
    expected = (softmax - p_E_BxTxV) / 3.0 * np.asarray(mask_BxTc)[..., None]
    np.testing.assert_allclose(grad_BxTxV, expected, atol=1e-6)


def _sequence_inputs(seed):
    teacher_BxTxV, student_BxTxV = _logits(seed)
    tokens_BxTc = jnp.asarray(np.random.default_rng(seed + 100).integers(0, 11, (4, 5)))
    mask_BxTc = jnp.arange(5)[None, :] < jnp.array([5, 3, 4, 2])[:, None]
    ids_BxTxK, probs_BxTxK = TOPK(teacher_BxTxV, 3)
    return student_BxTxV, tokens_BxTc, ids_BxTxK, probs_BxTxK, mask_BxTc


@functools.partial(jax.jit, static_argnames="sequence_term")
def _loss_and_grad(student_BxTxV, tokens_BxTc, ids, probs, mask, *, sequence_term):
    """(loss, metrics), d loss / d student logits, with log pi(y_t) from the same logits."""

    def loss(s_BxTxV):
        logps_BxTc = pl.token_logps(s_BxTxV, tokens_BxTc)
        return distil.distil_loss(
            s_BxTxV, logps_BxTc, ids, probs, mask, G=2, sequence_term=sequence_term
        )

    return jax.value_and_grad(loss, has_aux=True)(student_BxTxV)


def test_sequence_term_off_and_on():
    student, tokens, ids, probs, mask = _sequence_inputs(3)
    (off, m_off), grad_off = _loss_and_grad(student, tokens, ids, probs, mask, sequence_term=False)
    (on, m_on), grad_on = _loss_and_grad(student, tokens, ids, probs, mask, sequence_term=True)
    assert "distil/seq_loss" not in m_off
    np.testing.assert_allclose(off, m_off["distil/ce"], rtol=1e-6)
    np.testing.assert_allclose(on, m_on["distil/ce"] + m_on["distil/seq_loss"], rtol=1e-6)

    # The REINFORCE coefficient is a constant: the sequence term's gradient is
    # mean_t (rtg_t - b_t) * grad log pi(y_t), with rtg and b from numpy.
    ce = np.asarray(FORWARD_CE(student, ids, probs, mask), np.float64)
    m = np.asarray(mask)
    rtg = np.concatenate([np.cumsum(ce[:, ::-1], 1)[:, ::-1][:, 1:], np.zeros((4, 1))], 1) * m
    g_rtg, g_m = rtg.reshape(2, 2, 5), m.reshape(2, 2, 5)
    base = (g_rtg.sum(1, keepdims=True) / np.maximum(g_m.sum(1, keepdims=True), 1)) * g_m
    coef_BxTc = jnp.asarray((rtg - base.reshape(4, 5)) * m, jnp.float32)

    @jax.jit
    @jax.grad
    def surrogate_grad(s_BxTxV):
        return jnp.sum(coef_BxTc * pl.token_logps(s_BxTxV, tokens)) / m.sum()

    np.testing.assert_allclose(grad_on - grad_off, surrogate_grad(student), atol=1e-5)
    np.testing.assert_allclose(m_on["distil/rtg"], rtg.sum() / m.sum(), rtol=1e-5)
    # The sequence term does move the gradient (the check above is not vacuous).
    assert float(jnp.max(jnp.abs(grad_on - grad_off))) > 1e-4


@pytest.mark.parametrize("sequence_term", [False, True])
def test_padding_never_changes_the_loss(sequence_term):
    student, tokens, ids, probs, mask = _sequence_inputs(4)
    pad = np.asarray(~mask)
    # Garbage on padded slots: other logits, teacher ids and probs (even nan), tokens.
    student2 = jnp.where(pad[..., None], 100.0, student)
    probs2 = jnp.where(pad[..., None], jnp.nan, probs)
    ids2 = jnp.where(pad[..., None], 0, ids)
    tokens2 = jnp.where(pad, 7, tokens)
    fn = functools.partial(_loss_and_grad, sequence_term=sequence_term)
    (loss, metrics), _ = fn(student, tokens, ids, probs, mask)
    (loss2, metrics2), grad2 = fn(student2, tokens2, ids2, probs2, mask)
    np.testing.assert_allclose(loss2, loss, rtol=1e-6)
    for name in metrics:
        np.testing.assert_allclose(metrics2[name], metrics[name], rtol=1e-5, err_msg=name)
    assert np.all(np.isfinite(grad2)) and np.all(np.asarray(grad2)[pad] == 0.0)


def test_student_equal_to_full_teacher_is_a_stationary_point():
    teacher_BxTxV, _ = _logits(5, B=2, T=3, V=6)
    ids, probs = TOPK(teacher_BxTxV, 6)
    tokens = jnp.zeros((2, 3), jnp.int32)
    mask = jnp.ones((2, 3), bool)
    (_, metrics), grad = _loss_and_grad(
        teacher_BxTxV, tokens, ids, probs, mask, sequence_term=False
    )
    np.testing.assert_allclose(grad, 0.0, atol=1e-6)
    np.testing.assert_allclose(metrics["distil/student_topk_mass"], 1.0, rtol=1e-6)


def test_config_validation_and_feedback_kinds():
    assert hash(distil.DistilConfig()) == hash(distil.DistilConfig())
    assert distil.FEEDBACKS == feedback.FEEDBACKS
    for field, value in [
        ("enabled", 0),
        ("sequence_term", None),
        ("top_k", 0),
        ("top_k", 2.5),
        ("coef", -1.0),
        ("grpo_coef", float("inf")),
        ("feedback", "oracle"),
        ("teacher", "gpt"),
    ]:
        with pytest.raises(ValueError, match=rf"DistilConfig\.{field}="):
            distil.DistilConfig(**{field: value})
