"""RELEX: extrapolate RLVR weights along each tensor's rank-1 trajectory over time (docs/relex.md,
arXiv 2605.21468), in memory or streamed one tensor at a time from a run's orbax checkpoints.

Shapes: T window steps, D = size of one flattened tensor, R = `RelexConfig.rank` components.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import tensorstore as ts
from etils import epath
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from rlvr_jax.values import is_int

FITS = ("linear",)
STORE_DTYPES = ("float32", "float16", "bfloat16")
COMMIT_MARKER = "commit_success.txt"  # orbax writes it last into a finished step directory
ITEM = "params"  # the item name of the trajectory checkpoints
_CHUNK = 1 << 24  # elements of M upcast to float32 at once on the host path (64 MB)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RelexConfig:
    """Which observed steps enter the fit and how. Frozen and hashable."""

    rank: int = 1  # R, trajectory components kept (the paper's rank-1 is the default)
    window_start: int = 1  # first RL step fitted (inclusive); step 0 is θ_0 itself (Δ = 0)
    window_end: int | None = None  # last RL step fitted (inclusive); None: t_cut
    fit: str = "linear"  # one of FITS: c_t ≈ a·t + b
    store_dtype: str = "float32"  # one of STORE_DTYPES: storage of the window M (math is fp32)

    def __post_init__(self):
        def fail(name: str, why: str):
            raise ValueError(f"RelexConfig.{name}={getattr(self, name)!r} {why}")

        if not is_int(self.rank) or self.rank < 1:
            fail("rank", "must be an int >= 1")
        if not is_int(self.window_start) or self.window_start < 0:
            fail("window_start", "must be an int >= 0")
        if self.window_end is not None and (
            not is_int(self.window_end) or self.window_end < self.window_start + 1
        ):
            fail("window_end", f"must be None or an int > window_start={self.window_start}")
        if self.fit not in FITS:
            fail("fit", f"is not one of {FITS}")
        if self.store_dtype not in STORE_DTYPES:
            fail("store_dtype", f"is not one of {STORE_DTYPES}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TensorFit:
    """The fit of one tensor. Per-component tuples have length `rank`, strongest first."""

    name: str  # key path, e.g. "layers/0/q"
    shape: tuple[int, ...]
    moved: bool  # False: Δ == 0 over the whole window, the tensor is returned unchanged
    explained_variance: float  # Σ top-R eigenvalues of M Mᵀ / Σ all; 0.0 when not moved
    sigma: tuple[float, ...]  # singular values σ_r of M
    slope: tuple[float, ...]  # a_r of c_r(t) ≈ a_r·t + b_r, per RL step along unit v_r
    intercept: tuple[float, ...]  # b_r
    r2: tuple[float, ...]  # R² of each linear fit
    max_abs_delta: float  # max |Δ_t| over the window, in float32

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Trajectory:
    """θ̂(t) = θ_0 + Σ_r (slope_r·t + intercept_r)·v_r for one flattened tensor."""

    v_RxD: np.ndarray  # float32 unit directions
    slope_R: np.ndarray  # float64
    intercept_R: np.ndarray  # float64


# --- The fit of one tensor (pure numpy on T×T and T-sized arrays) ---


@dataclasses.dataclass(frozen=True)
class _Components:
    u_TxR: np.ndarray  # eigenvectors of M Mᵀ, sign fixed so that the largest |u_t| is positive
    sigma_R: np.ndarray
    slope_R: np.ndarray
    intercept_R: np.ndarray
    r2_R: np.ndarray
    explained: float


def _ols(t_T: np.ndarray, c_T: np.ndarray) -> tuple[float, float, float]:
    """Ordinary least squares c ≈ a·t + b; returns (a, b, R²). R² = 1 when c is constant."""
    t_c = t_T - t_T.mean()
    a = float(t_c @ (c_T - c_T.mean()) / (t_c @ t_c))
    b = float(c_T.mean() - a * t_T.mean())
    ss_res = float(np.sum((c_T - (a * t_T + b)) ** 2))
    ss_tot = float(np.sum((c_T - c_T.mean()) ** 2))
    return a, b, (1.0 - ss_res / ss_tot) if ss_tot > 0 else 1.0


def _fit_gram(gram_TxT: np.ndarray, steps_T: np.ndarray, rank: int) -> _Components:
    """Steps 2–4: top eigenpairs of G = M Mᵀ, c_r = σ_r u_r, and a line through each c_r."""
    lam_T, u_TxT = np.linalg.eigh(np.asarray(gram_TxT, np.float64))
    order = np.argsort(lam_T)[::-1]
    lam_T = np.clip(lam_T[order], 0.0, None)  # G is PSD: negatives are rounding
    u_TxR = u_TxT[:, order[:rank]]
    # c and v flip together; fixing u's sign only makes the reported slopes reproducible.
    peak_R = np.argmax(np.abs(u_TxR), axis=0)
    u_TxR = u_TxR * np.sign(u_TxR[peak_R, np.arange(rank)])[None, :]
    sigma_R = np.sqrt(lam_T[:rank])
    t_T = np.asarray(steps_T, np.float64)
    fits = [
        _ols(t_T, sigma_R[r] * u_TxR[:, r]) if sigma_R[r] > 0 else (0.0, 0.0, 0.0)
        for r in range(rank)
    ]
    slope_R, intercept_R, r2_R = (np.array(x, np.float64) for x in zip(*fits, strict=True))
    total = lam_T.sum()  # 0 only when float16 storage flushed every Δ to zero
    explained = float(lam_T[:rank].sum() / total) if total > 0 else 0.0
    return _Components(u_TxR, sigma_R, slope_R, intercept_R, r2_R, explained)


def _weights_T(comp: _Components, target: int) -> np.ndarray:
    """w with θ̂(target) = θ_0 + Σ_t w_t Δ_t, since v_r = Mᵀu_r/σ_r (step 5 without forming v)."""
    keep = comp.sigma_R > 0
    coef_R = (comp.slope_R * target + comp.intercept_R)[keep] / comp.sigma_R[keep]
    return (comp.u_TxR[:, keep] @ coef_R).astype(np.float32)


def _tensor_fit(name, shape, comp: _Components | None, rank: int, max_abs: float) -> TensorFit:
    """The report; `comp` is None for a tensor that never moved (all zeros, moved=False)."""
    zeros_R = np.zeros((rank,))
    c = comp if comp is not None else _Components(zeros_R, zeros_R, zeros_R, zeros_R, zeros_R, 0.0)
    floats = lambda x_R: tuple(map(float, x_R))  # noqa: E731
    return TensorFit(
        name=name, shape=tuple(shape), moved=comp is not None, explained_variance=c.explained,
        sigma=floats(c.sigma_R), slope=floats(c.slope_R), intercept=floats(c.intercept_R),
        r2=floats(c.r2_R), max_abs_delta=max_abs,
    )  # fmt: skip


def _gram_np(M_TxD: np.ndarray) -> np.ndarray:
    """G = M Mᵀ, float32 products over column chunks so a float16 M is never upcast whole."""
    T, D = M_TxD.shape
    gram_TxT = np.zeros((T, T), np.float64)
    step = max(1, _CHUNK // T)
    for s in range(0, D, step):
        blk = np.asarray(M_TxD[:, s : s + step], np.float32)  # a view when M is float32
        gram_TxT += blk @ blk.T
    return gram_TxT


def _combine_np(base_D: np.ndarray, M_TxD: np.ndarray, w_T: np.ndarray) -> np.ndarray:
    """base + Σ_t w_t M_t in float32, column chunk by column chunk."""
    out_D = base_D.astype(np.float32)
    step = max(1, _CHUNK // M_TxD.shape[0])
    for s in range(0, out_D.size, step):
        out_D[s : s + step] += w_T @ np.asarray(M_TxD[:, s : s + step], np.float32)
    return out_D


def fit_tensor(
    deltas_TxD, steps_T: Sequence[int], cfg: RelexConfig, *, name: str = "", shape=None
) -> tuple[TensorFit, Trajectory]:
    """Fits one tensor's window of deltas Δ_t = θ_t − θ_0 (rows) observed at RL steps `steps_T`."""
    M_TxD = np.asarray(deltas_TxD).astype(jnp.dtype(cfg.store_dtype))
    chex.assert_rank(M_TxD, 2)
    chex.assert_shape(np.asarray(steps_T), (M_TxD.shape[0],))
    _check_window(steps_T, cfg)
    shape = (M_TxD.shape[1],) if shape is None else tuple(shape)
    max_abs = float(np.max(np.abs(np.asarray(deltas_TxD, np.float32)), initial=0.0))
    comp = _fit_gram(_gram_np(M_TxD), np.asarray(steps_T), cfg.rank)
    keep = comp.sigma_R > 0  # all False for an unmoved tensor: no components, θ̂ = θ_0
    scaled_TxR = (comp.u_TxR[:, keep] / comp.sigma_R[keep]).astype(np.float32)
    v_RxD = scaled_TxR.T @ M_TxD.astype(np.float32)  # v_r = Mᵀu_r/σ_r
    traj = Trajectory(v_RxD=v_RxD, slope_R=comp.slope_R[keep], intercept_R=comp.intercept_R[keep])
    return _tensor_fit(name, shape, comp if max_abs > 0 else None, cfg.rank, max_abs), traj


