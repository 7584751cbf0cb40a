"""One GRPO step: rlvr_jax against TRL's `GRPOTrainer` on the same weights.

    python benchmarks/grpo_step_vs_trl.py [--sizes=3m,30m] [--steps=3]

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
Both sides exclude their first step (XLA compiles; torch's first-call costs); the figure is the
median of `--steps` timed steps. The two alternate step by step (an rlvr_jax step runs after each
TRL step, outside TRL's timed span), so machine noise hits both alike.

"% of limit" is completion tokens/s over the CPU's float32 matmul peak (the best of measurements
before and after each size) / (10 x params FLOPs per token): generation 2, reference forward 2,
policy forward + backward 6. With num_iterations=1 neither side runs an old-policy forward (the
sampler's log-probs, resp. TRL's detached current log-probs, are the behaviour policy's).
"""

from __future__ import annotations

import collections
import os
import shutil
import statistics
import tempfile
import time

import datasets
import jax
import numpy as np
import torch
import transformers
import trl
from absl import app, flags

from benchmarks import peak as peak_lib
from rlvr_jax import distributed, sampling
from rlvr_jax import mesh as mesh_lib
from rlvr_jax.data import types as data_types
from rlvr_jax.models import config as config_lib
from rlvr_jax.models import hf
from rlvr_jax.models import params as params_lib
from rlvr_jax.models import tokenizer as tokenizer_lib
from rlvr_jax.objectives import advantages as advantages_lib
from rlvr_jax.objectives import forward as forward_lib
from rlvr_jax.objectives import objective as objective_lib
from rlvr_jax.objectives import rl_config
from rlvr_jax.rewards import math as math_lib
from rlvr_jax.rollout import single_turn
from rlvr_jax.rollout import types as rollout_types
from rlvr_jax.train import state as state_lib
from rlvr_jax.train import step as step_lib

_SIZES = flags.DEFINE_list("sizes", ["3m", "30m"], "Model sizes: 3m (qwen2_3m), 30m (qwen2_30m).")
_STEPS = flags.DEFINE_integer("steps", 3, "Timed GRPO steps per system (median reported).")
_SINGLE_DEVICE = flags.DEFINE_bool(
    "single_device", False, "rlvr_jax on one CPU device instead of one per core."
)

PRESET = {"3m": "qwen2_3m", "30m": "qwen2_30m"}
GOAL = {"3m": 2.0, "30m": 1.5}  # rlvr_jax / TRL tokens/s
P, G, TC, BETA = 8, 8, 128, 0.04  # prompts, completions per prompt, new tokens, KL coefficient
PROMPTS = [
    f"What is {a} + {b}? Reply with the sum."
    for a, b in np.random.RandomState(0).randint(10, 1000, (P, 2))
]


def char_reward(text: str) -> float:
    """A trivial verifiable reward: the fraction of digits in the completion."""
    return sum(c.isdigit() for c in text) / max(len(text), 1)


