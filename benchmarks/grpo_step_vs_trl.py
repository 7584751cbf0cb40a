"""One GRPO step: rlvr_jax against TRL's `GRPOTrainer` on the same weights, each in its own process.

    python -m benchmarks.grpo_step_vs_trl [--sizes=3m,30m] [--steps=3] [--rounds=1]

Same Qwen2-shaped random weights (rlvr_jax's `init_params`, exported with `hf.save_checkpoint` and
loaded by TRL through `from_pretrained`), same tiny tokenizer and chat template, 8 prompts x 8
completions x exactly 128 new tokens (EOS never stops rlvr_jax; TRL gets `min_new_tokens=128`),
temperature 1.0, beta=0.04 (k3 KL to a frozen reference), token-mean loss, AdamW at lr 1e-6 with
global-norm clip 1.0, one optimizer update per step, the same character-count reward on both sides.

A step is sample -> reward -> advantages -> reference log-probs -> forward + backward + update, as
`rlvr_jax/train/loop.py` wires it with the default config (one CPU device per core, the batch split
over a data mesh, weights replicated; `--single_device` for one device with XLA's intra-op threads)
and as `trainer.train()` runs it (torch intra-op threads = cores, gradient checkpointing off so both
sides do the same FLOPs).

Each system runs in a child process of its own: grpo_step_jax.py (torch hidden from the
transformers tokenizer loader, so never imported) and grpo_step_trl.py (no JAX imported). The
parent writes each size's weights and tokenizer to a folder once, then runs an rlvr_jax child and
a TRL child, and repeats that pair `--rounds` times. Each child loads the folder, runs one untimed
step (XLA compiles; torch's first-call costs) and `--steps` timed ones, and hands its phase times
back as JSON; the figure is the median over every timed step of every round. Alternating whole
processes spreads machine noise over both sides.

Why separate processes: this benchmark used to run both systems in one process, alternating step
by step. After its parallel matmuls torch's OpenMP workers keep spinning for a while (the default
wait policy), and on a 2-core CPU they took the cores from XLA's threads: rlvr_jax's 30M train phase
took 18 s there against 12 s in a process of its own (2026-12-02). `OMP_WAIT_POLICY=PASSIVE`
removes most of that, but it changes how torch itself runs, and nobody trains with torch and
rlvr_jax in one process; so each side now runs alone, as in a peer harness.

The rlvr_jax child also times the bare gradient of its last step's batch: `jit(value_and_grad)` of
the completion tokens' mean negative log-prob, same params, same tensors, same layout (params
replicated over the data mesh, rows split), compiled untimed, then timed `--steps` times right
after the train steps. Train phase / bare gradient is what the step adds to forward + backward
(the policy loss with its KL term, entropy and ratio metrics, the optimizer update, the metrics
fetch); the goal is <= 1.15.

"% of limit" is completion tokens/s over the CPU's float32 matmul peak (the best of measurements
before and after each size, in the parent while no child runs) / (10 x params FLOPs per token):
generation 2, reference forward 2, policy forward + backward 6. With num_iterations=1 neither side
runs an old-policy forward (the sampler's log-probs, resp. TRL's detached current log-probs, are the
behaviour policy's).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

import numpy as np
from absl import app, flags

_SIZES = flags.DEFINE_list("sizes", ["3m", "30m"], "Model sizes: 3m (qwen2_3m), 30m (qwen2_30m).")
_STEPS = flags.DEFINE_integer("steps", 3, "Timed GRPO steps per system and round.")
_ROUNDS = flags.DEFINE_integer("rounds", 1, "rlvr_jax / TRL process pairs per size.")
_SINGLE_DEVICE = flags.DEFINE_bool(
    "single_device", False, "rlvr_jax on one CPU device instead of one per core."
)
# The parent starts the children with these; not for the command line.
_ROLE = flags.DEFINE_enum("role", "parent", ["parent", "jax", "trl"], "This process's part.")
_FOLDER = flags.DEFINE_string("folder", None, "Child: the HF folder (weights + tokenizer).")
_OUT = flags.DEFINE_string("out", None, "Child: where to write its times (JSON).")

PRESET = {"3m": "qwen2_3m", "30m": "qwen2_30m"}
GOAL = {"3m": 1.0, "30m": 1.0}  # rlvr_jax / TRL tokens/s
OVERHEAD_GOAL = 1.15  # rlvr_jax train phase / bare gradient
P, G, TC, BETA = 8, 8, 128, 0.04  # prompts, completions per prompt, new tokens, KL coefficient
PROMPTS = [
    f"What is {a} + {b}? Reply with the sum."
    for a, b in np.random.RandomState(0).randint(10, 1000, (P, 2))
]
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # children run from here


def char_reward(text: str) -> float:
    """A trivial verifiable reward: the fraction of digits in the completion."""
    return sum(c.isdigit() for c in text) / max(len(text), 1)


# --- Children ---


def _child(role: str, folder: str, out: str) -> None:
    """Runs one system on `folder`'s weights and writes its report to `out`."""
    if role == "jax":
        # transformers (the tokenizer's loader) imports torch whenever it can find it; hidden, it
        # loads the tokenizer without it, and torch's OpenMP runtime stays out of this process.
        sys.modules["torch"] = None
        from rlvr_jax import mesh as mesh_lib

        if not _SINGLE_DEVICE.value:
            mesh_lib.use_cpu_devices()  # one CPU device per core, before jax starts a backend
        from benchmarks import grpo_step_jax as system
    else:
        from benchmarks import grpo_step_trl as system
    report = system.run(
        folder, _STEPS.value, PROMPTS, G=G, max_new_tokens=TC, beta=BETA, reward=char_reward
    )
    with open(out, "w") as f:
        json.dump(report, f)