def extrapolate_tensor(base, traj: Trajectory, target: int) -> np.ndarray:
    """θ̂(target) = θ_0 + Σ_r (a_r·target + b_r)·v_r, in base's shape and dtype."""
    base = np.asarray(base)
    chex.assert_shape(traj.v_RxD, (traj.slope_R.size, base.size))
    if traj.slope_R.size == 0:
        return base
    coef_R = (traj.slope_R * target + traj.intercept_R).astype(np.float32)
    out_D = base.reshape(-1).astype(np.float32) + coef_R @ traj.v_RxD
    return out_D.reshape(base.shape).astype(base.dtype)


def _check_window(steps_T: Sequence[int], cfg: RelexConfig) -> None:
    if len(set(steps_T)) != len(steps_T) or len(steps_T) < max(2, cfg.rank):
        raise ValueError(
            f"RELEX needs at least max(2, rank={cfg.rank}) distinct window steps, got "
            f"{list(steps_T)}"
        )


# --- The fit of one leaf, reading its window one step at a time (host numpy or sharded jax) ---


@jax.jit
def _gram_jax(M_TxS: jax.Array) -> jax.Array:
    m = M_TxS.astype(jnp.float32)
    axes = tuple(range(1, m.ndim))
    return jnp.tensordot(m, m, axes=(axes, axes))


