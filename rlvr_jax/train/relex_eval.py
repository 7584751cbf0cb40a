"""RELEX on a run directory: extrapolate from its trajectory, save, evaluate, compare.

The run's own config.json (written by the loop) rebuilds its mesh, model, held-out examples and
evaluator, so an extrapolated checkpoint is scored exactly like the run's checkpoints: same
prompts, same verifier, same sampling key for the same step.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import orbax.checkpoint as ocp

from rlvr_jax import distributed, relex, relex_report, tasks
from rlvr_jax import mesh as mesh_lib
from rlvr_jax.models import hf
from rlvr_jax.models import params as params_lib
from rlvr_jax.models import tokenizer as tokenizer_lib
from rlvr_jax.train import checkpoint as ckpt_lib
from rlvr_jax.train import evaluate as eval_lib
from rlvr_jax.train import run_config
from rlvr_jax.train import setup as setup_lib

_SHOWN = ("eval/pass@1", "eval/greedy_acc", "eval/reward_mean")


def real_params(traj_dir: str, step: int, like: params_lib.Params):
    """The run's own params at `step` from its trajectory, or None when that step was not saved."""
    if step not in relex.committed_steps(traj_dir):
        return None
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), like
    )
    return ocp.StandardCheckpointer().restore(
        os.path.abspath(os.path.join(traj_dir, str(step), ckpt_lib.TRAJECTORY_ITEM)), target
    )


def run(
    workdir: str,
    *,
    t_cut: int,
    targets: Sequence[int],
    rank: int = 1,
    window_start: int = 1,
    export_hf: bool = True,
    evaluate: bool = True,
) -> dict[str, Any]:
    """Extrapolates RUN's trajectory from `t_cut` to each target; returns (and prints) the
    results: per target the extrapolation's and the real run's eval metrics, the explained
    variance summary and the peak memory."""
    c = run_config.load(workdir)
    traj_dir = os.path.join(workdir, ckpt_lib.TRAJECTORY_DIR)
    if not os.path.isdir(traj_dir):
        raise FileNotFoundError(
            f"{traj_dir}: the run saved no trajectory; rerun it with "
            f"--config.ckpt.trajectory_until>={t_cut}"
        )
    cfg = relex.RelexConfig(rank=rank, window_start=window_start)
    mesh = setup_lib.make_mesh(c)
    model_cfg, tok = setup_lib.load_model(c)
    param_shd = mesh_lib.param_shardings(mesh, params_lib.param_axes(model_cfg))
    shapes = params_lib.param_shapes(model_cfg)
    window = relex.select_window(
        [s for s in relex.committed_steps(traj_dir) if s <= t_cut], t_cut, cfg
    )
    foot = relex_report.checkpoint_footprint(traj_dir)
    (outs, fits), peak = relex_report.measure_peak_memory(
        lambda: relex.extrapolate_from_checkpoints(
            traj_dir, t_cut, targets, cfg, like=shapes, shardings=param_shd
        )
    )
    summary = relex_report.summarise(fits)
    budget = foot.params_bytes * len(window)
    memory = {
        "peak_rss_increase_bytes": peak.rss_peak_bytes - peak.rss_start_bytes,
        "traced_peak_bytes": peak.traced_peak_bytes,
        "checkpoint_bytes": foot.params_bytes,
        "window": len(window),
        "ratio_to_checkpoint_x_window": (peak.rss_peak_bytes - peak.rss_start_bytes) / budget,
    }
    name = f"tcut{t_cut}" + (f"_w{window_start}" if window_start != 1 else "")
    out_root = os.path.join(workdir, "relex", name + (f"_r{rank}" if rank != 1 else ""))
    results: dict[str, Any] = {
        "t_cut": t_cut,
        "window": list(window),
        "rank": rank,
        "explained_variance": summary,
        "memory": memory,
        "targets": {},
    }
    for target, params in outs.items():
        folder = os.path.join(out_root, f"step{target}")
        relex.save_params(os.path.join(folder, "params"), params)
        if export_hf and jax.process_index() == 0:
            hf.save_checkpoint(os.path.join(folder, "hf"), model_cfg, jax.device_get(params))
            tokenizer_lib.copy_files(tok, os.path.join(folder, "hf"))
    if evaluate:
        task = tasks.build(run_config.task_config(c))
        sampling_cfg = run_config.sampling_config(c, tok.eos_ids, tok.pad_id)
        evaluator = eval_lib.Evaluator(
            tok,
            task.test[: c.eval.num_prompts],
            model_cfg=model_cfg,
            system=c.system,
            sampling_cfg=sampling_cfg,
            k=c.eval.k,
            mesh=mesh,
        )
        like = jax.tree.map(lambda s, x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                            param_shd, shapes)  # fmt: skip
        base = real_params(traj_dir, t_cut, like)  # the policy RELEX starts from
        with task.scorer() as score_fn:
            for target, params in outs.items():
                # The loop's eval key for this step: every row sees the same samples' randomness.
                key = distributed.replicated_key(mesh, c.seed, 1, target)
                real = real_params(traj_dir, target, like)
                results["targets"][target] = {
                    "relex": evaluator(params, key, score_fn),
                    "real": None if real is None else evaluator(real, key, score_fn),
                    "t_cut": None if base is None else evaluator(base, key, score_fn),
                }
    os.makedirs(out_root, exist_ok=True)
    if jax.process_index() == 0:
        with open(os.path.join(out_root, "results.json"), "w") as f:
            json.dump(results, f, indent=2, sort_keys=True)
        print(report(results))
    return results


def report(results: dict[str, Any]) -> str:
    """The printed table: per target, the policy at t_cut, RELEX and the real run."""
    lines = [
        f"RELEX from t_cut={results['t_cut']} (window {results['window'][0]}.."
        f"{results['window'][-1]}, {len(results['window'])} checkpoints, rank {results['rank']})",
        relex_report.format_summary(results["explained_variance"]),
    ]
    m = results["memory"]
    lines.append(
        f"peak memory: +{m['peak_rss_increase_bytes'] / 2**20:.1f} MiB RSS "
        f"(traced {m['traced_peak_bytes'] / 2**20:.1f} MiB) vs one checkpoint x window "
        f"{m['checkpoint_bytes'] / 2**20:.1f} MiB x {m['window']} = "
        f"{m['ratio_to_checkpoint_x_window']:.3f}x"
    )
    if results["targets"]:
        head = f"{'step':>6} | {'policy':<8} | " + " | ".join(f"{k:>16}" for k in _SHOWN)
        lines += [head, "-" * len(head)]
        for target, row in sorted(results["targets"].items()):
            for name, key in (("t_cut", "t_cut"), ("RELEX", "relex"), ("real", "real")):
                vals = row.get(key)
                cells = [f"{vals[k]:>16.4f}" if vals else f"{'-':>16}" for k in _SHOWN]
                lines.append(f"{target:>6} | {name:<8} | " + " | ".join(cells))
    return "\n".join(lines)