class JaxGRPO:
    """rlvr_jax's GRPO step as loop.py runs it, timing sample / reference / train separately."""

    def __init__(self, cfg: config_lib.ModelConfig, params: params_lib.Params):
        self.cfg = cfg
        self.tok = tokenizer_lib.load_tiny_tokenizer()
        assert cfg.vocab_size >= self.tok.vocab_size, (cfg.vocab_size, self.tok.vocab_size)
        self.rl = rl_config.RLConfig(group_size=G, beta=BETA)
        optimizer = state_lib.make_optimizer(state_lib.OptConfig(lr=1e-6))
        # eos_ids=(): no stop token, so every completion is exactly TC tokens (TRL: min_new_tokens).
        self.sampling_cfg = sampling.SamplingConfig(max_new_tokens=TC, pad_id=self.tok.pad_id)
        # The default experiment's layout: every device in a data mesh (one device: the same code).
        self.mesh = mesh_lib.make_mesh((-1, 1, 1))
        param_shd = mesh_lib.param_shardings(self.mesh, params_lib.param_axes(cfg))
        state_shd = state_lib.state_shardings(param_shd, optimizer)
        host = jax.device_get(params)  # fresh device copies from host: the state is donated
        self.ref_params = jax.device_put(host, param_shd)
        self.state = state_lib.make_init_state(optimizer, state_shd)(
            jax.device_put(host, param_shd)
        )
        self.train_step = step_lib.make_train_step(
            model_cfg=cfg,
            objective=objective_lib.compose(self.rl),
            optimizer=optimizer,
            shardings=state_shd,
        )
        self.ref_logps_fn = forward_lib.make_logps_fn(model_cfg=cfg, param_shardings=param_shd)
        self.examples = [
            data_types.Example(uid=str(i), prompt=q, answer="") for i, q in enumerate(PROMPTS)
        ]
        self.times = collections.defaultdict(list)  # phase -> seconds per step

    def _score(self, texts: list[str], examples: list) -> list[math_lib.MathVerdict]:
        del examples
        return [math_lib.MathVerdict(char_reward(t), False, None, "ok") for t in texts]

    def step(self) -> None:
        t0 = time.perf_counter()
        # --- Rollout (sample + host reward) ---
        r = single_turn.sample(
            self.state.params,
            self.tok,
            self.examples,
            distributed.replicated_key(self.mesh, 0, len(self.times["step"])),
            G=G,
            system=None,
            model_cfg=self.cfg,
            sampling_cfg=self.sampling_cfg,
            score_fn=self._score,
            mesh=self.mesh,
        )
        assert (r.sample.lengths_B == TC).all(), r.sample.lengths_B
        t1 = time.perf_counter()
        # --- Advantages, reference log-probs ---
        adv_B = np.asarray(advantages_lib.compute(r.rewards_B, self.rl), np.float32)
        batch = distributed.global_rows(rollout_types.to_batch(r, adv_B), self.mesh)
        batch = batch.replace(
            ref_logps_BxTc=jax.block_until_ready(
                self.ref_logps_fn(
                    self.ref_params,
                    batch.prompt_BxTp,
                    batch.prompt_mask_BxTp,
                    batch.completion_BxTc,
                    batch.completion_mask_BxTc,
                )
            )
        )
        t2 = time.perf_counter()
        # --- One optimizer update ---
        self.state, m = self.train_step(self.state, batch)
        m = jax.device_get(m)
        assert m["train/skipped"] == 0, m
        t3 = time.perf_counter()
        for name, dt in (("sample", t1 - t0), ("ref", t2 - t1), ("train", t3 - t2)):
            self.times[name].append(dt)
        self.times["step"].append(t3 - t0)


class TimedGRPOTrainer(trl.GRPOTrainer):
    """TRL's trainer, recording its generation and generate-and-score (incl. reference) times."""

    phase_s: collections.defaultdict

    def _generate(self, *args, **kwargs):
        t = time.perf_counter()
        out = super()._generate(*args, **kwargs)
        self.phase_s["generate"].append(time.perf_counter() - t)
        return out

    def _generate_and_score_completions(self, *args, **kwargs):
        t = time.perf_counter()
        out = super()._generate_and_score_completions(*args, **kwargs)
        self.phase_s["rollout+ref"].append(time.perf_counter() - t)
        return out


class StepTimer(transformers.TrainerCallback):
    """Wall time of each TRL step; runs `between()` after each one, outside the timed span."""

    def __init__(self, between):
        self.times, self._between, self._start = [], between, 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._start)
        self._between()


def trl_reward(completions, **kwargs) -> list[float]:
    """`char_reward` on TRL's conversational completions ([{"role", "content"}] per sample)."""
    del kwargs
    return [char_reward(c[-1]["content"] if isinstance(c, list) else c) for c in completions]


