"""benchmarks/grpo_step_vs_trl.py: the parent's summary and printout of its children's reports."""

import contextlib
import io

import pytest

from benchmarks import grpo_step_vs_trl as bench


def _jax_report(train: list[float], bare: list[float]) -> dict:
    steps = [3.0 + t for t in train]  # sample 2 + ref 1 + train
    times = dict(sample=[2.0] * len(train), ref=[1.0] * len(train), train=train, step=steps)
    return dict(times={**times, "bare_grad": bare}, prompt_lens=[31, 32], env="jax x")


def _trl_report(step: list[float]) -> dict:
    n = len(step)
    return dict(times={"generate": [4.0] * n, "rollout+ref": [5.0] * n, "step": step}, env="t")


def test_summarize_pools_every_round_and_reports_the_overhead():
    jax_runs = [_jax_report([2.0, 6.0], [2.0, 2.0]), _jax_report([4.0], [3.0])]
    trl_runs = [_trl_report([8.0, 9.0]), _trl_report([7.0])]
    row = bench.summarize("3m", 3_000_000, jax_runs, trl_runs)
    tokens = bench.P * bench.G * bench.TC
    assert row["jax_parts"] == {"sample": 2.0, "ref": 1.0, "train": 4.0}  # median of 2, 6, 4
    assert row["jax"] == pytest.approx(tokens / 7.0)
    assert row["trl"] == pytest.approx(tokens / 8.0)
    assert row["trl_parts"] == {"generate": 4.0, "ref+score": 1.0, "train": 3.0}
    assert row["bare"] == 2.0
    assert row["overhead"] == pytest.approx(2.0)
    assert row["timed"] == (3, 2)


def test_printout_keeps_the_ratio_line_and_adds_the_overhead():
    row = bench.summarize("30m", 30_000_000, [_jax_report([2.2], [2.0])], [_trl_report([10.0])])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        bench._print_size(row)
        bench._print_table([row], [1e11])
    text = out.getvalue()
    assert "30m: ratio rlvr_jax/TRL 1.92 (goal >= 1.0: met)" in text
    assert "30m: bare gradient 2.00s, train phase 2.20s, overhead Y/X = 1.10x" in text
    assert "(goal <= 1.15: met)" in text
    header, rule, line = text.splitlines()[-3:]
    assert header.count("|") == rule.count("|") == line.count("|") == 13
    assert line.endswith("| 2.00 | 1.10 (<= 1.15) |")