@jax.jit
def _combine_jax(base: jax.Array, M_TxS: jax.Array, w_T: jax.Array) -> jax.Array:
    out = base.astype(jnp.float32) + jnp.tensordot(w_T, M_TxS.astype(jnp.float32), axes=1)
    return out.astype(base.dtype)


def _set_row(M_TxS: jax.Array, t: jax.Array, x: jax.Array, base: jax.Array):
    delta = x.astype(jnp.float32) - base.astype(jnp.float32)
    return M_TxS.at[t].set(delta.astype(M_TxS.dtype)), jnp.max(jnp.abs(delta), initial=0.0)


_set_row_jax = jax.jit(_set_row, donate_argnums=0)  # donated: M is updated in place


def _fit_leaf(
    name: str,
    read: Callable[[int], Any],
    steps: Sequence[int],
    targets: Sequence[int],
    cfg: RelexConfig,
    sharding: NamedSharding | None,
) -> tuple[TensorFit, list[Any]]:
    """Reads θ_0 and the window of one leaf, fits it and returns its value at every target.

    Resident at once: θ_0, the window M (T × leaf, `store_dtype`), one read step and the outputs.
    """
    base = read(0)
    shape = tuple(base.shape)
    T = len(steps)
    if sharding is None:
        base_D = np.asarray(base).reshape(-1)
        base32_D = base_D.astype(np.float32)
        M = np.empty((T, base_D.size), jnp.dtype(cfg.store_dtype))
        max_abs = 0.0
        for i, step in enumerate(steps):
            delta_D = _checked(read(step), shape, name, step).reshape(-1).astype(np.float32)
            delta_D -= base32_D
            max_abs = max(max_abs, -float(delta_D.min()), float(delta_D.max()))
            M[i] = delta_D
            del delta_D
        del base32_D
    else:
        spec = P(None, *sharding.spec)
        M = jnp.zeros((T, *shape), cfg.store_dtype, device=NamedSharding(sharding.mesh, spec))
        maxes = []
        for i, step in enumerate(steps):
            M, m = _set_row_jax(M, i, _checked(read(step), shape, name, step), base)
            maxes.append(m)
        max_abs = float(max(jax.device_get(maxes)))
    if max_abs == 0.0:  # never moved: returned as read, bit for bit
        return _tensor_fit(name, shape, None, cfg.rank, 0.0), [base] * len(targets)
    gram = _gram_np(M) if sharding is None else jax.device_get(_gram_jax(M))
    comp = _fit_gram(gram, np.asarray(steps), cfg.rank)
    outs = []
    for target in targets:
        w_T = _weights_T(comp, target)
        if sharding is None:
            outs.append(_combine_np(base_D, M, w_T).reshape(shape).astype(base.dtype, copy=False))
        else:
            outs.append(jax.device_put(_combine_jax(base, M, jnp.asarray(w_T)), sharding))
    return _tensor_fit(name, shape, comp, cfg.rank, max_abs), outs