def run_size(size: str, steps: int, workdir: str) -> dict:
    cfg = config_lib.get_preset(PRESET[size])
    params = params_lib.init_params(cfg, jax.random.key(0))
    folder = os.path.join(workdir, f"qwen2_{size}")
    hf.save_checkpoint(folder, cfg, params)
    shutil.copytree(tokenizer_lib.TINY_TOKENIZER_DIR, folder, dirs_exist_ok=True)

    jax_grpo = JaxGRPO(cfg, params)
    prompt_lens = [len(jax_grpo.tok.apply_chat_template(q)) for q in PROMPTS]

    args = trl.GRPOConfig(
        output_dir=os.path.join(workdir, f"trl_{size}"),
        per_device_train_batch_size=P * G,
        num_generations=G,
        max_completion_length=TC,
        generation_kwargs={"min_new_tokens": TC},
        beta=BETA,
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,  # TRL defaults it on; off, both sides do the same FLOPs
        lr_scheduler_type="constant",
        max_steps=steps + 1,  # the first step is torch's warm-up, not timed
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        model_init_kwargs={"dtype": torch.float32},
    )
    dataset = datasets.Dataset.from_dict(
        {"prompt": [[{"role": "user", "content": q}] for q in PROMPTS]}
    )
    # Interleaved: an rlvr_jax step after each TRL step (its first one compiles, and is not timed).
    timer = StepTimer(jax_grpo.step)
    trainer = TimedGRPOTrainer(
        model=folder,
        reward_funcs=trl_reward,
        args=args,
        train_dataset=dataset,
        processing_class=transformers.AutoTokenizer.from_pretrained(folder),
        callbacks=[timer],
    )
    trainer.phase_s = collections.defaultdict(list)
    trainer.remove_callback(transformers.PrinterCallback)  # its end-of-run log dict is noise here
    trainer.train()

    jax_s = statistics.median(jax_grpo.times["step"][1:])
    trl_s = statistics.median(timer.times[1:])
    jax_parts = {k: statistics.median(v[1:]) for k, v in jax_grpo.times.items() if k != "step"}
    trl_gen = statistics.median(trainer.phase_s["generate"][1:])
    trl_roll = statistics.median(trainer.phase_s["rollout+ref"][1:])
    trl_parts = {"generate": trl_gen, "ref+score": trl_roll - trl_gen, "train": trl_s - trl_roll}
    row = dict(size=size, n=cfg.num_params(), jax=P * G * TC / jax_s, trl=P * G * TC / trl_s)
    row.update(jax_parts=jax_parts, trl_parts=trl_parts, prompt_lens=prompt_lens)
    return row


def _fmt_parts(parts: dict[str, float]) -> str:
    return " / ".join(f"{k} {v:.2f}s" for k, v in parts.items())


def main(argv):
    del argv
    if not _SINGLE_DEVICE.value:
        mesh_lib.use_cpu_devices()  # one CPU device per core, before jax starts a backend
    if set(_SIZES.value) - set(PRESET) or _STEPS.value < 1:
        raise app.UsageError(f"--sizes must be among {sorted(PRESET)} and --steps >= 1")
    torch.set_num_threads(os.cpu_count() or 1)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    peaks = [peak_lib.matmul_peak_flops()]  # measured again after each size (a shared machine)
    print(
        f"jax {jax.__version__} ({jax.default_backend()}, {jax.device_count()} device), "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), transformers "
        f"{transformers.__version__}, trl {trl.__version__}, {os.cpu_count()} CPUs"
    )
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for size in _SIZES.value:
            r = run_size(size, _STEPS.value, workdir)
            rows.append(r)
            lens = f"{min(r['prompt_lens'])}-{max(r['prompt_lens'])}"
            print(f"{size}: {PRESET[size]}, {r['n'] / 1e6:.1f}M params, prompts {lens} tokens")
            for name, key in (("rlvr_jax", "jax"), ("TRL", "trl")):
                print(f"{size}: {name:8s} {r[key]:5.0f} tok/s  [{_fmt_parts(r[key + '_parts'])}]")
            ratio, goal = r["jax"] / r["trl"], GOAL[size]
            met = "met" if ratio >= goal else "NOT met"
            print(f"{size}: ratio rlvr_jax/TRL {ratio:.2f} (goal >= {goal}: {met})", flush=True)
            peaks.append(peak_lib.matmul_peak_flops())
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
        "| TRL generate / ref+score / train (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        limit = peak / (10 * r["n"])  # tokens/s at the matmul peak
        jp, tp = r["jax_parts"].values(), r["trl_parts"].values()
        print(
            f"| {PRESET[r['size']]} | {r['n'] / 1e6:.1f}M | {r['jax']:.0f} | {r['trl']:.0f} "
            f"| {r['jax'] / r['trl']:.2f} | >= {GOAL[r['size']]} "
            f"| {r['jax'] / limit:.1%} | {r['trl'] / limit:.1%} "
            f"| {' / '.join(f'{v:.2f}' for v in jp)} | {' / '.join(f'{v:.2f}' for v in tp)} |"
        )


if __name__ == "__main__":
    app.run(main)
