"""Checkpoint crash safety: a save killed midway leaves the previous checkpoint usable, an
unfinished checkpoint is never loaded, and a corrupted one fails loudly."""

import glob
import os
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rlvr_jax.train import checkpoint as ckpt_lib
from rlvr_jax.train import state as state_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYNC = ckpt_lib.CheckpointConfig(every=1, async_save=False)


def _state(offset: float, n: int = 6) -> state_lib.TrainState:
    params = {"w": jnp.arange(n, dtype=jnp.float32) + offset, "b": jnp.full((3,), offset)}
    return state_lib.init_state(params, optax.adam(1e-3))


def _restore(manager, n: int = 6):
    return ckpt_lib.restore_latest(manager, ckpt_lib.abstract_like(_state(0.0, n)))


def _assert_state_equal(got, want):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _save_then_die(workdir: str, n: int) -> None:
    """Saves step 10 and waits, starts an async save of step 20, then is SIGKILLed."""
    manager = ckpt_lib.make_manager(workdir, ckpt_lib.CheckpointConfig(every=1, async_save=True))
    ckpt_lib.save(manager, 10, _state(0.0, n), {"data": {"cursor": 10}})
    manager.wait_until_finished()
    # save() returns once the arrays are off the device; the files are written in the background.
    ckpt_lib.save(manager, 20, _state(1.0, n), {"data": {"cursor": 20}})
    os.kill(os.getpid(), signal.SIGKILL)


def test_kill_during_async_save_keeps_previous_checkpoint(tmp_path):
    n = 1 << 20  # 4 MB: the background write is still running when the kill lands
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), str(tmp_path), str(n)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    ckpt_dir = tmp_path / "ckpt"
    finished = (ckpt_dir / "20" / ckpt_lib.COMMIT_MARKER).exists()

    manager = ckpt_lib.make_manager(str(tmp_path), SYNC)
    step, state, record = _restore(manager, n)
    # Either the save of step 20 finished before the kill, or step 10 is what comes back: never
    # a partial step 20 and never an error.
    want = 20 if finished else 10
    assert step == want
    _assert_state_equal(state, _state(1.0 if finished else 0.0, n))
    assert record == {"data": {"cursor": want}}

    # The crashed save does not stop the next one (step 20 again, when it was the one cut off).
    ckpt_lib.save(manager, want + 10, _state(2.0, n), {"data": {"cursor": want + 10}})
    manager.wait_until_finished()
    step, state, _ = _restore(ckpt_lib.make_manager(str(tmp_path), SYNC), n)
    assert step == want + 10
    _assert_state_equal(state, _state(2.0, n))
    assert not glob.glob(str(ckpt_dir / "*orbax-checkpoint-tmp*"))


def _two_checkpoints(workdir: str):
    manager = ckpt_lib.make_manager(workdir, SYNC)
    ckpt_lib.save(manager, 10, _state(0.0), {"data": {"cursor": 10}})
    ckpt_lib.save(manager, 20, _state(1.0), {"data": {"cursor": 20}})
    manager.wait_until_finished()
    return os.path.join(workdir, "ckpt")


def test_step_dir_without_commit_marker_is_never_loaded(tmp_path):
    # A published step directory that lacks the marker: what a non-atomic rename (FUSE mounts)
    # or a partial copy of a run leaves behind.
    ckpt_dir = _two_checkpoints(str(tmp_path))
    os.remove(os.path.join(ckpt_dir, "20", ckpt_lib.COMMIT_MARKER))

    step, state, record = _restore(ckpt_lib.make_reader(str(tmp_path)))
    assert (step, record) == (10, {"data": {"cursor": 10}})
    _assert_state_equal(state, _state(0.0))
    assert os.path.isdir(os.path.join(ckpt_dir, "20"))  # a reader changes nothing

    manager = ckpt_lib.make_manager(str(tmp_path), SYNC)  # sets the unfinished step aside
    assert not os.path.exists(os.path.join(ckpt_dir, "20"))
    assert len(glob.glob(os.path.join(ckpt_dir, "20.unfinished-*"))) == 1
    assert _restore(manager)[0] == 10
    # Step 20 can be saved again (orbax would otherwise skip it as already saved).
    ckpt_lib.save(manager, 20, _state(5.0), {"data": {"cursor": 20}})
    manager.wait_until_finished()
    step, state, _ = _restore(ckpt_lib.make_manager(str(tmp_path), SYNC))
    assert step == 20
    _assert_state_equal(state, _state(5.0))


# Truncated array data raises the same way, but tensorstore then leaves callbacks aimed at orbax's
# closed event loop, which pytest reports as warnings in whatever test runs next; the metadata
# files fail deterministically.
@pytest.mark.parametrize("name", ["state/_METADATA", "record/metadata"])
def test_truncated_committed_checkpoint_raises_naming_it(tmp_path, name):
    ckpt_dir = _two_checkpoints(str(tmp_path))
    os.truncate(os.path.join(ckpt_dir, "20", name), 10)
    manager = ckpt_lib.make_manager(str(tmp_path), SYNC)
    with pytest.raises(ckpt_lib.CheckpointReadError, match=r"ckpt/20: checkpoint is marked"):
        _restore(manager)


def test_reader_of_missing_run_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        ckpt_lib.make_reader(str(tmp_path / "nope"))


if __name__ == "__main__":
    _save_then_die(sys.argv[1], int(sys.argv[2]))