def _checked(x, shape, name: str, step: int):
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name}: step {step} has shape {tuple(x.shape)}, step 0 has {shape}")
    return x


def select_window(steps: Sequence[int], t_cut: int, cfg: RelexConfig) -> tuple[int, ...]:
    """The observed steps that enter the fit: window_start ≤ step ≤ (window_end or t_cut)."""
    end = t_cut if cfg.window_end is None else cfg.window_end
    if end > t_cut:
        raise ValueError(f"RelexConfig.window_end={cfg.window_end} is past t_cut={t_cut}")
    window = tuple(s for s in sorted(set(steps)) if cfg.window_start <= s <= end)
    _check_window(window, cfg)
    return window


# --- Trees ---


def _name(keypath) -> str:
    """A key path as 'layers/0/q', for dataclass fields, dict keys and sequence indices alike."""
    attrs = ("name", "key", "idx")
    return "/".join(str(next(getattr(k, a) for a in attrs if hasattr(k, a))) for k in keypath)


def _named_leaves(tree) -> tuple[list[str], list[Any], Any]:
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return [_name(p) for p, _ in leaves], [x for _, x in leaves], treedef


def extrapolate(
    base_params, params_by_step: dict[int, Any], targets: Sequence[int], cfg: RelexConfig
) -> tuple[dict[int, Any], list[TensorFit]]:
    """RELEX over in-memory pytrees: θ_0 and the params at observed RL steps (t_cut = the last).

    None leaves stay None; unmoved tensors are returned as given; moved ones as numpy arrays.
    """
    names, base_leaves, treedef = _named_leaves(base_params)
    window = select_window(list(params_by_step), max(params_by_step), cfg)
    leaves_by_step = {0: base_leaves}
    for step in window:
        step_leaves, step_def = jax.tree_util.tree_flatten(params_by_step[step])
        if step_def != treedef:
            raise ValueError(f"params at step {step} do not have θ_0's tree structure")
        leaves_by_step[step] = step_leaves
    fits, outs = [], {t: [] for t in targets}
    for i, name in enumerate(names):
        fit, leaf_outs = _fit_leaf(
            name, lambda s, i=i: np.asarray(leaves_by_step[s][i]), window, targets, cfg, None
        )
        fits.append(fit)
        for t, out in zip(targets, leaf_outs, strict=True):
            outs[t].append(base_leaves[i] if not fit.moved else out)
    return {t: treedef.unflatten(outs[t]) for t in targets}, fits


# --- Streaming from a run's trajectory checkpoints ---


