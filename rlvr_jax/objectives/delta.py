"""DelTA's per-token coefficients (Zhang, Wu, Lin 2026, arXiv 2605.21467; docs/delta.md): token-
gradient proxies, advantage-weighted centroids, side margins and the self-normalised weights that
rescale the sequence advantage, A_{i,t} = omega_{i,t} * A_i. Also DeltaConfig and a logging metric.

The reference is the authors' released code (RUCBM/DelTA, verl-DelTA/verl/workers/actor/
dp_actor.py, DataParallelPPOActor.compute_log_prob_h; defaults from recipe/dapo/srcs/run_DelTA.sh),
reproduced by default, including its gamma schedule (see GAMMA_SCHEDULES).
"""

# pylint: disable=invalid-name
from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np

from rlvr_jax import distributed
from rlvr_jax import mesh as mesh_lib
from rlvr_jax.models import config as config_lib
from rlvr_jax.models import params as params_lib
from rlvr_jax.objectives import batch as batch_lib
from rlvr_jax.objectives import forward as forward_lib
from rlvr_jax.objectives import hooks
from rlvr_jax.objectives import term as term_lib
from rlvr_jax.values import is_int, is_num

# Guards on the centroid denominators and the margin variance (the released code's eps = 1e-8).
EPS = 1e-8
# f32 matmuls at full precision: TPU/GPU defaults (bf16 passes, TF32) would shift the margins.
_HIGHEST = jax.lax.Precision.HIGHEST
# Which margins the temperatures gamma+- are the std of, during and after the K refinement passes.
#   "released": the authors' code. Each pass soft-assigns with the gamma it holds, then sets gamma
#     to the std of the margins it just used (those of the centroids *before* its update), so
#     gamma trails the centroids by one pass: pass k uses the margins of mu_{k-1} over the std of
#     those of mu_{k-2} (mu_{-1} = mu_0), and the final coefficients use those of mu_K over the
#     std of those of mu_{K-1}. Identical to "current" at K = 0.
#   "current": every gamma is the std of the margins it divides (from the newest centroids), the
#     behaviour of this module before "released" became the default; up to ~0.1 apart at K = 1.
GAMMA_SCHEDULES = ("released", "current")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DeltaConfig:
    """DelTA's knobs (docs/delta.md; run_DelTA.sh defaults). Frozen, hashable: a static jit arg."""

    enabled: bool = False  # rescale the advantage per token by omega
    lam_min: float = 0.8  # lower end of the raw coefficient; zero-advantage responses get it
    lam_max: float = 1.2  # upper end of the raw coefficient
    iters: int = 1  # K, soft-assignment refinement passes of the centroids
    chunk: int = 0  # completion positions per step of the memory-efficient path; 0: direct
    gamma: str = "released"  # which margins gamma+- is the std of (GAMMA_SCHEDULES); authors'

    def __post_init__(self):
        def fail(name: str, why: str):
            raise ValueError(f"DeltaConfig.{name}={getattr(self, name)!r} {why}")

        if not isinstance(self.enabled, bool):
            fail("enabled", "must be a bool")
        for name in ("lam_min", "lam_max"):
            if not is_num(getattr(self, name)) or getattr(self, name) <= 0:
                fail(name, "must be a finite number > 0")
        if self.lam_max < self.lam_min:
            fail("lam_max", f"must be >= lam_min={self.lam_min!r}")
        for name in ("iters", "chunk"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 0:
                fail(name, "must be an int >= 0")
        if self.gamma not in GAMMA_SCHEDULES:
            fail("gamma", f"must be one of {GAMMA_SCHEDULES}")


def token_grad_proxy(p_BxT: jax.Array, h_BxTxD: jax.Array) -> jax.Array:
    """v = (1 - p) * h, float32: the gradient of log p(y_t) w.r.t. the sampled token's unembedding
    row, with p = pi(y_t | s_t) and h the final hidden state fed to the LM head (docs/delta.md,
    step 2)."""
    chex.assert_rank([p_BxT, h_BxTxD], [2, 3])
    chex.assert_equal_shape_prefix([p_BxT, h_BxTxD], 2)
    return (1.0 - p_BxT.astype(jnp.float32))[..., None] * h_BxTxD.astype(jnp.float32)


def _chunks(T: int, chunk: int) -> tuple[int, int]:
    """(chunk width c <= T, number of chunks). The last chunk is shifted left to end at T."""
    c = min(chunk, T)
    return c, -(-T // c)


def _chunk_at(i: jax.Array, c: int, T: int, *xs: jax.Array) -> tuple[jax.Array, ...]:
    """Chunk i of each x along axis 1, starting at min(i*c, T-c), and fresh_c: the positions that
    no earlier chunk covered (the shifted last chunk overlaps its neighbour: no padded v)."""
    start = jnp.minimum(i * c, T - c)
    fresh_c = start + jnp.arange(c) >= i * c
    return start, fresh_c, *(jax.lax.dynamic_slice_in_dim(x, start, c, axis=1) for x in xs)


def _clean(v_BxTxD: jax.Array, valid_BxT: jax.Array) -> jax.Array:
    # where, not a product: padded slots may hold nan/inf, and 0 * nan = nan.
    return jnp.where(valid_BxT[..., None], v_BxTxD.astype(jnp.float32), 0.0)


def _weighted_sums(
    v_BxTxD: jax.Array, valid_BxT: jax.Array, w_BxTx2: jax.Array, chunk: int
) -> jax.Array:
    """s_2xD[k] = sum over tokens of w[..., k] * v (w is 0 on padding)."""
    if chunk == 0:
        v_BxTxD = _clean(v_BxTxD, valid_BxT)
        return jnp.einsum("btk,btd->kd", w_BxTx2, v_BxTxD, precision=_HIGHEST)
    B, T, D = v_BxTxD.shape
    c, n = _chunks(T, chunk)

    def body(i, s_2xD):
        _, fresh_c, v_BxCxD, valid_BxC, w_BxCx2 = _chunk_at(i, c, T, v_BxTxD, valid_BxT, w_BxTx2)
        w_BxCx2 = jnp.where(fresh_c[None, :, None], w_BxCx2, 0.0)  # count overlap once
        v_BxCxD = _clean(v_BxCxD, valid_BxC)
        return s_2xD + jnp.einsum("bck,bcd->kd", w_BxCx2, v_BxCxD, precision=_HIGHEST)

    return jax.lax.fori_loop(0, n, body, jnp.zeros((2, D), jnp.float32))


def _sq_dists(v_BxTxD: jax.Array, valid_BxT: jax.Array, mu_2xD: jax.Array, chunk: int) -> jax.Array:
    """d_BxTx2[..., k] = ||v - mu_k||^2 (0-based v on padding, so always finite)."""
    if chunk == 0:
        v_BxTxD = _clean(v_BxTxD, valid_BxT)
        diff_BxTx2xD = v_BxTxD[:, :, None, :] - mu_2xD[None, None, :, :]
        return jnp.sum(jnp.square(diff_BxTx2xD), axis=-1)
    B, T, _ = v_BxTxD.shape
    c, n = _chunks(T, chunk)
    mm_2 = jnp.sum(jnp.square(mu_2xD), axis=-1)

    def body(i, d_BxTx2):
        start, _, v_BxCxD, valid_BxC = _chunk_at(i, c, T, v_BxTxD, valid_BxT)
        v_BxCxD = _clean(v_BxCxD, valid_BxC)
        # ||v - mu||^2 = ||v||^2 - 2 v.mu + ||mu||^2: no [tokens, 2, D] difference tensor.
        vv_BxCx1 = jnp.sum(jnp.square(v_BxCxD), axis=-1, keepdims=True)
        vm_BxCx2 = jnp.einsum("bcd,kd->bck", v_BxCxD, mu_2xD, precision=_HIGHEST)
        d_BxCx2 = jnp.maximum(vv_BxCx1 - 2.0 * vm_BxCx2 + mm_2[None, None, :], 0.0)
        # The shifted last chunk rewrites its overlap with identical values.
        return jax.lax.dynamic_update_slice_in_dim(d_BxTx2, d_BxCx2, start, axis=1)

    return jax.lax.fori_loop(0, n, body, jnp.zeros((B, T, 2), jnp.float32))


def _side_std(m_BxT: jax.Array, side_BxT: jax.Array) -> jax.Array:
    """Population std (ddof 0) of the margins over one side's valid tokens, at least sqrt(EPS).

    The released code's sqrt(clamp(E[m^2] - E[m]^2, eps)) with count >= 1, written two-pass: the
    same value, without the one-pass form's float32 cancellation when |mean| >> std."""
    n = jnp.maximum(jnp.sum(side_BxT), 1).astype(jnp.float32)
    mean = jnp.sum(jnp.where(side_BxT, m_BxT, 0.0)) / n
    var = jnp.sum(jnp.where(side_BxT, jnp.square(m_BxT - mean), 0.0)) / n
    return jnp.sqrt(jnp.maximum(var, EPS))


def coefficients(
    v_BxTxD: jax.Array,
    adv_B: jax.Array,
    mask_BxT: jax.Array,
    *,
    lam_min: float = 0.8,
    lam_max: float = 1.2,
    iters: int = 1,
    chunk: int = 0,
    gamma: str = "released",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """DelTA's self-normalised token coefficients omega_BxT (float32, 0 on padding) and stats.

    docs/delta.md, steps 3-7, over the valid tokens (mask_BxT) of the whole batch, as the released
    compute_log_prob_h does them (its d = 1, lam_w = 1, gamma_time = 1 are no-ops, left out):
      a+ = max(A, 0), a- = max(-A, 0);  mu+- = sum a+- v / sum a+-
      m = ||v - mu-||^2 - ||v - mu+||^2 in positive responses (signs swapped in negative ones)
      gamma+- = population std (ddof 0) of m over that side's tokens (variance >= EPS = 1e-8)
      K = iters times: q = sigmoid(m / gamma_side); mu+- = sum q a+- v / sum q a+-; then m is
        recomputed from the new centroids, and gamma as the `gamma` schedule says:
        "released" (default, the authors' code): gamma <- std of the margins this pass used, one
        pass behind the centroids; "current": gamma <- std of the new margins (GAMMA_SCHEDULES)
      omega_raw = lam_min + (lam_max - lam_min) sigmoid(m / gamma_side); lam_min where A = 0
      omega = omega_raw * N_valid / max(sum omega_raw, EPS)  (mean 1 over valid tokens, the
        zero-advantage ones included, as the released tk_sum / wht_sum)
    Centroid denominators are max(., EPS): an empty side has centroid 0 and gamma sqrt(EPS).
    chunk > 0 runs the memory-efficient variant: distances expanded algebraically, computed chunk
    completion positions at a time ([B, chunk, D] live besides v; B stays whole, so a batch-sharded
    v is never gathered). Everything is stop-gradient: the coefficients are constants of the loss.
    stats: "omega_raw" (the [B, T] un-normalised coefficients; pop it before logging) and float32
    scalars "delta/omega_{mean,std,min,max}" (normalised, over valid tokens), "delta/gamma_pos"
    and "delta/gamma_neg" (the ones the final coefficients divide by), "delta/centroid_dist" =
    ||mu*+ - mu*-|| = ||W||, "delta/disc_bias" b = -(||mu*+||^2 - ||mu*-||^2) / 2 and
    "delta/disc_acc", the share of signed tokens that the logged discriminator W.v + b puts on
    their own side (m > 0, as m = 2 sign(A) (W.v + b)).
    """
    chex.assert_rank([v_BxTxD, adv_B, mask_BxT], [3, 1, 2])
    chex.assert_equal_shape_prefix([v_BxTxD, mask_BxT], 2)
    chex.assert_shape(adv_B, mask_BxT.shape[:1])
    if not is_int(iters) or iters < 0:
        raise ValueError(f"delta.coefficients iters={iters!r} must be an int >= 0")
    if not is_int(chunk) or chunk < 0:
        raise ValueError(f"delta.coefficients chunk={chunk!r} must be an int >= 0")
    if gamma not in GAMMA_SCHEDULES:
        raise ValueError(f"delta.coefficients gamma={gamma!r} must be one of {GAMMA_SCHEDULES}")
    sg = jax.lax.stop_gradient
    v_BxTxD = sg(v_BxTxD)
    adv_B = sg(adv_B).astype(jnp.float32)
    valid_BxT = mask_BxT.astype(bool)
    pos_BxT = valid_BxT & (adv_B > 0)[:, None]
    neg_BxT = valid_BxT & (adv_B < 0)[:, None]
    sign_BxT = pos_BxT.astype(jnp.float32) - neg_BxT.astype(jnp.float32)
    a_Bx2 = jnp.stack([jnp.maximum(adv_B, 0.0), jnp.maximum(-adv_B, 0.0)], axis=-1)
    a_BxTx2 = a_Bx2[:, None, :] * valid_BxT[..., None]

    def centroids(w_BxTx2: jax.Array) -> jax.Array:
        den_2 = jnp.maximum(jnp.sum(w_BxTx2, axis=(0, 1)), EPS)
        return _weighted_sums(v_BxTxD, valid_BxT, w_BxTx2, chunk) / den_2[:, None]

    def margins(mu_2xD: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        d_BxTx2 = _sq_dists(v_BxTxD, valid_BxT, mu_2xD, chunk)
        m_BxT = sign_BxT * (d_BxTx2[..., 1] - d_BxTx2[..., 0])  # 0 off the two sides
        return m_BxT, _side_std(m_BxT, pos_BxT), _side_std(m_BxT, neg_BxT)

    def scaled(m_BxT: jax.Array, gamma_pos: jax.Array, gamma_neg: jax.Array) -> jax.Array:
        return m_BxT / jnp.where(pos_BxT, gamma_pos, jnp.where(neg_BxT, gamma_neg, 1.0))

    mu_2xD = centroids(a_BxTx2)
    m_BxT, std_pos, std_neg = margins(mu_2xD)  # std_*: the side stds of the margins m_BxT
    gamma_pos, gamma_neg = std_pos, std_neg  # the temperatures in use
    for _ in range(iters):
        q_BxT = jax.nn.sigmoid(scaled(m_BxT, gamma_pos, gamma_neg))  # soft own-side assignment
        mu_2xD = centroids(q_BxT[..., None] * a_BxTx2)
        if gamma == "released":  # the std of the margins this pass assigned with: one pass behind
            gamma_pos, gamma_neg = std_pos, std_neg
        m_BxT, std_pos, std_neg = margins(mu_2xD)
        if gamma == "current":
            gamma_pos, gamma_neg = std_pos, std_neg

    s_BxT = jax.nn.sigmoid(scaled(m_BxT, gamma_pos, gamma_neg))
    signed_BxT = pos_BxT | neg_BxT
    raw_BxT = jnp.where(signed_BxT, lam_min + (lam_max - lam_min) * s_BxT, lam_min)
    raw_BxT = jnp.where(valid_BxT, raw_BxT, 0.0).astype(jnp.float32)
    n_valid = jnp.sum(valid_BxT).astype(jnp.float32)
    omega_BxT = raw_BxT * (n_valid / jnp.maximum(jnp.sum(raw_BxT), EPS))

    n = jnp.maximum(n_valid, 1.0)
    mean = jnp.sum(omega_BxT) / n
    std = jnp.sqrt(jnp.sum(jnp.where(valid_BxT, jnp.square(omega_BxT - mean), 0.0)) / n)
    some = n_valid > 0  # min/max of an empty batch: 0, not +-inf
    n_signed = jnp.maximum(jnp.sum(signed_BxT), 1).astype(jnp.float32)
    stats = {
        "omega_raw": raw_BxT,
        "delta/omega_mean": mean,
        "delta/omega_std": std,
        "delta/omega_min": jnp.where(some, jnp.min(jnp.where(valid_BxT, omega_BxT, jnp.inf)), 0.0),
        "delta/omega_max": jnp.max(omega_BxT),  # omega >= 0, 0 on padding
        "delta/gamma_pos": gamma_pos,
        "delta/gamma_neg": gamma_neg,
        "delta/centroid_dist": jnp.linalg.norm(mu_2xD[0] - mu_2xD[1]),
        "delta/disc_bias": -0.5 * (jnp.sum(jnp.square(mu_2xD[0])) - jnp.sum(jnp.square(mu_2xD[1]))),
        "delta/disc_acc": jnp.sum(signed_BxT & (m_BxT > 0)) / n_signed,
    }
    return omega_BxT, jax.tree.map(lambda x: x.astype(jnp.float32), stats)


def shared_token_weight_share(
    omega_BxT: jax.Array, tokens_BxT: jax.Array, adv_B: jax.Array, mask_BxT: jax.Array
) -> jax.Array:
    """Share of omega's weight on tokens whose id occurs in both a positive- and a negative-
    advantage completion of the batch, float32 scalar (0 if no signed tokens).

    Numerator and denominator run over the valid tokens of nonzero-advantage completions (the
    ones the coefficients act on); with omega = 1 this is the plain fraction of shared tokens.
    Token ids must be >= 0. Membership is by sort + searchsorted: no vocabulary-sized table.
    """
    chex.assert_rank([omega_BxT, tokens_BxT, adv_B, mask_BxT], [2, 2, 1, 2])
    chex.assert_equal_shape([omega_BxT, tokens_BxT, mask_BxT])
    chex.assert_shape(adv_B, mask_BxT.shape[:1])
    valid_BxT = mask_BxT.astype(bool)
    pos_BxT = valid_BxT & (adv_B > 0)[:, None]
    neg_BxT = valid_BxT & (adv_B < 0)[:, None]
    ids_N = tokens_BxT.reshape(-1).astype(jnp.int32)

    def occurs_in(side_BxT: jax.Array) -> jax.Array:
        # The side's ids sorted, -1 elsewhere; a valid id (>= 0) never matches the filler.
        table_N = jnp.sort(jnp.where(side_BxT.reshape(-1), ids_N, -1))
        idx_N = jnp.clip(jnp.searchsorted(table_N, ids_N), 0, ids_N.shape[0] - 1)
        return ((table_N[idx_N] == ids_N) & (ids_N >= 0)).reshape(tokens_BxT.shape)

    signed_BxT = pos_BxT | neg_BxT
    shared_BxT = signed_BxT & occurs_in(pos_BxT) & occurs_in(neg_BxT)
    w_BxT = jnp.where(signed_BxT, omega_BxT.astype(jnp.float32), 0.0)
    total = jnp.sum(w_BxT)
    return jnp.sum(jnp.where(shared_BxT, w_BxT, 0.0)) / jnp.maximum(total, EPS)


# --- The train step's side: coefficients from the policy's own forward pass ---


def delta_reweight(
    fwd: forward_lib.CompletionForward,
    tokens_BxTc: jax.Array,
    adv_BxTc: jax.Array,
    mask_BxTc: jax.Array,
    cfg: DeltaConfig,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """DelTA (docs/delta.md): the advantage times per-token coefficients from this forward's
    hidden states and probabilities (stop-gradient constants of the loss), and their stats."""
    sg = jax.lax.stop_gradient
    v_BxTcxD = token_grad_proxy(
        jnp.exp(sg(fwd.logps_BxTc)), sg(fwd.hidden_BxTcxD).astype(jnp.float32)
    )
    return _from_proxy(v_BxTcxD, tokens_BxTc, adv_BxTc, mask_BxTc, cfg)


def _from_proxy(v_BxTcxD, tokens_BxTc, adv_BxTc, mask_BxTc, cfg):
    adv_B = forward_lib.sequence_advantages(adv_BxTc, mask_BxTc)
    omega_BxTc, stats = coefficients(
        v_BxTcxD,
        adv_B,
        mask_BxTc,
        lam_min=cfg.lam_min,
        lam_max=cfg.lam_max,
        iters=cfg.iters,
        chunk=cfg.chunk,
        gamma=cfg.gamma,
    )
    stats.pop("omega_raw")
    # The weight DelTA leaves on token ids that occur in both correct and incorrect completions.
    stats["delta/shared_weight_share"] = shared_token_weight_share(
        omega_BxTc, tokens_BxTc, adv_B, mask_BxTc
    )
    return adv_BxTc * omega_BxTc, stats


def delta_prepass(params, batch, num_micro, cfg, model_cfg, temperature):
    """DelTA over several micro-batches: proxies from a no-grad pass per micro-batch, then the
    coefficients over the whole batch, folded into its advantages."""
    rows = (batch.prompt_BxTp, batch.prompt_mask_BxTp, batch.completion_BxTc)
    rows += (batch_lib.attention_mask(batch),)
    strided = [forward_lib.to_micro(x, num_micro) for x in rows]

    def proxy(mb):
        fwd = forward_lib.completion_forward(
            params, *mb, model_cfg=model_cfg, temperature=temperature
        )
        return token_grad_proxy(jnp.exp(fwd.logps_BxTc), fwd.hidden_BxTcxD.astype(jnp.float32))

    v_MxBmxTcxD = jax.lax.map(proxy, strided)
    v_BxTcxD = forward_lib.from_micro(v_MxBmxTcxD)
    adv_BxTc, stats = _from_proxy(
        jax.lax.stop_gradient(v_BxTcxD),
        batch.completion_BxTc,
        batch.adv_BxTc,
        batch.completion_mask_BxTc,
        cfg,
    )
    return batch.replace(adv_BxTc=adv_BxTc), stats


def make_delta_fn(
    *,
    model_cfg: config_lib.ModelConfig,
    delta: DeltaConfig,
    temperature: float = 1.0,
    num_micro: int = 1,
    param_shardings: params_lib.Params | None = None,
):
    """Jitted `(params, batch) -> (batch, stats)`: DelTA's coefficients computed once over a whole
    rollout batch with `params` (the pre-update policy, as the authors do) and folded into its
    advantages, for rl.num_updates > 1 (then the train steps get delta=None). The proxies come
    from `num_micro` sequential no-grad passes; the batch is split over data x fsdp if sharded."""

    def fn(params, batch):
        return delta_prepass(params, batch, num_micro, delta, model_cfg, temperature)

    if param_shardings is None:
        return jax.jit(fn)
    mesh = jax.tree.leaves(param_shardings)[0].mesh
    rows = mesh_lib.batch_sharding(mesh)
    return jax.jit(
        fn, in_shardings=(param_shardings, rows), out_shardings=(rows, mesh_lib.replicated(mesh))
    )


@dataclasses.dataclass(frozen=True)
class DeltaTerm(term_lib.LossTerm):
    """DelTA inside the train step: with one micro-batch the coefficients come from the loss's own
    forward pass; with several, a no-grad prepass over the whole batch computes them first."""

    cfg: DeltaConfig

    def prepass(self, params, batch, *, num_micro, model_cfg, temperature):
        if num_micro == 1:
            return batch, {}
        return delta_prepass(params, batch, num_micro, self.cfg, model_cfg, temperature)

    def advantages(self, fwd, mb, adv_BxTc, *, num_micro):
        if num_micro > 1:  # folded in by the prepass
            return adv_BxTc, {}
        return delta_reweight(fwd, mb.completion_BxTc, adv_BxTc, mb.completion_mask_BxTc, self.cfg)


class DeltaOnce(hooks.Hook):
    """DelTA with several updates per rollout batch: the coefficients come from the pre-update
    policy over the whole global batch, once, before the first update (`make_delta_fn`); the
    train steps then run without the DelTA term."""

    def __init__(self, delta_fn, rows_multiple: int, mesh, pad_rows):
        self.delta_fn, self.rows_multiple, self.mesh = delta_fn, rows_multiple, mesh
        self.pad_rows = pad_rows  # rollout_types.pad_rows: empty rows the step ignores

    def batch(self, r, batch, params):
        del r
        n = batch.completion_BxTc.shape[0]
        multiple = self.rows_multiple
        rows = -(-distributed.max_over_processes(n) // multiple) * multiple
        full = distributed.global_rows(self.pad_rows(batch, rows), self.mesh)
        out, stats = self.delta_fn(params, full)
        adv_BxTc = np.asarray(distributed.local_rows(out.adv_BxTc, self.mesh))[:n]
        stats = {k: float(v) for k, v in jax.device_get(stats).items()}
        return batch.replace(adv_BxTc=adv_BxTc), stats
