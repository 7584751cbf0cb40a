"""RELEX: exact recovery of rank-1/rank-2 linear trajectories, denoising against naive
extrapolation, unmoved tensors, sign and window invariance, and streaming one tensor at a time from
orbax checkpoints."""

import re

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from rlvr_jax import mesh as mesh_lib
from rlvr_jax import relex, relex_report
from rlvr_jax.models import config as config_lib
from rlvr_jax.models import params as params_lib

SHAPES = {"w": (8, 6), "layers": [{"q": (3, 4, 2), "bias": (5,)}], "head": (6, 7)}


def _unit(rng, shape):
    v = rng.standard_normal(shape).astype(np.float32)
    return v / np.linalg.norm(v)


def _base(seed=0):
    """A pytree with None leaves and a tensor (`norm`) that never moves."""
    rng = np.random.default_rng(seed)
    tree = jax.tree.map(lambda s: rng.standard_normal(s).astype(np.float32), SHAPES,
                        is_leaf=lambda x: isinstance(x, tuple))  # fmt: skip
    return {**tree, "norm": np.ones((6,), np.float32), "tied_head": None}


def _trajectory(base, coefs, steps, seed=1, noise=0.0):
    """θ_t = θ_0 + Σ_r coefs[r](t)·v_r on every moving leaf, plus isotropic noise; and the
    noiseless truth t -> θ_t."""
    rng = np.random.default_rng(seed)
    moving = {k: v for k, v in base.items() if k not in ("norm", "tied_head")}
    dirs = [jax.tree.map(lambda x: _unit(rng, x.shape), moving) for _ in coefs]

    def at(t, eps=0.0):
        out = moving
        for c, d in zip(coefs, dirs, strict=True):
            out = jax.tree.map(lambda x, v, c=c: x + np.float32(c(t)) * v, out, d)
        out = jax.tree.map(lambda x: x + eps * rng.standard_normal(x.shape).astype(np.float32), out)
        return {**base, **out}

    return {t: at(t, noise) for t in steps}, at


def _close(got, want, tol=1e-5):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


LINE = lambda t: 0.5 * t + 0.2  # noqa: E731


def test_exact_rank1_linear_trajectory_is_recovered():
    base = _base()
    steps = (2, 4, 6, 8, 10)  # fitted on the RL step numbers, not 0..T-1
    by_step, truth = _trajectory(base, [LINE], steps)
    out, fits = relex.extrapolate(base, by_step, [100, 1000], relex.RelexConfig())
    _close(out[100], truth(100))
    _close(out[1000], truth(1000), tol=1e-4)
    assert out[100]["tied_head"] is None
    moved = {f.name: f for f in fits if f.moved}
    assert set(moved) == {"w", "layers/0/q", "layers/0/bias", "head"}
    for f in moved.values():  # unit v: c_t = 0.5 t + 0.2 exactly
        assert f.explained_variance == pytest.approx(1.0, abs=1e-6)
        assert f.r2[0] == pytest.approx(1.0, abs=1e-6)
        assert f.slope[0] == pytest.approx(0.5, rel=1e-4)
        assert f.intercept[0] == pytest.approx(0.2, abs=1e-3)
    summary = relex_report.summarise(fits)
    assert (summary["tensors"], summary["moved"]) == (5, 4)
    assert summary["ev_weighted"] == pytest.approx(1.0, abs=1e-6)
    assert "4/5 tensors moved" in relex_report.format_summary(summary)


def test_unmoved_tensor_is_bit_identical_and_flagged():
    base = _base()
    by_step, _ = _trajectory(base, [LINE], (1, 2, 3))
    out, fits = relex.extrapolate(base, by_step, [50], relex.RelexConfig())
    assert out[50]["norm"] is base["norm"]
    norm = next(f for f in fits if f.name == "norm")
    assert (norm.moved, norm.explained_variance, norm.max_abs_delta) == (False, 0.0, 0.0)


def test_rank1_projection_denoises_compared_to_naive_extrapolation():
    base = {"w": np.zeros((64, 64), np.float32)}
    steps = tuple(range(1, 11))
    by_step, truth = _trajectory(base, [lambda t: 0.1 * t], steps, noise=0.003)
    target = 50
    out, _ = relex.extrapolate(base, by_step, [target], relex.RelexConfig())
    want = truth(target)["w"]
    last, prev = by_step[10]["w"], by_step[9]["w"]
    naive = last + (target - 10) / (10 - 9) * (last - prev)
    err_relex = np.linalg.norm(out[target]["w"] - want)
    err_naive = np.linalg.norm(naive - want)
    assert err_relex < err_naive / 10, (err_relex, err_naive)


