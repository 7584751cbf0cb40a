"""GRPO on math: `python experiments/grpo_math.py --workdir=DIR [--config=...:preset]`.

Rerunning the same command resumes from the latest checkpoint in DIR. Set RLVR_DIST=1 to call
`jax.distributed.initialize()` (multi-host); on a CPU host the script uses one device per core.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "grpo_math.py"),
    "Experiment config file (path[:preset]).",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run directory (checkpoints, metrics).", required=True
)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    import jax  # noqa: F401  (after flags, so XLA_FLAGS set by the user apply)

    if os.environ.get("RLVR_DIST") == "1":
        jax.distributed.initialize()
    from rlvr_jax.train import loop

    loop.run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
