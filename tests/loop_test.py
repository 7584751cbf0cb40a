"""The RL loop end to end on a very small config: run, resume (own checkpoint or another run's),
kill -9 exactness, NaN steps, bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from experiments.configs import grpo_math
from rlvr_jax import config as experiment
from rlvr_jax.errors import ConfigError
from rlvr_jax.objectives import advantages as advantages_lib
from rlvr_jax.train import checkpoint as ckpt_lib
from rlvr_jax.train import metrics as metrics_lib
from tests import fixtures

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = {
    **fixtures.SMALL_RUN,
    "train.prompts_per_step": 2,
    "warm_start.steps": 3,
    "warm_start.batch_size": 4,
    "eval.num_prompts": 2,
    "eval.every": 2,
}


def small_config(**overrides):
    c = grpo_math.get_config()
    for key, value in {**SMALL, **overrides}.items():
        *group, name = key.split(".")
        (c[group[0]] if group else c)[name] = value
    return c


def _flags(overrides: dict) -> list[str]:
    return [f"--config.{k}={v}" for k, v in {**SMALL, **overrides}.items()]


def _comparable(rows):
    """Metric rows without wall-clock figures."""
    return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in rows]


def test_run_then_resume_appends_metrics(tmp_path, capsys):
    """Resuming in place and continuing in a new workdir (ckpt.resume_from) end up bitwise equal."""
    workdir, other = str(tmp_path / "run"), str(tmp_path / "continued")
    beta = {"rl.beta": 0.01}  # a reference policy, which the continued run must carry over
    experiment.run(small_config(**{"train.steps": 2}, **beta), workdir)
    rows = metrics_lib.read_metrics(workdir)
    assert [r["step"] for r in rows if "rollout/reward_mean" in r] == [1, 2]
    assert any("eval/pass@1" in r for r in rows if r["step"] == 0)
    assert os.path.exists(os.path.join(workdir, "config.json"))
    out = capsys.readouterr()
    assert "| 2/2 [" in out.err and "reward=" in out.err and "kl=" in out.err  # progress bar
    assert "step 2: {" in out.out

    # A new workdir continues from the run's checkpoint directory; the source is left as it was.
    source = os.path.join(workdir, "ckpt")
    experiment.run(small_config(**{"train.steps": 3, "ckpt.resume_from": source}, **beta), other)
    out = capsys.readouterr()
    assert "| 2/3 [" in out.err and "| 0/3 [" not in out.err  # the bar starts at step 2
    assert f"resumed from {source} at step 2" in out.out
    assert [r["step"] for r in metrics_lib.read_metrics(other)] == [3]
    assert sorted(os.listdir(source)) == ["1", "2"]

    experiment.run(small_config(**{"train.steps": 3}, **beta), workdir)  # resumes from step 2
    steps = [r["step"] for r in metrics_lib.read_metrics(workdir) if "rollout/reward_mean" in r]
    assert steps == [1, 2, 3]
    (step_a, state_a), (step_b, state_b) = _restore_params(workdir), _restore_params(other)
    assert step_a == step_b == 3
    _assert_trees_equal(state_a, state_b)
    checkpointer = ocp.StandardCheckpointer()
    _assert_trees_equal(
        checkpointer.restore(os.path.join(workdir, "reference")),
        checkpointer.restore(os.path.join(other, "reference")),
    )
    rows_a, rows_b = metrics_lib.read_metrics(workdir), metrics_lib.read_metrics(other)
    assert _comparable(rows_a)[-1] == _comparable(rows_b)[-1]


def test_nan_step_is_logged_with_its_step_and_not_checkpointed(tmp_path, monkeypatch, capsys):
    compute, calls = advantages_lib.compute, []

    def nan_at_step_2(rewards_B, rl):
        calls.append(len(rewards_B))
        adv_B = np.asarray(compute(rewards_B, rl), np.float32)
        return np.full_like(adv_B, np.nan) if len(calls) == 2 else adv_B

    monkeypatch.setattr(advantages_lib, "compute", nan_at_step_2)
    workdir = str(tmp_path)
    experiment.run(small_config(**{"train.steps": 3, "eval.every": 0}), workdir)
    assert len(calls) == 3  # one advantage computation per step
    rows = {r["step"]: r for r in metrics_lib.read_metrics(workdir) if "train/skipped" in r}
    assert [rows[s]["train/skipped"] for s in (1, 2, 3)] == [0.0, 1.0, 0.0]
    assert rows[2]["train/loss"] == "nan"
    assert "step 2: non-finite loss or gradient; update skipped" in capsys.readouterr().out
    assert sorted(os.listdir(os.path.join(workdir, "ckpt"))) == ["1", "3"]
    step, state = _restore_params(workdir)
    assert step == 3 and int(state["step"]) == 2  # step 2's update was never applied


def _assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _restore_params(workdir):
    manager = ocp.CheckpointManager(os.path.join(workdir, "ckpt"))
    step = manager.latest_step()
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return step, restored.state


def test_kill_9_then_rerun_matches_an_uninterrupted_run(tmp_path):
    """A run killed after its first checkpoint and rerun ends bitwise equal to a clean run."""
    cmd = [sys.executable, os.path.join(ROOT, "experiments", "grpo_math.py")]
    overrides = {"train.steps": 4}
    # Two CPU devices, as the script picks on a 2-core machine (the tests' 8 only slow it down).
    flags = os.environ.get("XLA_FLAGS", "").replace(
        "xla_force_host_platform_device_count=8", "xla_force_host_platform_device_count=2"
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=flags)
    clean, killed = str(tmp_path / "clean"), str(tmp_path / "killed")
    # The clean run and the run to kill side by side: their results do not depend on timing.
    clean_proc = subprocess.Popen(
        [*cmd, f"--workdir={clean}", *_flags(overrides)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    proc = subprocess.Popen(
        [*cmd, f"--workdir={killed}", *_flags(overrides)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not os.path.isdir(os.path.join(killed, "ckpt", "2")) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _, err = clean_proc.communicate()
    assert clean_proc.returncode == 0, err.decode()[-2000:]
    subprocess.run(
        [*cmd, f"--workdir={killed}", *_flags(overrides)], check=True, env=env, capture_output=True
    )
    step_a, state_a = _restore_params(clean)
    step_b, state_b = _restore_params(killed)
    assert step_a == step_b == 4
    _assert_trees_equal(state_a, state_b)
    rows_a = _comparable(metrics_lib.read_metrics(clean))
    rows_b = _comparable(metrics_lib.read_metrics(killed))
    assert rows_a == rows_b


def test_bad_config_fails_before_compiling(tmp_path):
    with pytest.raises(ConfigError, match="rl.num_updates=3"):
        experiment.run(small_config(**{"rl.num_updates": 3}), str(tmp_path))
    with pytest.raises(ValueError, match="unknown preset"):
        grpo_math.get_config("qwen9")
    with pytest.raises(ConfigError, match="warm_start.unanswered_frac=0.6"):
        experiment.run(
            small_config(**{"data.source": "gsm8k", "warm_start.unanswered_frac": 0.6}),
            str(tmp_path),
        )
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        experiment.run(
            small_config(
                **{
                    "data.source": "gsm8k",
                    "warm_start.unanswered_frac": 0.0,
                    "data.train_files": ("nope.jsonl",),
                    "data.eval_files": ("nope.jsonl",),
                }
            ),
            str(tmp_path),
        )


def test_data_row_without_answer_names_file_and_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(
        json.dumps({"question": "1+1?", "answer": "#### 2"}) + "\n" + json.dumps({"question": "x"})
    )
    c = small_config(
        **{
            "data.source": "gsm8k",
            "warm_start.unanswered_frac": 0.0,
            "data.train_files": (str(path),),
            "data.eval_files": (str(path),),
        }
    )
    with pytest.raises(ValueError, match=r"train.jsonl, line 2"):
        experiment.run(c, str(tmp_path / "w"))


def test_mistyped_override_fails_at_parse_time(tmp_path):
    cmd = [
        sys.executable,
        os.path.join(ROOT, "experiments", "grpo_math.py"),
        f"--workdir={tmp_path}",
        "--config.rl.betta=0.1",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode != 0
    assert "betta" in out.stderr


def test_checkpoint_from_another_model_shape_is_refused(tmp_path):
    workdir = str(tmp_path)
    experiment.run(small_config(**{"train.steps": 1}), workdir)
    c = small_config(**{"train.steps": 2})
    c.model.preset = "qwen2_3m"
    with pytest.raises(ckpt_lib.CheckpointShapeError, match="different model shape"):
        experiment.run(c, workdir)


def test_warm_start_only_run_leaves_step_0_for_other_runs_to_continue(tmp_path, capsys):
    """train.steps=0 saves the warm-started weights as step 0; an ablation arm continues them
    with ckpt.resume_from (no second warm start) and trains from step 1."""
    warm, arm = str(tmp_path / "warm"), str(tmp_path / "arm")
    experiment.run(small_config(**{"train.steps": 0}), warm)
    assert sorted(os.listdir(os.path.join(warm, "ckpt"))) == ["0"]
    capsys.readouterr()
    experiment.run(small_config(**{"train.steps": 1, "ckpt.resume_from": warm}), arm)
    out = capsys.readouterr().out
    assert "resumed from" in out and "at step 0" in out and "warm start" not in out
    steps = [r["step"] for r in metrics_lib.read_metrics(arm) if "rollout/reward_mean" in r]
    assert steps == [1]
    # An arm with another seed (another data order) continues the same weights; its data
    # starts over, and says so. Its own checkpoints then resume strictly.
    seeded = str(tmp_path / "seed1")
    experiment.run(small_config(**{"train.steps": 1, "ckpt.resume_from": warm, "seed": 1}), seeded)
    out = capsys.readouterr().out
    assert "data stream differs (state seed=0" in out and "starts over" in out
    steps = [r["step"] for r in metrics_lib.read_metrics(seeded) if "rollout/reward_mean" in r]
    assert steps == [1]