def test_eigenvector_sign_does_not_change_the_result(monkeypatch):
    base = _base()
    by_step, _ = _trajectory(base, [LINE], (1, 2, 3, 4), noise=1e-3)
    want, want_fits = relex.extrapolate(base, by_step, [40], relex.RelexConfig())
    eigh = np.linalg.eigh
    monkeypatch.setattr(np.linalg, "eigh", lambda g: (eigh(g)[0], -eigh(g)[1]))
    got, got_fits = relex.extrapolate(base, by_step, [40], relex.RelexConfig())
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(a, b)
    assert got_fits == want_fits
    # A trajectory along -v extrapolates along -v.
    neg = {t: jax.tree.map(lambda x, b: 2 * b - x, p, base) for t, p in by_step.items()}
    got, _ = relex.extrapolate(base, neg, [40], relex.RelexConfig())
    _close(jax.tree.map(lambda x, b: 2 * b - x, got[40], base), want[40], tol=1e-4)


def test_rank2_recovers_an_exact_rank2_trajectory():
    base = _base()
    coefs = [LINE, lambda t: -0.3 * t + 1.0]
    by_step, truth = _trajectory(base, coefs, (1, 2, 3, 4, 5, 6))
    out, fits = relex.extrapolate(base, by_step, [60], relex.RelexConfig(rank=2))
    _close(out[60], truth(60), tol=1e-4)
    assert all(f.explained_variance == pytest.approx(1.0, abs=1e-6) for f in fits if f.moved)
    rank1, fits1 = relex.extrapolate(base, by_step, [60], relex.RelexConfig(rank=1))
    assert max(f.explained_variance for f in fits1 if f.moved) < 0.999
    assert np.abs(rank1[60]["w"] - truth(60)["w"]).max() > 0.1


def test_steps_outside_the_window_do_not_affect_the_fit():
    base = _base()
    by_step, truth = _trajectory(base, [LINE], range(1, 9))
    cfg = relex.RelexConfig(window_start=3, window_end=6)
    want, _ = relex.extrapolate(base, {t: by_step[t] for t in range(3, 7)}, [30], cfg)
    junk = jax.tree.map(lambda x: x + 100.0, by_step[1])
    corrupted = {**by_step, 1: junk, 2: junk, 7: junk, 8: junk}
    got, _ = relex.extrapolate(base, corrupted, [30], cfg)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(a, b)
    _close(got[30], truth(30), tol=1e-4)
    assert relex.select_window([0, 1, 2, 3, 5, 9], 5, relex.RelexConfig()) == (1, 2, 3, 5)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"rank": 0}, "rank"),
        ({"fit": "quadratic"}, "fit"),
        ({"store_dtype": "int8"}, "store_dtype"),
        ({"window_start": -1}, "window_start"),
        ({"window_start": 4, "window_end": 4}, "window_end"),
    ],
)
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"RelexConfig.{field}="):
        relex.RelexConfig(**kwargs)


def test_fit_tensor_matches_the_tree_api_and_float16_storage_is_close():
    base = _base()
    by_step, truth = _trajectory(base, [LINE], (1, 2, 3, 4), noise=1e-3)
    deltas_TxD = np.stack([by_step[t]["w"].reshape(-1) - base["w"].reshape(-1) for t in by_step])
    fit, traj = relex.fit_tensor(deltas_TxD, list(by_step), relex.RelexConfig(), name="w")
    got = relex.extrapolate_tensor(base["w"], traj, 40)
    want, fits = relex.extrapolate(base, by_step, [40], relex.RelexConfig())
    np.testing.assert_allclose(got, want[40]["w"], rtol=1e-5, atol=1e-5)
    assert fit.slope == pytest.approx(fits[-1].slope) and fits[-1].name == "w"
    half, _ = relex.extrapolate(base, by_step, [40], relex.RelexConfig(store_dtype="float16"))
    np.testing.assert_allclose(half[40]["w"], truth(40)["w"], atol=0.05)


# --- Streaming from orbax checkpoints ---

T_CUT = 5


def _tiny(num_layers=4):
    cfg = config_lib.get_preset("tiny", num_layers=num_layers)
    base = params_lib.init_params(cfg, jax.random.key(0))
    rng = np.random.default_rng(0)
    dirs = jax.tree.map(lambda x: rng.standard_normal(x.shape).astype(np.float32), base)
    dirs = dirs.replace(final_norm=np.zeros_like(dirs.final_norm))  # never moves

    def at(t):  # a line plus a little noise, except for final_norm
        noise = lambda v: 1e-5 * (v != 0) * rng.standard_normal(v.shape).astype(np.float32)  # noqa: E731
        return jax.tree.map(lambda x, v: x + 1e-3 * t * v + noise(v), base, dirs)

    return cfg, {t: (base if t == 0 else at(t)) for t in range(T_CUT + 1)}


