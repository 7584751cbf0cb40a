"""Task kinds, picked by `data.source`: one module each, behind the `base.Task` interface.

Adding a kind: a module with SOURCES, a `validate(cfg, processes)` and a `base.Task` subclass, and
one line in KINDS below. Nothing in the loop changes (docs/architecture.md).
"""

from __future__ import annotations

import importlib

from rlvr_jax.errors import ConfigError
from rlvr_jax.tasks import base
from rlvr_jax.tasks import config as task_config

# kind -> (module, Task class name). Imported on use: a kind's optional dependencies
# (reasoning-gym) are needed only when it runs.
KINDS = {
    "math": ("rlvr_jax.tasks.math", "MathTask"),
    "code": ("rlvr_jax.tasks.code", "CodeTask"),
    "rubric": ("rlvr_jax.tasks.rubric", "RubricTask"),
    "reasoning_gym": ("rlvr_jax.tasks.reasoning_gym", "ReasoningGymTask"),
    "ecom": ("rlvr_jax.tasks.ecom", "EcomTask"),
    "longtrace": ("rlvr_jax.tasks.longtrace", "LongTraceTask"),
}
# data.source -> kind
SOURCES = {
    **{s: "math" for s in ("synthetic", "gsm8k", "math", "answer", "parquet")},
    "code": "code",
    "rubric": "rubric",
    "reasoning_gym": "reasoning_gym",
    "ecom": "ecom",
    "longtrace": "longtrace",
}


def _module(cfg: task_config.TaskConfig):
    kind = SOURCES.get(cfg.data.source)
    if kind is None:
        raise ConfigError(f"data.source={cfg.data.source!r} is not one of {tuple(SOURCES)}")
    name, cls = KINDS[kind]
    return importlib.import_module(name), cls


def validate(cfg: task_config.TaskConfig, processes: int = 1) -> None:
    """The task's own config values, named by key, before anything loads or compiles."""
    module, _ = _module(cfg)
    check = getattr(module, "validate", None)
    if check is not None:
        check(cfg, processes)


def build(cfg: task_config.TaskConfig, ctx: base.TaskContext | None = None) -> base.Task:
    """The task of `data.source`, its examples loaded (`ctx`: what a judge model needs)."""
    module, cls = _module(cfg)
    return getattr(module, cls)(cfg, ctx)