def _run_child(role: str, folder: str, out: str) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.grpo_step_vs_trl", f"--role={role}"]
    cmd += [f"--folder={folder}", f"--out={out}", f"--steps={_STEPS.value}"]
    if _SINGLE_DEVICE.value:
        cmd.append("--single_device")
    subprocess.run(cmd, check=True, cwd=_ROOT)
    with open(out) as f:
        return json.load(f)


# --- Parent ---


def _write_weights(size: str, folder: str) -> int:
    """rlvr_jax's random init of the size's preset as an HF folder with the tiny tokenizer;
    returns the parameter count. (Imported here: the TRL child needs none of it.)"""
    import jax

    from rlvr_jax.models import config as config_lib
    from rlvr_jax.models import hf
    from rlvr_jax.models import params as params_lib
    from rlvr_jax.models import tokenizer as tokenizer_lib

    cfg = config_lib.get_preset(PRESET[size])
    hf.save_checkpoint(folder, cfg, params_lib.init_params(cfg, jax.random.key(0)))
    shutil.copytree(tokenizer_lib.TINY_TOKENIZER_DIR, folder, dirs_exist_ok=True)
    return cfg.num_params()


def _measure_peak() -> float:
    """The matmul peak (best of jax and torch), measured here while no child runs."""
    import torch

    from benchmarks import peak as peak_lib

    torch.set_num_threads(os.cpu_count() or 1)
    return peak_lib.matmul_peak_flops()


def summarize(size: str, n: int, jax_runs: list[dict], trl_runs: list[dict]) -> dict:
    """One size's row from its children's reports: medians over every timed step of every round."""
    pool = lambda runs: {k: [t for r in runs for t in r["times"][k]] for k in runs[0]["times"]}
    jt = {k: statistics.median(v) for k, v in pool(jax_runs).items()}
    tt = {k: statistics.median(v) for k, v in pool(trl_runs).items()}
    trl_parts = {
        "generate": tt["generate"],
        "ref+score": tt["rollout+ref"] - tt["generate"],
        "train": tt["step"] - tt["rollout+ref"],
    }
    return dict(
        size=size,
        n=n,
        jax=P * G * TC / jt["step"],
        trl=P * G * TC / tt["step"],
        jax_parts={k: jt[k] for k in ("sample", "ref", "train")},
        trl_parts=trl_parts,
        bare=jt["bare_grad"],
        overhead=jt["train"] / jt["bare_grad"],
        timed=(sum(len(r["times"]["step"]) for r in jax_runs), len(jax_runs)),
        prompt_lens=jax_runs[0]["prompt_lens"],
    )


def _fmt_parts(parts: dict[str, float]) -> str:
    return " / ".join(f"{k} {v:.2f}s" for k, v in parts.items())


