"""The rlvr_jax side of `grpo_step_vs_trl`: GRPO steps as train/loop.py runs them, then the bare
gradient of the last step's batch, in a child process of its own (which imports no torch)."""

# pylint: disable=invalid-name
from __future__ import annotations

import collections
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

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


def make_bare_grad(cfg: config_lib.ModelConfig, param_shd: params_lib.Params):
    """Jitted value and gradient of the completion tokens' mean negative log-prob over (params,
    prompt, prompt mask, completion, completion mask): the train step's forward + backward with
    no policy loss, scan, optimizer or metrics around it. Rows split over the mesh's batch axes,
    gradients reduced to the params' (replicated) layout, as the step needs them."""

    def loss(params, prompt_BxTp, prompt_mask_BxTp, completion_BxTc, completion_mask_BxTc):
        logps_BxTc, _ = forward_lib.completion_logps(
            params,
            prompt_BxTp,
            prompt_mask_BxTp,
            completion_BxTc,
            completion_mask_BxTc,
            model_cfg=cfg,
        )
        mask = completion_mask_BxTc
        return -jnp.sum(logps_BxTc * mask) / jnp.maximum(jnp.sum(mask), 1)

    mesh = jax.tree.leaves(param_shd)[0].mesh
    rows = mesh_lib.batch_sharding(mesh)
    return jax.jit(
        jax.value_and_grad(loss),
        in_shardings=(param_shd, *[rows] * 4),
        out_shardings=(mesh_lib.replicated(mesh), param_shd),
    )


class JaxGRPO:
    """rlvr_jax's GRPO step as loop.py runs it, timing sample / reference / train separately."""

    def __init__(
        self,
        cfg: config_lib.ModelConfig,
        params: params_lib.Params,
        tok: tokenizer_lib.Tokenizer,
        prompts: Sequence[str],
        *,
        G: int,
        max_new_tokens: int,
        beta: float,
        reward: Callable[[str], float],
    ):
        self.cfg, self.tok, self.reward, self.max_new_tokens = cfg, tok, reward, max_new_tokens
        assert cfg.vocab_size >= tok.vocab_size, (cfg.vocab_size, tok.vocab_size)
        self.rl = rl_config.RLConfig(group_size=G, beta=beta)
        optimizer = state_lib.make_optimizer(state_lib.OptConfig(lr=1e-6))
        # eos_ids=(): no stop token, every completion is max_new_tokens long (TRL: min_new_tokens).
        self.sampling_cfg = sampling.SamplingConfig(
            max_new_tokens=max_new_tokens, pad_id=tok.pad_id
        )
        # The default experiment's layout: every device in a data mesh (one device: the same code).
        self.mesh = mesh_lib.make_mesh((-1, 1, 1))
        self.param_shd = mesh_lib.param_shardings(self.mesh, params_lib.param_axes(cfg))
        state_shd = state_lib.state_shardings(self.param_shd, optimizer)
        host = jax.device_get(params)  # fresh device copies from host: the state is donated
        self.ref_params = jax.device_put(host, self.param_shd)
        self.state = state_lib.make_init_state(optimizer, state_shd)(
            jax.device_put(host, self.param_shd)
        )
        self.train_step = step_lib.make_train_step(
            model_cfg=cfg,
            objective=objective_lib.compose(self.rl),
            optimizer=optimizer,
            shardings=state_shd,
        )
        self.ref_logps_fn = forward_lib.make_logps_fn(model_cfg=cfg, param_shardings=self.param_shd)
        self.bare_grad = make_bare_grad(cfg, self.param_shd)
        self.examples = [
            data_types.Example(uid=str(i), prompt=q, answer="") for i, q in enumerate(prompts)
        ]
        self.batch = None  # the last step's batch, for the bare gradient
        self.times = collections.defaultdict(list)  # phase -> seconds per step

    def _score(self, texts: list[str], examples: list) -> list[math_lib.MathVerdict]:
        del examples
        return [math_lib.MathVerdict(self.reward(t), False, None, "ok") for t in texts]

    def step(self) -> None:
        t0 = time.perf_counter()
        # --- Rollout (sample + host reward) ---
        r = single_turn.sample(
            self.state.params,
            self.tok,
            self.examples,
            distributed.replicated_key(self.mesh, 0, len(self.times["step"])),
            G=self.rl.group_size,
            system=None,
            model_cfg=self.cfg,
            sampling_cfg=self.sampling_cfg,
            score_fn=self._score,
            mesh=self.mesh,
        )
        assert (r.sample.lengths_B == self.max_new_tokens).all(), r.sample.lengths_B
        t1 = time.perf_counter()
        # --- Advantages, reference log-probs ---
        adv_B = np.asarray(advantages_lib.compute(r.rewards_B, self.rl), np.float32)
        batch = distributed.global_rows(rollout_types.to_batch(r, adv_B), self.mesh)
        self.batch = batch.replace(
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
        self.state, m = self.train_step(self.state, self.batch)
        m = jax.device_get(m)
        assert m["train/skipped"] == 0, m
        t3 = time.perf_counter()
        for name, dt in (("sample", t1 - t0), ("ref", t2 - t1), ("train", t3 - t2)):
            self.times[name].append(dt)
        self.times["step"].append(t3 - t0)

    def time_bare_grad(self, n: int) -> list[float]:
        """Seconds of each of `n` bare-gradient calls on the last step's batch and the current
        params (compiled first, untimed)."""
        b = self.batch
        args = (
            self.state.params,
            b.prompt_BxTp,
            b.prompt_mask_BxTp,
            b.completion_BxTc,
            b.completion_mask_BxTc,
        )
        jax.block_until_ready(self.bare_grad(*args))  # compiles
        times = []
        for _ in range(n):
            t = time.perf_counter()
            jax.block_until_ready(self.bare_grad(*args))
            times.append(time.perf_counter() - t)
        return times


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
    """Loads `folder`'s weights and tokenizer, runs one untimed GRPO step (it compiles) and
    `steps` timed ones, then times the bare gradient `steps` times.

    Returns {"times": phase -> [seconds per timed step], "prompt_lens", "env"}; the phases are
    sample, ref, train, step (their sum) and bare_grad.
    """
    cfg, params, _ = hf.load_checkpoint(folder)
    tok = tokenizer_lib.load_tokenizer(folder)
    grpo = JaxGRPO(
        cfg, params, tok, prompts, G=G, max_new_tokens=max_new_tokens, beta=beta, reward=reward
    )
    del params
    for _ in range(steps + 1):
        grpo.step()
    times = {k: v[1:] for k, v in grpo.times.items()}  # the first step compiled
    times["bare_grad"] = grpo.time_bare_grad(steps)
    return dict(
        times=times,
        prompt_lens=[len(tok.apply_chat_template(q)) for q in prompts],
        env=f"jax {jax.__version__} ({jax.default_backend()}, {jax.device_count()} device)",
    )
