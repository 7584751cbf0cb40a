"""Steps for a treatment to reach a baseline's plateau, per seed, from the runs' metrics.jsonl.

Run:    python experiments/steps_to_plateau.py \
            --baseline=/tmp/rubric_vanilla_s0,/tmp/rubric_vanilla_s1 \
            --treatment=/tmp/rubric_pow3r_s0,/tmp/rubric_pow3r_s1 [--metric=eval/reward_mean]
Pairs the i-th baseline run with the i-th treatment run (same seed). The plateau is the mean of
the baseline's last `--last` evaluations; an arm reaches it at the first evaluation step where
the trailing mean of `--last` evaluations is at least the plateau ("-" when it never does).
"""

from __future__ import annotations

import os

import numpy as np
from absl import app, flags

from rlvr_jax.train import metrics as metrics_lib

_BASELINE = flags.DEFINE_list("baseline", None, "Baseline run directories.", required=True)
_TREATMENT = flags.DEFINE_list("treatment", None, "Treatment run directories.", required=True)
_METRIC = flags.DEFINE_string("metric", "eval/reward_mean", "The evaluation metric.")
_LAST = flags.DEFINE_integer("last", 3, "Evaluations in the plateau and the trailing mean.")


def curve(workdir: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
    rows = [r for r in metrics_lib.read_metrics(workdir) if metric in r]
    if not rows:
        raise ValueError(f"{workdir}/metrics.jsonl has no {metric}")
    return np.array([r["step"] for r in rows]), np.array([r[metric] for r in rows])


def first_reach(steps: np.ndarray, values: np.ndarray, level: float, window: int) -> int | None:
    trailing = np.array([values[max(0, i - window + 1) : i + 1].mean() for i in range(len(values))])
    hit = np.flatnonzero(trailing >= level)
    return int(steps[hit[0]]) if len(hit) else None


def main(argv):
    del argv
    if len(_BASELINE.value) != len(_TREATMENT.value):
        raise app.UsageError("--baseline and --treatment need as many runs each")
    n = _LAST.value
    print(f"| run pair | {_METRIC.value} at 0 | baseline, last {n} | treatment, last {n} | "
          "steps to the baseline's plateau: baseline / treatment |")  # fmt: skip
    print("|---|---|---|---|---|")
    for base_dir, treat_dir in zip(_BASELINE.value, _TREATMENT.value, strict=True):
        (bs, bv), (ts, tv) = curve(base_dir, _METRIC.value), curve(treat_dir, _METRIC.value)
        plateau = bv[-n:].mean()
        reach = [first_reach(s, v, plateau, n) for s, v in ((bs, bv), (ts, tv))]
        shown = " / ".join("-" if r is None else str(r) for r in reach)
        name = (
            f"{os.path.basename(base_dir.rstrip('/'))} vs {os.path.basename(treat_dir.rstrip('/'))}"
        )
        print(f"| {name} | {bv[0]:.3f} | {plateau:.3f} | {tv[-n:].mean():.3f} | {shown} |")


if __name__ == "__main__":
    app.run(main)