def _print_size(r: dict) -> None:
    size, (timed, rounds) = r["size"], r["timed"]
    lens = f"{min(r['prompt_lens'])}-{max(r['prompt_lens'])}"
    print(
        f"{size}: {PRESET[size]}, {r['n'] / 1e6:.1f}M params, prompts {lens} tokens, "
        f"{timed} timed step(s) per system in {rounds} round(s)"
    )
    for name, key in (("rlvr_jax", "jax"), ("TRL", "trl")):
        print(f"{size}: {name:8s} {r[key]:5.0f} tok/s  [{_fmt_parts(r[key + '_parts'])}]")
    ratio, goal = r["jax"] / r["trl"], GOAL[size]
    print(
        f"{size}: ratio rlvr_jax/TRL {ratio:.2f} (goal >= {goal}: "
        f"{'met' if ratio >= goal else 'NOT met'})"
    )
    train = r["jax_parts"]["train"]
    print(
        f"{size}: bare gradient {r['bare']:.2f}s, train phase {train:.2f}s, overhead Y/X = "
        f"{r['overhead']:.2f}x (goal <= {OVERHEAD_GOAL}: "
        f"{'met' if r['overhead'] <= OVERHEAD_GOAL else 'NOT met'})",
        flush=True,
    )


def _print_table(rows: list[dict], peaks: list[float]) -> None:
    peak = max(peaks)
    print(
        f"\nmatmul peak (2048^3 float32, best of jax/torch): {peak / 1e9:.0f} GFLOP/s "
        f"(measured {', '.join(f'{p / 1e9:.0f}' for p in peaks)})\n"
        "limit = peak / (10 x params FLOPs) tok/s: generation 2 + reference forward 2 + "
        "forward/backward 6\n(num_iterations=1: no old-policy forward on either side)"
    )
    print(
        "\n| model | params | rlvr_jax tok/s | TRL tok/s | ratio | goal | rlvr_jax % of limit "
        "| TRL % of limit | rlvr_jax sample / ref / train (s) "
        "| TRL generate / ref+score / train (s) | rlvr_jax bare gradient (s) "
        "| train / bare gradient |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        limit = peak / (10 * r["n"])  # tokens/s at the matmul peak
        jp, tp = r["jax_parts"].values(), r["trl_parts"].values()
        print(
            f"| {PRESET[r['size']]} | {r['n'] / 1e6:.1f}M | {r['jax']:.0f} | {r['trl']:.0f} "
            f"| {r['jax'] / r['trl']:.2f} | >= {GOAL[r['size']]} "
            f"| {r['jax'] / limit:.1%} | {r['trl'] / limit:.1%} "
            f"| {' / '.join(f'{v:.2f}' for v in jp)} | {' / '.join(f'{v:.2f}' for v in tp)} "
            f"| {r['bare']:.2f} | {r['overhead']:.2f} (<= {OVERHEAD_GOAL}) |"
        )


def _parent() -> None:
    if set(_SIZES.value) - set(PRESET) or _STEPS.value < 1 or _ROUNDS.value < 1:
        raise app.UsageError(f"--sizes must be among {sorted(PRESET)}, --steps, --rounds >= 1")
    if not _SINGLE_DEVICE.value:
        # The peak's jax side runs here, laid out as the rlvr_jax child (which inherits the flag).
        from rlvr_jax import mesh as mesh_lib

        mesh_lib.use_cpu_devices()
    peaks = [_measure_peak()]  # measured again after each size (a shared machine)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for size in _SIZES.value:
            folder = os.path.join(workdir, f"qwen2_{size}")
            n = _write_weights(size, folder)
            runs = {"jax": [], "trl": []}
            for i in range(_ROUNDS.value):
                for role in ("jax", "trl"):
                    out = os.path.join(workdir, f"{role}_{size}_{i}.json")
                    runs[role].append(_run_child(role, folder, out))
            if not rows:
                env = f"{runs['jax'][0]['env']}, {runs['trl'][0]['env']}"
                print(f"{env}, {os.cpu_count()} CPUs")
            rows.append(summarize(size, n, runs["jax"], runs["trl"]))
            _print_size(rows[-1])
            peaks.append(_measure_peak())
    _print_table(rows, peaks)


def main(argv):
    del argv
    if _ROLE.value == "parent":
        _parent()
    elif not _FOLDER.value or not _OUT.value:
        raise app.UsageError("a child needs --folder and --out")
    else:
        _child(_ROLE.value, _FOLDER.value, _OUT.value)


if __name__ == "__main__":
    app.run(main)
