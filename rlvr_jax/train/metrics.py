"""Metrics output: config.json, metrics.jsonl and TensorBoard event files in the workdir.

Only process 0 writes. Metric names live in stable namespaces: `rollout/`, `rl/`, `train/`, `eval/`,
`perf/`. Each jsonl line is one RL step: {"step": n, "<name>": value, ...}.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np


class Writer:
    """Appends metrics to workdir/metrics.jsonl and TensorBoard; writes workdir/config.json."""

    def __init__(self, workdir: str, *, enabled: bool = True, tensorboard: bool = True):
        self.workdir = workdir
        self.enabled = enabled
        self._tb = None
        if enabled:
            os.makedirs(workdir, exist_ok=True)
            if tensorboard:
                import tensorboardX  # imported lazily: only the writing process needs it

                self._tb = tensorboardX.SummaryWriter(os.path.join(workdir, "tb"))

    def write_config(self, config: Mapping[str, Any]) -> None:
        if self.enabled:
            with open(os.path.join(self.workdir, "config.json"), "w") as f:
                json.dump(config, f, indent=2, sort_keys=True, default=str)

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        row = {"step": int(step)}
        for k, v in sorted(metrics.items()):
            v = float(np.asarray(v))
            row[k] = v if math.isfinite(v) else str(v)  # JSON has no NaN
            if self._tb is not None and math.isfinite(v):
                self._tb.add_scalar(k, v, int(step))
        with open(os.path.join(self.workdir, "metrics.jsonl"), "a") as f:
            f.write(json.dumps(row) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drops rows past `step` (written after the checkpoint a resumed run restarts from)."""
        path = os.path.join(self.workdir, "metrics.jsonl")
        if not self.enabled or not os.path.exists(path):
            return
        with open(path) as f:
            rows = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
        with open(path, "w") as f:
            f.writelines(rows)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(workdir: str) -> list[dict[str, Any]]:
    """The rows of workdir/metrics.jsonl."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]
