"""The one config boundary: an experiment's ConfigDict becomes a typed `RunConfig`.

Experiment scripts build a `ml_collections.ConfigDict` (experiments/configs/*.py, overridden by
`--config.key=value` flags); `from_configdict` turns it into frozen dataclasses, section by
section (`c.rl` -> `RunConfig.rl`, an `RLConfig`, ...). This is the only library module that
imports ml_collections. An unknown section or key, or a value a section rejects, raises
`ConfigError` naming the key, before anything loads or compiles.
"""

from __future__ import annotations

from typing import Any

import ml_collections
from absl import flags
from ml_collections import config_flags

from rlvr_jax.train import loop, run_config


def from_configdict(c: ml_collections.ConfigDict) -> run_config.RunConfig:
    """The experiment's ConfigDict as a typed RunConfig (errors name the key)."""
    return run_config.from_dict(c.to_dict())


def run(c: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains the experiment `c` in `workdir` (rerunning resumes); returns the last metrics."""
    return loop.run(from_configdict(c), workdir)


def define_config_flag(default: str, help_text: str = "Experiment config file (path[:arg])."):
    """--config: an experiment config file (`path[:arg]`, overridable by --config.key=value);
    read it with `from_flag`."""
    return config_flags.DEFINE_config_file("config", default, help_text, lock_config=True)


def from_flag(holder) -> tuple[run_config.RunConfig, str]:
    """(the typed config, the config file argument as given, `path[:arg]`) of a --config flag."""
    return from_configdict(holder.value), config_flags.get_config_filename(flags.FLAGS[holder.name])
