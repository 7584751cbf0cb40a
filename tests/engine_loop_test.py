"""The RL loop on the continuous engine (sampling.engine='continuous') samples what the static
sampler samples: same rollouts, same rewards, the same loss up to float rounding."""

import pytest

from rlvr_jax import config as experiment
from rlvr_jax.errors import ConfigError
from rlvr_jax.train import metrics as metrics_lib
from rlvr_jax.train import run_config
from tests import loop_test


def test_continuous_engine_trains_like_the_static_sampler(tmp_path):
    steps = {"train.steps": 1, "eval.every": 0, "ckpt.every": 1, "train.prompts_per_step": 4}
    rows = {}
    for engine in ("static", "continuous"):
        cfg = loop_test.small_config(
            **steps, **{"sampling.engine": engine, "sampling.slots": 8, "sampling.decode_chunk": 4}
        )
        experiment.run(cfg, str(tmp_path / engine))
        rows[engine] = [
            r
            for r in metrics_lib.read_metrics(str(tmp_path / engine))
            if "rollout/reward_mean" in r
        ]
    assert len(rows["static"]) == len(rows["continuous"]) == 1
    for a, b in zip(rows["static"], rows["continuous"], strict=True):
        for key in (
            "rollout/reward_mean",
            "rollout/len_mean",
            "rollout/acc",
            "rollout/len_max",
            "rollout/truncated_frac",
        ):
            assert a[key] == b[key], key
        assert b["train/loss"] == pytest.approx(a["train/loss"], abs=1e-4)


def test_engine_keys_are_checked():
    with pytest.raises(ConfigError, match="engine='bogus'"):
        run_config.from_dict({"sampling": {"engine": "bogus"}})
    bad = run_config.from_dict({"sampling": {"engine": "continuous", "prefill_chunk": 100}})
    with pytest.raises(ConfigError, match="prefill_chunk=100 must be a power of two"):
        run_config.engine_config(bad)
    with pytest.raises(ConfigError, match="one process"):
        run_config.validate(run_config.from_dict({"sampling": {"engine": "continuous"}}), 2)
