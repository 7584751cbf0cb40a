"""The one main of the RL experiment scripts (grpo_math.py, grpo_code.py, rubric.py, rlif_math.py,
distil_math.py, opd_math.py): `python experiments/<name>.py --workdir=DIR [--config=...:preset]`
runs the RL loop on experiments/configs/<name>.py (rlvr_jax/config.py converts it).

Rerunning the same command resumes from the latest checkpoint in DIR. Set RLVR_DIST=1 to call
`jax.distributed.initialize()` (multi-host): with RLVR_COORDINATOR=host:port, RLVR_NUM_PROCESSES
and RLVR_PROCESS_ID when set (launch/local_cpu.sh sets them), else JAX's cluster autodetection (TPU
pods, SLURM). On a CPU host the run uses one device per core, unless XLA_FLAGS already sets
--xla_force_host_platform_device_count.
"""

from __future__ import annotations

import os

from absl import app, flags, logging
from ml_collections import config_flags

from rlvr_jax import mesh


def run(config_file: str) -> None:
    """Defines --config (default experiments/configs/`config_file`, locked) and --workdir, then
    runs the RL loop under absl's app.run."""
    config = config_flags.DEFINE_config_file(
        "config",
        os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", config_file),
        "Experiment config file (path[:preset]).",
        lock_config=True,
    )
    workdir = flags.DEFINE_string(
        "workdir", None, "Run directory (checkpoints, metrics).", required=True
    )

    def main(argv):
        del argv
        logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
        mesh.use_cpu_devices()
        # Imported after XLA_FLAGS is set, so nothing in train/ can start a backend before it.
        from rlvr_jax import config as experiment
        from rlvr_jax import distributed

        distributed.initialize_from_env(os.environ)
        experiment.run(config.value, workdir.value)

    app.run(main)
