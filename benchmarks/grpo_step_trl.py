"""The TRL side of `grpo_step_vs_trl`: `GRPOTrainer` steps on the same weights, in a process that
never imports JAX."""

from __future__ import annotations

import collections
import os
import tempfile
import time
from collections.abc import Callable, Sequence

import datasets
import torch
import transformers
import trl


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
    """Wall time of each TRL step."""

    def __init__(self):
        self.times, self._start = [], 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._start)


def run(
    folder: str,
    steps: int,
    prompts: Sequence[str],
    *,
    G: int,
    max_new_tokens: int,
    beta: float,
    reward: Callable[[str], float],
) -> dict:
    """Loads `folder` with `from_pretrained` and trains one untimed step (torch's first-call
    costs) and `steps` timed ones, torch intra-op threads = cores.

    Returns {"times": phase -> [seconds per timed step], "env"}; the phases are step,
    generate and rollout+ref (generation, reference log-probs and scoring).
    """
    torch.set_num_threads(os.cpu_count() or 1)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()

    def trl_reward(completions, **kwargs) -> list[float]:
        """`reward` on TRL's conversational completions ([{"role", "content"}] per sample)."""
        del kwargs
        return [reward(c[-1]["content"] if isinstance(c, list) else c) for c in completions]

    dataset = datasets.Dataset.from_dict(
        {"prompt": [[{"role": "user", "content": q}] for q in prompts]}
    )
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as output_dir:
        args = trl.GRPOConfig(
            output_dir=output_dir,
            per_device_train_batch_size=len(prompts) * G,
            num_generations=G,
            max_completion_length=max_new_tokens,
            generation_kwargs={"min_new_tokens": max_new_tokens},
            beta=beta,
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
        trainer = TimedGRPOTrainer(
            model=folder,
            reward_funcs=trl_reward,
            args=args,
            train_dataset=dataset,
            processing_class=transformers.AutoTokenizer.from_pretrained(folder),
            callbacks=[timer],
        )
        trainer.phase_s = collections.defaultdict(list)
        trainer.remove_callback(transformers.PrinterCallback)  # its end-of-run log dict is noise
        trainer.train()
    times = {k: v[1:] for k, v in trainer.phase_s.items()}
    times["step"] = timer.times[1:]
    env = (
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"transformers {transformers.__version__}, trl {trl.__version__}"
    )
    return dict(times=times, env=env)
