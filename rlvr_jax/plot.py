"""Renders a run's curves to PNG: `python -m rlvr_jax.plot WORKDIR [--out FILE]`.

One panel per metric namespace group (rollout reward/accuracy, eval, rl, train loss, perf), read
from WORKDIR/metrics.jsonl. Writes WORKDIR/curves.png by default.
"""

from __future__ import annotations

import argparse
import math
import os

from rlvr_jax.train import metrics as metrics_lib

PANELS = (
    ("reward / accuracy", ("rollout/reward_mean", "rollout/acc")),
    ("held-out", ("eval/greedy_acc", "eval/pass@1", "eval/pass@4")),
    ("policy", ("rl/kl", "rl/entropy", "rl/clip_frac")),
    ("loss", ("train/loss", "train/grad_norm")),
    ("length", ("rollout/len_mean", "eval/len_mean")),
    ("speed", ("perf/tokens_per_s",)),
)


def plot(workdir: str, out: str | None = None) -> str:
    """Writes the PNG and returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = metrics_lib.read_metrics(workdir)
    panels = [(t, [k for k in keys if any(k in r for r in rows)]) for t, keys in PANELS]
    panels = [(t, keys) for t, keys in panels if keys]
    if not panels:
        raise ValueError(f"{workdir}/metrics.jsonl has none of the plotted metrics")
    cols = 3
    fig, axes = plt.subplots(
        math.ceil(len(panels) / cols), cols, figsize=(5 * cols, 3.2 * math.ceil(len(panels) / cols))
    )
    axes = list(getattr(axes, "flat", [axes]))
    for ax, (title, keys) in zip(axes, panels, strict=False):
        for k in keys:
            pts = [(r["step"], r[k]) for r in rows if isinstance(r.get(k), (int, float))]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="." if len(pts) < 30 else None, label=k)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    out = out or os.path.join(workdir, "curves.png")
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    print(plot(args.workdir, args.out))


if __name__ == "__main__":
    main()