def committed_steps(traj_dir: str) -> list[int]:
    """Steps of the CheckpointManager directory whose `<step>/` holds orbax's commit marker."""
    root = epath.Path(traj_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{traj_dir}: no such trajectory directory")
    return sorted(
        int(p.name) for p in root.iterdir() if p.name.isdigit() and (p / COMMIT_MARKER).exists()
    )


def metadata(step_dir: epath.Path):
    """The orbax tree metadata of `<step>/params`: ArrayMetadata leaves, `.use_zarr3`."""
    return ocp.PyTreeCheckpointHandler().metadata(step_dir / ITEM)


@dataclasses.dataclass(frozen=True)
class _Layout:
    """Where each tensor lives in the step checkpoints (taken from step 0, the same for all)."""

    root: epath.Path
    keys: dict[str, str]  # tensor name -> orbax's key in the checkpoint, e.g. "layers.0.q"
    use_ocdbt: bool
    use_zarr3: bool
    context: ts.Context  # shared by every read


def _restore_leaf(layout: _Layout, step: int, name: str, sharding) -> Any:
    """Reads the one tensor `name` of checkpoint `step` straight from its TensorStore array (OCDBT
    + zarr), opened with the read spec orbax itself builds; no other tensor is touched. With a
    sharding each process reads only its own shards."""
    info = ocp.type_handlers.ParamInfo(
        name=layout.keys[name], parent_dir=layout.root / str(step) / ITEM,
        is_ocdbt_checkpoint=layout.use_ocdbt, use_zarr3=layout.use_zarr3,
        ts_context=layout.context,
    )  # fmt: skip
    spec = ocp.type_handlers.get_json_tspec_read(info, use_ocdbt=layout.use_ocdbt)
    store = ts.open(spec, context=layout.context, open=True, read=True).result()
    if sharding is None:
        return store.read().result()
    read = lambda index: np.asarray(store[index].read().result())  # noqa: E731
    return jax.make_array_from_callback(tuple(store.shape), sharding, read)


def extrapolate_from_checkpoints(
    traj_dir: str,
    t_cut: int,
    targets: Sequence[int],
    cfg: RelexConfig,
    *,
    like=None,
    shardings=None,
) -> tuple[dict[int, Any], list[TensorFit]]:
    """RELEX streamed from `<traj_dir>/<step>/params` checkpoints, one tensor at a time.

    θ_0 is step 0; the window is the committed steps chosen by `select_window(…, t_cut, cfg)`.
    The outputs take the tree structure of `like` (e.g. `params.param_shapes(cfg)`), else of
    `shardings`, else the checkpoint's own (nested dicts and lists). With `shardings` (a pytree of
    NamedSharding) each tensor is read, fitted and placed sharded; without, on the host in numpy.
    Peak memory: the outputs plus about (T + 4) × the largest tensor.
    """
    steps = committed_steps(traj_dir)
    if 0 not in steps:
        raise FileNotFoundError(
            f"{traj_dir}: no committed step 0 (θ_0, the policy at the first RL step); "
            f"committed steps: {steps}"
        )
    window = select_window([s for s in steps if s <= t_cut], t_cut, cfg)
    root = epath.Path(traj_dir)
    meta = metadata(root / "0")  # nested dicts and lists of ArrayMetadata
    stored_names, _, _ = _named_leaves(meta.tree)
    keys = dict(zip(*_named_leaves(ocp.tree.get_param_names(meta.tree))[:2], strict=True))
    layout = _Layout(
        root=root,
        keys=keys,  # also names the None leaves, which are never read
        use_ocdbt=ocp.type_handlers.is_ocdbt_checkpoint(root / "0" / ITEM),
        use_zarr3=bool(meta.use_zarr3),
        # Orbax's default context keeps a 100 MB OCDBT cache that also holds tensor data just
        # read; each chunk here is read once, so the cache would only inflate the peak memory.
        context=ts.Context({"cache_pool#ocdbt": {"total_bytes_limit": 0}}),
    )
    template = like if like is not None else shardings if shardings is not None else meta.tree
    names, _, treedef = _named_leaves(template)
    differ = sorted(set(names) ^ set(stored_names))
    if differ:
        raise ValueError(f"{root / '0'}: the checkpoint and the output tree differ in {differ}")
    by_name = dict(zip(*_named_leaves(shardings)[:2], strict=True)) if shardings else {}
    if shardings is not None and set(by_name) != set(names):
        raise ValueError(f"shardings differ from the output tree in {set(by_name) ^ set(names)}")
    fits, outs = [], {t: [] for t in targets}
    for name in names:
        sharding = by_name.get(name)
        read = lambda step, n=name, sh=sharding: _restore_leaf(layout, step, n, sh)  # noqa: E731
        fit, leaf_outs = _fit_leaf(name, read, window, targets, cfg, sharding)
        fits.append(fit)
        for t, out in zip(targets, leaf_outs, strict=True):
            outs[t].append(out)
    return {t: treedef.unflatten(outs[t]) for t in targets}, fits


def save_params(path: str, params) -> None:
    """Writes `params` as one orbax StandardCheckpointer checkpoint at `path` (must not exist)."""
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.abspath(path), params)
    checkpointer.wait_until_finished()
    checkpointer.close()
