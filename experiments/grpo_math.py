"""GRPO on math: `python experiments/grpo_math.py --workdir=DIR [--config=...:preset]`.

Rerunning the same command resumes from the latest checkpoint in DIR. Set RLVR_DIST=1 to call
`jax.distributed.initialize()` (multi-host): with RLVR_COORDINATOR=host:port, RLVR_NUM_PROCESSES
and RLVR_PROCESS_ID when set (launch/local_cpu.sh sets them), else JAX's cluster autodetection (TPU
pods, SLURM). On a CPU host the script uses one device per core, unless XLA_FLAGS already sets
--xla_force_host_platform_device_count.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_FLAGS = {}


def define_flags(config_file: str) -> None:
    """--config (default experiments/configs/`config_file`, locked) and --workdir."""
    _FLAGS["config"] = config_flags.DEFINE_config_file(
        "config",
        os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", config_file),
        "Experiment config file (path[:preset]).",
        lock_config=True,
    )
    _FLAGS["workdir"] = flags.DEFINE_string(
        "workdir", None, "Run directory (checkpoints, metrics).", required=True
    )


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    flags_env = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags_env:  # before jax starts a backend
        count = f"--xla_force_host_platform_device_count={os.cpu_count() or 1}"
        os.environ["XLA_FLAGS"] = f"{flags_env} {count}".strip()
    from rlvr_jax.train import distributed, loop

    distributed.initialize_from_env(os.environ)

    loop.run(_FLAGS["config"].value, _FLAGS["workdir"].value)


if __name__ == "__main__":
    define_flags("grpo_math.py")
    app.run(main)
