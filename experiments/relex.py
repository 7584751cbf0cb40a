"""RELEX over a finished (or running) RL run: extrapolate from its first `t_cut` steps.

Run:    python experiments/relex.py --workdir=RUN --t_cut=9 --targets=30,60
The run must have saved a trajectory (ckpt.trajectory_until >= t_cut; e.g.
`--config.ckpt.trajectory_until=9 --config.ckpt.trajectory_sparse_every=10`). For every target
step this writes RUN/relex/tcut<t_cut>[_w<window_start>][_r<rank>]/step<target>/ (orbax params,
and an HF folder with the tokenizer under hf/), evaluates it on the run's held-out set with the
training evaluator (same prompts, same sampling key per step), and prints a table next to the
run's own trajectory checkpoints at the same steps, with the explained-variance distribution over
tensors, the fits' R^2 and the extrapolation's peak memory against one checkpoint x the window.
Results also go to results.json in the same folder.
"""

from __future__ import annotations

from absl import app, flags, logging

from rlvr_jax import mesh

_T_CUT = flags.DEFINE_integer("t_cut", None, "Last observed RL step (the prefix).", required=True)
_TARGETS = flags.DEFINE_list("targets", None, "RL steps to extrapolate to.", required=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The run's directory.", required=True)
_RANK = flags.DEFINE_integer("rank", 1, "Components per tensor (the paper: 1).")
_WINDOW_START = flags.DEFINE_integer("window_start", 1, "First observed step in the fit.")
_EXPORT_HF = flags.DEFINE_bool("export_hf", True, "Also write each extrapolation as an HF folder.")
_EVALUATE = flags.DEFINE_bool("evaluate", True, "Evaluate extrapolated and real checkpoints.")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    mesh.use_cpu_devices()
    # Imported after XLA_FLAGS is set, so nothing in train/ can start a backend before it.
    from rlvr_jax.train import relex_eval

    targets = [int(t) for t in _TARGETS.value]
    relex_eval.run(
        _WORKDIR.value,
        t_cut=_T_CUT.value,
        targets=targets,
        rank=_RANK.value,
        window_start=_WINDOW_START.value,
        export_hf=_EXPORT_HF.value,
        evaluate=_EVALUATE.value,
    )


if __name__ == "__main__":
    app.run(main)