def _save(traj_dir, by_step):
    manager = ocp.CheckpointManager(
        traj_dir, item_handlers={"params": ocp.StandardCheckpointHandler()}
    )
    for step, p in by_step.items():
        manager.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(p)))
    manager.wait_until_finished()
    manager.close()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cfg, by_step = _tiny()
    traj_dir = str(tmp_path_factory.mktemp("run") / "trajectory")
    _save(traj_dir, by_step)
    return cfg, by_step, traj_dir


def test_streaming_equals_in_memory_and_saves(run, tmp_path):
    cfg, by_step, traj_dir = run
    like = params_lib.param_shapes(cfg)
    got, fits = relex.extrapolate_from_checkpoints(
        traj_dir, 3, [10, 20], relex.RelexConfig(), like=like
    )
    window = {t: by_step[t] for t in (1, 2, 3)}
    want, want_fits = relex.extrapolate(by_step[0], window, [10, 20], relex.RelexConfig())
    assert isinstance(got[10], params_lib.Params) and got[10].lm_head is None
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert fits == want_fits
    assert not next(f for f in fits if f.name == "final_norm").moved
    names = [f.name for f in fits]  # tied head: the embedding is fitted once, lm_head never
    assert names.count("embed") == 1 and "lm_head" not in names and len(names) == 50
    assert next(f for f in fits if f.name == "layers/1/q").explained_variance > 0.99
    relex.save_params(str(tmp_path / "out"), got[20])
    back = ocp.StandardCheckpointer().restore(str(tmp_path / "out"))
    np.testing.assert_array_equal(back["embed"], got[20].embed)


def test_streaming_sharded_places_outputs_in_the_shardings(run):
    cfg, _, traj_dir = run
    mesh = mesh_lib.make_mesh((1, 8, 1))
    shardings = mesh_lib.param_shardings(mesh, params_lib.param_axes(cfg))
    got, _ = relex.extrapolate_from_checkpoints(
        traj_dir, T_CUT, [30], relex.RelexConfig(), shardings=shardings
    )
    host, _ = relex.extrapolate_from_checkpoints(
        traj_dir, T_CUT, [30], relex.RelexConfig(), like=shardings
    )
    for a, b, s in zip(
        jax.tree.leaves(got[30]), jax.tree.leaves(host[30]), jax.tree.leaves(shardings), strict=True
    ):
        assert a.sharding == s
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(got[30].final_norm), host[30].final_norm)


def test_streaming_reads_one_tensor_at_a_time(run, monkeypatch):
    _, by_step, traj_dir = run
    reads = []
    restore = relex._restore_leaf
    monkeypatch.setattr(
        relex,
        "_restore_leaf",
        lambda layout, step, name, s: reads.append(name) or restore(layout, step, name, s),
    )
    (got, _), peak = relex_report.measure_peak_memory(
        lambda: relex.extrapolate_from_checkpoints(traj_dir, T_CUT, [10], relex.RelexConfig())
    )
    # θ_0 plus the window, read back to back for each tensor; no tensor is read twice.
    blocks = [reads[i : i + T_CUT + 1] for i in range(0, len(reads), T_CUT + 1)]
    assert all(len(set(b)) == 1 and len(b) == T_CUT + 1 for b in blocks)
    assert len({b[0] for b in blocks}) == len(blocks) == len(jax.tree.leaves(by_step[0]))
    foot = relex_report.checkpoint_footprint(traj_dir)
    assert foot.params_bytes == sum(x.nbytes for x in jax.tree.leaves(by_step[0]))
    assert foot.largest_tensor_bytes == by_step[0].embed.nbytes
    assert relex_report.footprint(by_step[0]) == foot
    # One output model plus about (T + 4) largest tensors, far below a model per window step.
    assert peak.traced_peak_bytes < foot.params_bytes + (T_CUT + 4) * foot.largest_tensor_bytes
    assert peak.traced_peak_bytes < 0.5 * foot.params_bytes * T_CUT
    assert set(got[10]) == {"embed", "final_norm", "layers", "lm_head"}  # the stored tree
    assert got[10]["lm_head"] is None and got[10]["layers"][0]["q_norm"] is None


def test_missing_step0_and_uncommitted_steps(tmp_path):
    _, by_step = _tiny(num_layers=1)
    traj_dir = str(tmp_path / "trajectory")
    _save(traj_dir, {t: by_step[t] for t in (1, 2, 3)})
    (tmp_path / "trajectory" / "7").mkdir()  # no commit marker: not a checkpoint
    assert relex.committed_steps(traj_dir) == [1, 2, 3]
    with pytest.raises(FileNotFoundError, match=re.escape(f"{traj_dir}: no committed step 0")):
        relex.extrapolate_from_checkpoints(traj_dir, 3, [10], relex.RelexConfig())
