"""The config boundary (rlvr_jax/config.py -> train/run_config.py) and the layering it protects."""

import ast
import json
import pathlib

import pytest

from experiments.configs import distil_math, grpo_code, grpo_math, opd_math, rlif_math
from experiments.configs import rubric as rubric_config
from rlvr_jax import config as experiment
from rlvr_jax.errors import ConfigError
from rlvr_jax.objectives import rl_config
from rlvr_jax.train import run_config

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIGS = [
    grpo_math.get_config,
    grpo_code.get_config,
    rubric_config.get_config,
    rlif_math.get_config,
    distil_math.get_config,
    opd_math.get_config,
]


@pytest.mark.parametrize("get_config", CONFIGS, ids=lambda f: f.__module__.split(".")[-1])
def test_every_experiment_config_maps_one_to_one_onto_run_config(get_config):
    c = get_config()
    if c.opd.enabled:  # the teacher folder comes by flag
        c.opd.teacher = "/ckpt/teacher"
    cfg = experiment.from_configdict(c)
    # Sections mirror the dataclasses: every key of the ConfigDict is a field, with its value.
    for section, values in c.to_dict().items():
        if section not in run_config.SECTIONS:
            assert getattr(cfg, section) == values
            continue
        typed = getattr(cfg, section)
        for key, value in values.items():
            got = getattr(typed, key)
            assert got == (tuple(value) if isinstance(value, list) else value), (section, key)
    # config.json round trip: what the loop writes reads back to the same RunConfig.
    again = run_config.from_dict(json.loads(json.dumps(run_config.to_dict(cfg))))
    assert again == cfg


def test_sections_are_the_dataclasses_of_their_libraries():
    cfg = experiment.from_configdict(grpo_math.get_config())
    assert isinstance(cfg.rl, rl_config.RLConfig)
    assert set(run_config.SECTIONS) >= {"model", "data", "rl", "opt", "ckpt", "delta", "rlif"}
    assert cfg.system == grpo_math.get_config().data.system


@pytest.mark.parametrize(
    "section, key, value, match",
    [
        ("rl", "group_sise", 4, r"rl.group_sise: unknown key"),
        ("data", "sorce", "x", r"data.sorce: unknown key"),
        ("rl", "loss_agg", "mean", r"rl: .*loss_agg"),
        ("opt", "lr", -1.0, r"opt: .*lr"),
        ("rlif", "kl_cov", True, r"rlif.kl_cov is gone: .*rl.policy_loss='kl_cov'"),
    ],
)
def test_bad_keys_and_values_fail_naming_the_key(section, key, value, match):
    c = grpo_math.get_config()
    c[section][key] = value
    with pytest.raises(ConfigError, match=match):
        experiment.from_configdict(c)


def test_unknown_section_fails_naming_it():
    d = run_config.to_dict(run_config.RunConfig())
    d["rubirc"] = {}
    with pytest.raises(ConfigError, match="rubirc: unknown config section"):
        run_config.from_dict(d)


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def _module(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_only_the_boundary_imports_ml_collections_and_there_is_no_import_circle():
    files = sorted((ROOT / "rlvr_jax").rglob("*.py"))
    modules = {_module(p): p for p in files}
    graph = {}
    for name, path in modules.items():
        imported = _imports(path)
        if any(i == "ml_collections" or i.startswith("ml_collections.") for i in imported):
            assert name == "rlvr_jax.config", f"{path} imports ml_collections"
        graph[name] = {i for i in imported if i in modules and i != name}
    # Depth-first search for a cycle among rlvr_jax modules.
    state: dict[str, int] = {}

    def visit(node, trail):
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                pytest.fail("import circle: " + " -> ".join([*trail, node, nxt]))
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])


def test_the_loop_names_no_task_and_no_technique():
    source = (ROOT / "rlvr_jax" / "train" / "loop.py").read_text()
    code = "\n".join(line.split("#")[0] for line in source.splitlines())
    body = code[code.index("def run(") :]
    words = ("rubric", "pow3r", "code", "math", "delta", "opd", "distil", "rlif", "dapo", "kl_cov")
    for word in words:
        assert f'"{word}' not in body and f".{word}" not in body, word
    # The loop's body fits on a screen.
    run_fn = next(
        n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == "run"
    )
    assert run_fn.end_lineno - run_fn.lineno < 70
