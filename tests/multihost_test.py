"""Two processes = one: GRPO on 2 local processes x 2 CPU devices (jax.distributed over 127.0.0.1)
against 1 process x 4 devices, and a 2-process checkpoint resumed by 1 process on another mesh."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments.configs import grpo_math
from rlvr_jax import distributed, sampling
from rlvr_jax.models import config as config_lib
from rlvr_jax.models import params as params_lib
from rlvr_jax.train import checkpoint as ckpt_lib
from rlvr_jax.train import metrics as metrics_lib
from rlvr_jax.train import state as state_lib
from tests import fixtures

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = config_lib.get_preset("tiny")
# 4 prompts x G=2 = 8 rows: 2 prompts (4 rows) per process, 2 rows per device.
FLAGS = {
    **fixtures.SMALL_RUN,
    "train.prompts_per_step": 4,
    "rl.beta": 0.01,  # a reference policy, saved and reloaded across processes
    # The barely warm-started policy solves nothing, so every advantage is 0: the entropy bonus
    # gives the updates a gradient to compare.
    "rl.entropy_coef": 0.01,
    "warm_start.steps": 5,
    "warm_start.batch_size": 8,
    "eval.num_prompts": 4,
    "eval.every": 0,  # steps 0 and 3 only
}


def _flags(**overrides) -> list[str]:
    return [f"--config.{k}={v}" for k, v in {**FLAGS, **overrides}.items()]


def _env(devices: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLVR_")}
    env.update(
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        PYTHONPATH=ROOT,
    )
    return env


def _single(workdir: str, **overrides) -> subprocess.Popen:
    """One process x 4 devices on a (1, 4, 1) mesh. Its compiled programs go to a cache on disk, so
    the second such run (the resumed one) does not compile them again."""
    cmd = [sys.executable, os.path.join(ROOT, "experiments", "grpo_math.py")]
    cmd += [f"--workdir={workdir}", "--config.mesh.shape=(1,4,1)", *_flags(**overrides)]
    env = _env(4)
    env["JAX_COMPILATION_CACHE_DIR"] = os.path.join(os.path.dirname(workdir), "jax_cache")
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    log = open(workdir + ".log", "w")
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def _wait(proc: subprocess.Popen, what: str, log: str) -> None:
    if proc.wait(timeout=600) != 0:
        with open(log) as f:
            tail = f.read()[-3000:]
        pytest.fail(f"{what} exited with {proc.returncode}:\n{tail}")


def _restore(workdir: str):
    """(step, TrainState) of a run's latest checkpoint, restored onto one device of this process,
    whatever mesh and process count wrote it."""
    c = grpo_math.get_config()
    opt = state_lib.make_optimizer(state_lib.OptConfig(**c.opt))
    shapes = jax.eval_shape(lambda p: state_lib.init_state(p, opt), params_lib.param_shapes(CFG))
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    manager = ckpt_lib.make_reader(workdir)
    step, state, _ = ckpt_lib.restore_latest(
        manager, ckpt_lib.abstract_state(shapes, jax.tree.map(lambda _: one, shapes))
    )
    return step, jax.device_get(state)


def _rows(workdir: str) -> dict[int, dict]:
    """metrics.jsonl by step, without wall-clock figures."""
    return {
        r["step"]: {k: v for k, v in r.items() if not k.startswith("perf/")}
        for r in metrics_lib.read_metrics(workdir)
    }


def _compare(a: str, b: str, what: str) -> None:
    rows_a, rows_b = _rows(a), _rows(b)
    worst = 0.0
    for step in rows_b:
        assert rows_a[step].keys() == rows_b[step].keys(), step
        for k, v in rows_b[step].items():
            np.testing.assert_allclose(rows_a[step][k], v, rtol=2e-5, atol=1e-6, err_msg=k)
            worst = max(worst, abs(rows_a[step][k] - v) / max(abs(v), 1e-6))
    (step_a, state_a), (step_b, state_b) = _restore(a), _restore(b)
    assert step_a == step_b == FLAGS["train.steps"]
    diff = max(
        float(np.max(np.abs(x - y)))
        for x, y in zip(jax.tree.leaves(state_a), jax.tree.leaves(state_b), strict=True)
    )
    print(f"{what}: max relative metric diff {worst:.1e}, max |state diff| {diff:.1e}")
    assert diff < 1e-5


def test_two_processes_match_one_and_checkpoints_move(tmp_path):
    two, one, moved = (str(tmp_path / n) for n in ("two", "one", "moved"))
    # Two processes x 2 devices on a (2, 2, 1) mesh (sampler on (4, 1, 1)), through the launcher;
    # at the same time, one process x 4 devices on a (1, 4, 1) mesh.
    port = f"--port={_free_port()}"
    launch = [
        "bash",
        os.path.join(ROOT, "launch", "local_cpu.sh"),
        f"--workdir={two}",
        "--processes=2",
        "--devices=2",
        port,
        "--",
        "--config.mesh.shape=(2,2,1)",
        # Sampling on a data mesh (weights replicated, no FSDP gathers per decode step): the same
        # rollouts after the cross-host reshard.
        "--config.mesh.sampler=(4,1,1)",
        *_flags(),
    ]
    env = _env(2)
    env["PYTHON"] = sys.executable
    procs = subprocess.Popen(launch, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    single = _single(one)
    _wait(single, "the 1-process run", one + ".log")
    out = procs.communicate(timeout=600)[0].decode()
    assert procs.returncode == 0, out[-3000:]
    assert os.path.exists(os.path.join(two, "metrics.jsonl"))
    _compare(two, one, "2 processes vs 1")

    # The 2-process (2, 2, 1) checkpoint of step 2 (and its reference policy), resumed by one
    # process on the (1, 4, 1) mesh: step 3 lands where the uninterrupted runs did.
    source = str(tmp_path / "source")
    shutil.copytree(os.path.join(two, "ckpt", "2"), os.path.join(source, "ckpt", "2"))
    shutil.copytree(os.path.join(two, "reference"), os.path.join(source, "reference"))
    resumed = _single(moved, **{"ckpt.resume_from": source})
    _wait(resumed, "the resumed run", moved + ".log")
    with open(moved + ".log") as f:
        assert "resumed from" in f.read()
    _compare(two, moved, "2 processes vs resumed by 1 process on (1, 4, 1)")

    # Greedy samples of the final policies, on one device here: identical.
    with open(os.path.join(two, "config.json")) as f:
        assert tuple(json.load(f)["mesh"]["shape"]) == (2, 2, 1)
    tokens = [_greedy(_restore(w)[1].params) for w in (two, one, moved)]
    print(
        f"greedy tokens of the final policies: {tokens[0].shape}, {np.unique(tokens[0]).size} ids"
    )
    np.testing.assert_array_equal(tokens[0], tokens[1])
    np.testing.assert_array_equal(tokens[0], tokens[2])


def _greedy(params) -> np.ndarray:
    prompts = [[5, 17, 3, 88, 42, 9, 61], [44, 8, 19], [71, 26, 55, 90, 13, 4], [33, 2]]
    sc = sampling.SamplingConfig(max_new_tokens=16, temperature=0.0)
    out = sampling.generate(params, prompts, jax.random.key(0), model_cfg=CFG, cfg=sc)
    return np.asarray(out.tokens_BxTc)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_first_groups_keeps_the_global_first(monkeypatch):
    """DAPO across processes: the union of what each process keeps is the first `limit` kept
    groups in (round, process, index) order."""
    keep = {  # process -> rounds -> flags
        0: [np.array([1, 0, 1]), np.array([1, 1, 0])],
        1: [np.array([0, 1, 1]), np.array([1, 1, 1])],
    }
    counts = np.array([[k.sum() for k in keep[p]] for p in (0, 1)])
    monkeypatch.setattr(distributed, "gather_rows", lambda tree: counts)
    got = {}
    for p in (0, 1):
        monkeypatch.setattr(jax, "process_index", lambda p=p: p)
        got[p] = [k.astype(int).tolist() for k in distributed.first_groups(keep[p], 5)]
    # Global order: round 0 -> p0 [0, 2], p1 [1, 2]; round 1 -> p0 [0, 1], p1 [0, 1, 2]. First 5:
    # r0 p0 (2), r0 p1 (2), r1 p0 index 0 (1).
    assert got[0] == [[1, 0, 1], [1, 0, 0]]
    assert got[1] == [[0, 1, 1], [0, 0, 0]]
