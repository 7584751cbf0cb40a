"""RELEX end to end: the loop's dense-then-sparse trajectory, then experiments/relex.py's work
(extrapolate, save as orbax and HF, evaluate next to the real run)."""

import os

import numpy as np
import orbax.checkpoint as ocp
import pytest

from rlvr_jax import config as experiment
from rlvr_jax import relex
from rlvr_jax.models import hf
from rlvr_jax.train import checkpoint as ckpt_lib
from rlvr_jax.train import relex_eval
from tests.loop_test import small_config


def test_trajectory_policy_is_dense_then_sparse():
    cfg = ckpt_lib.CheckpointConfig(
        trajectory_until=4, trajectory_every=2, trajectory_sparse_every=5
    )
    assert [s for s in range(13) if cfg.trajectory_due(s)] == [0, 2, 4, 5, 10]
    assert not any(ckpt_lib.CheckpointConfig().trajectory_due(s) for s in range(5))
    with pytest.raises(ValueError, match="ckpt.trajectory_every=0"):
        ckpt_lib.CheckpointConfig(trajectory_every=0)


def test_relex_on_a_run_extrapolates_saves_and_evaluates(tmp_path, capsys):
    workdir = str(tmp_path)
    c = small_config(
        **{
            "train.steps": 4,
            "eval.every": 0,
            "ckpt.trajectory_until": 2,
            "ckpt.trajectory_sparse_every": 4,
            "rl.entropy_coef": 0.01,  # the weights move even where every reward is 0
        }
    )
    experiment.run(c, workdir)
    traj = os.path.join(workdir, ckpt_lib.TRAJECTORY_DIR)
    assert relex.committed_steps(traj) == [0, 1, 2, 4]  # step 3 is neither dense nor sparse

    results = relex_eval.run(workdir, t_cut=2, targets=[4, 8])
    assert results["window"] == [1, 2]
    assert results["explained_variance"]["moved"] > 0
    # Measured and reported; at 3 MB per checkpoint the process's fixed costs (compiling the fit)
    # dominate, so the bound is checked where it means something: tests/relex_test.py (traced
    # memory) and the 30M run in the README.
    memory = results["memory"]
    assert memory["checkpoint_bytes"] > 3_000_000 and memory["window"] == 2
    assert memory["peak_rss_increase_bytes"] >= 0
    for target in (4, 8):
        row = results["targets"][target]
        assert 0.0 <= row["relex"]["eval/pass@1"] <= 1.0
        assert row["t_cut"] is not None
        folder = os.path.join(workdir, "relex", "tcut2", f"step{target}")
        assert os.path.exists(os.path.join(folder, "hf", "model.safetensors"))
        assert os.path.exists(os.path.join(folder, "hf", "tokenizer.json"))
    assert results["targets"][4]["real"] is not None  # a sparse save to compare with
    assert results["targets"][8]["real"] is None  # beyond the run
    out = capsys.readouterr().out
    assert "RELEX from t_cut=2" in out and "explained variance" in out and "real" in out

    # The HF export and the orbax params hold the same extrapolated weights, past step 2's.
    folder = os.path.join(workdir, "relex", "tcut2", "step8")
    _, from_hf, _ = hf.load_checkpoint(os.path.join(folder, "hf"))
    from_orbax = ocp.StandardCheckpointer().restore(os.path.abspath(os.path.join(folder, "params")))
    np.testing.assert_array_equal(np.asarray(from_hf.embed), np.asarray(from_orbax["embed"]))
    step2 = ocp.StandardCheckpointer().restore(os.path.abspath(os.path.join(traj, "2", "params")))
    assert not np.array_equal(np.asarray(from_hf.embed), np.asarray(step2["embed"]))
