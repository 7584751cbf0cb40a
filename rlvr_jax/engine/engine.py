"""The rollout engine's host side: continuous batching over decode slots, and the slot API.

`Engine.generate` samples a batch of rows (G per prompt) through S slots: each prompt is prefilled
once (in chunks) into a staging cache and copied into G slots; decode runs K steps at a time in
one jitted loop; between chunks the host frees the slots whose rows stopped (a stop id or their
budget) and refills them with pending rows. Finished rows stop costing decode steps, which is
what a static batch pays for a long-tailed length distribution.

The slot API is what multi-turn rollouts drive: `open` (prefill prompts into chosen slots),
`resume` (go on sampling with a budget and stop ids), `step` (one decode chunk; which slots
stopped), `append` (write an observation onto a live cache), `sampled` (what a slot has sampled
since a count), `free`. Only tokens the policy sampled have log-probs.

Row r samples with the r-th row of `jax.random.uniform(key, (R, To))`, the same stream the static
sampler (rlvr_jax/sampling.py) gives its row r: for the same key, prompts and budget, both return
the same tokens (up to float rounding in the attention order, which the tests bound).
"""

# pylint: disable=invalid-name
from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from rlvr_jax import mesh as mesh_lib
from rlvr_jax import sampling
from rlvr_jax.engine import slots as slots_lib
from rlvr_jax.models import config as config_lib
from rlvr_jax.models import transformer


@dataclasses.dataclass(frozen=True, kw_only=True)
class EngineConfig:
    """The engine's sizes. Frozen: part of what the compiled functions are keyed on."""

    slots: int = 64  # decode slots S: rows decoded together
    decode_chunk: int = 8  # decode steps K between host checks (a stopped slot idles <= K - 1)
    prefill_chunk: int = 256  # prompt tokens per prefill call (a power of two)
    append_chunk: int = 64  # tokens per `append` call; also the cache's spare room
    # When no row is pending and at most a quarter of the slots hold rows, move them into fewer
    # slots (halving, down to `min_slots`): the tail of a long-tailed batch then decodes at the
    # batch size it needs.
    compact: bool = True
    min_slots: int = 8

    def __post_init__(self):
        for name in ("slots", "decode_chunk", "prefill_chunk", "append_chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"EngineConfig.{name}={getattr(self, name)} must be >= 1")
        for name in ("prefill_chunk", "append_chunk"):
            n = getattr(self, name)
            if n & (n - 1):
                raise ValueError(f"EngineConfig.{name}={n} must be a power of two")


def compiled_part(cfg: sampling.SamplingConfig) -> sampling.SamplingConfig:
    """The sampling config's compiled part (budget and stop ids travel as data): an engine
    samples with the temperature, top-k and top-p it was built with."""
    return dataclasses.replace(cfg, max_new_tokens=1, eos_ids=())


_prefill_jit = jax.jit(slots_lib.prefill_chunk, static_argnames=("model_cfg",), donate_argnums=1)
_insert_jit = jax.jit(slots_lib.insert, donate_argnums=0)
_decode_jit = jax.jit(
    slots_lib.decode, static_argnames=("steps", "window", "model_cfg", "cfg"), donate_argnums=1
)
_append_jit = jax.jit(slots_lib.append, static_argnames=("model_cfg",), donate_argnums=1)
_resume_jit = jax.jit(slots_lib.resume, donate_argnums=0)
_take_jit = jax.jit(slots_lib.take)
_uniforms_jit = jax.jit(
    lambda key, shape: jax.random.uniform(key, shape, jnp.float32), static_argnums=1
)


def _pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


class Engine:
    """S slots of `capacity` cache positions and `sampled` sampled tokens each.

    Holds the device state and its host mirror; takes `params` at every call (they change between
    RL steps, the engine does not). One engine per (capacity, sampled) shape: `generate` makes one.
    """

    def __init__(
        self,
        model_cfg: config_lib.ModelConfig,
        cfg: sampling.SamplingConfig,
        engine_cfg: EngineConfig,
        *,
        capacity: int,
        sampled: int,
        stop_width: int = 4,
        mesh: jax.sharding.Mesh | None = None,
        appendable: bool = True,
    ):
        self.model_cfg, self.cfg, self.ecfg = model_cfg, compiled_part(cfg), engine_cfg
        S = engine_cfg.slots
        self.capacity = capacity
        # Spare room: append writes whole chunks. Single-turn sampling never appends, and every
        # position of the cache costs attention at every decode step.
        self.appendable = appendable
        self.L = capacity + (engine_cfg.append_chunk if appendable else 0)
        self.To = sampled
        self.X = _pow2(stop_width)
        self.mesh = mesh
        slots = slots_lib.init_slots(model_cfg, S, self.L, self.To, self.X)
        if mesh is not None:
            if S % mesh_lib.batch_size_of(mesh):
                raise ValueError(
                    f"EngineConfig.slots={S} does not split over the mesh's "
                    f"{mesh_lib.batch_size_of(mesh)} batch shards"
                )
            slots = jax.device_put(slots, mesh_lib.batch_sharding(mesh))
        self.slots = slots
        self.prefilled = 0  # prompt rows prefilled (one per prompt, not per sample)
        self.slot_steps = 0  # decode chunks x steps x slots: the work decode paid for
        self.len_S = np.zeros(S, np.int32)
        self.count_S = np.zeros(S, np.int32)
        self.live_S = np.zeros(S, bool)
        self.used_S = np.zeros(S, bool)  # holds a row (live or paused)
        self.decode_calls = 0  # decode chunks run (a measure of work)

    # --- the slot API -------------------------------------------------------------------------

    @property
    def free_slots(self) -> np.ndarray:
        return np.flatnonzero(~self.used_S)

    def prefill(self, params, prompts: Sequence[Sequence[int]]):
        """Stages `prompts` (right-padded, prefilled chunk by chunk); returns a staging value for
        `open`. A generator: it yields after each chunk, so a caller can decode in between."""
        B = _pow2(len(prompts))
        longest = max(len(p) for p in prompts)
        C = min(self.ecfg.prefill_chunk, _pow2(max(longest, 16)))
        Tp = -(-longest // C) * C
        if Tp > self.capacity:
            raise ValueError(
                f"engine: a prompt of {longest} tokens exceeds the slot capacity {self.capacity}"
            )
        tokens_BxTp = np.full((B, Tp), self.cfg.pad_id, np.int32)
        lengths_B = np.ones(B, np.int32)  # padding rows: one pad token, never inserted
        for i, p in enumerate(prompts):
            if not len(p):
                raise ValueError(f"engine: prompt {i} is empty")
            tokens_BxTp[i, : len(p)] = p
            lengths_B[i] = len(p)
        cache = transformer.init_cache(self.model_cfg, B, Tp)
        logits = jnp.zeros((B, self.model_cfg.vocab_size), jnp.float32)
        if self.mesh is not None:  # staged prompts are few: replicated, every shard copies its own
            cache, logits = jax.device_put((cache, logits), NamedSharding(self.mesh, P()))
        self.prefilled += len(prompts)
        for start in range(0, Tp, C):
            cache, logits = _prefill_jit(
                params,
                cache,
                logits,
                tokens_BxTp[:, start : start + C],
                lengths_B,
                np.int32(start),
                model_cfg=self.model_cfg,
            )
            if start + C < Tp:
                yield None
        yield (cache, logits, lengths_B)

    def open(
        self,
        staged,
        slot_ids: Sequence[int],
        src: Sequence[int],
        budgets: Sequence[int],
        stops: np.ndarray,
        u_NxTo: jax.Array,
    ) -> None:
        """Slot slot_ids[i] takes staged prompt src[i] and goes live: it samples until budgets[i]
        tokens or a stop id in stops[i] (-1 padded), drawing with uniforms u_NxTo[i]."""
        cache, logits, lengths_B = staged
        S = self.ecfg.slots
        slot_ids = np.asarray(slot_ids, np.int32)
        if self.used_S[slot_ids].any():
            raise ValueError(f"engine.open: slots {slot_ids[self.used_S[slot_ids]]} are in use")
        src_S = np.full(S, -1, np.int32)
        src_S[slot_ids] = src
        budget_S = np.zeros(S, np.int32)
        budget_S[slot_ids] = budgets
        stop_SxX = np.full((S, self.X), -1, np.int32)
        stop_SxX[slot_ids, : stops.shape[1]] = stops
        # Scatter the N rows of uniforms to their slots on device (no host round trip).
        pos_S = np.full(S, len(slot_ids), np.int32)
        pos_S[slot_ids] = np.arange(len(slot_ids))
        u_SxTo = jnp.concatenate([u_NxTo, jnp.zeros((1, self.To), jnp.float32)])[pos_S]
        if self.mesh is not None:
            u_SxTo = jax.device_put(u_SxTo, mesh_lib.batch_sharding(self.mesh))
        self.slots = _insert_jit(
            self.slots, cache, logits, lengths_B, src_S, budget_S, stop_SxX, u_SxTo
        )
        self.used_S[slot_ids] = self.live_S[slot_ids] = True
        self.len_S[slot_ids] = lengths_B[np.asarray(src)]
        self.count_S[slot_ids] = 0

    def resume(self, params, slot_ids, budgets, stops: np.ndarray) -> None:
        """Paused slots go live again, sampling `budgets[i]` more tokens or until a stop id."""
        del params
        S = self.ecfg.slots
        slot_ids = np.asarray(slot_ids, np.int32)
        go_S = np.zeros(S, bool)
        go_S[slot_ids] = True
        budget_S = np.zeros(S, np.int32)
        budget_S[slot_ids] = self.count_S[slot_ids] + np.asarray(budgets, np.int32)
        if (budget_S > self.To).any():
            raise ValueError(f"engine.resume: a budget exceeds the {self.To} sampled-token room")
        if (self.len_S[slot_ids] + np.asarray(budgets) > self.capacity).any():
            raise ValueError(f"engine.resume: a slot would exceed its capacity {self.capacity}")
        stop_SxX = np.full((S, self.X), -1, np.int32)
        stop_SxX[slot_ids, : stops.shape[1]] = stops
        self.slots = _resume_jit(self.slots, go_S, budget_S, stop_SxX)
        self.live_S[slot_ids] = True

    def append(self, params, slot_ids: Sequence[int], token_lists: Sequence[Sequence[int]]) -> None:
        """Writes each token list onto its (paused) slot's cache, in chunks of `append_chunk`."""
        S, T = self.ecfg.slots, self.ecfg.append_chunk
        if not self.appendable:
            raise ValueError("engine.append: this engine was built with appendable=False")
        slot_ids = np.asarray(slot_ids, np.int32)
        if self.live_S[slot_ids].any():
            raise ValueError("engine.append: a slot is still decoding; append after it stops")
        lens = np.asarray([len(t) for t in token_lists], np.int32)
        if (self.len_S[slot_ids] + lens > self.capacity).any():
            raise ValueError(f"engine.append: a slot would exceed its capacity {self.capacity}")
        A = _pow2(len(slot_ids))
        for start in range(0, int(lens.max(initial=0)), T):
            idx_A = np.full(A, S, np.int32)
            tokens_AxT = np.full((A, T), self.cfg.pad_id, np.int32)
            n_A = np.zeros(A, np.int32)
            for i, (slot, toks) in enumerate(zip(slot_ids, token_lists, strict=True)):
                piece = list(toks[start : start + T])
                if piece:
                    idx_A[i], n_A[i] = slot, len(piece)
                    tokens_AxT[i, : len(piece)] = piece
            self.slots = _append_jit(
                params, self.slots, idx_A, tokens_AxT, n_A, model_cfg=self.model_cfg
            )
        self.len_S[slot_ids] += lens

    def step(self, params) -> np.ndarray:
        """One decode chunk of every live slot; returns the slots that stopped in it."""
        K = self.ecfg.decode_chunk
        window = self._window(int(self.len_S[self.used_S].max(initial=0)) + K + 1)
        self.slots = _decode_jit(
            params, self.slots, steps=K, window=window, model_cfg=self.model_cfg, cfg=self.cfg
        )
        self.decode_calls += 1
        self.slot_steps += K * self.ecfg.slots
        live_S, len_S, count_S = jax.device_get(
            (self.slots.live_S, self.slots.len_S, self.slots.count_S)
        )
        ended = np.flatnonzero(self.live_S & ~live_S)
        self.live_S, self.len_S, self.count_S = np.array(live_S), np.array(len_S), np.array(count_S)
        return ended

    def sampled(self, slot_ids, starts=None):
        """Per slot: (tokens, logps, certainty, stopped) sampled since count `starts[i]` (0)."""
        tokens, logps, cert, stopped = jax.device_get(
            (
                self.slots.tokens_SxTo,
                self.slots.logps_SxTo,
                self.slots.certainty_SxTo,
                self.slots.stopped_S,
            )
        )
        out = []
        for i, s in enumerate(slot_ids):
            a, b = (0 if starts is None else int(starts[i])), int(self.count_S[s])
            out.append((tokens[s, a:b], logps[s, a:b], cert[s, a:b], bool(stopped[s])))
        return out

    def free(self, slot_ids) -> None:
        slot_ids = np.asarray(slot_ids, np.int32)
        if self.live_S[slot_ids].any():
            raise ValueError("engine.free: a slot is still decoding")
        self.used_S[slot_ids] = False

    def shrink(self, S: int) -> tuple[Engine, np.ndarray]:
        """A new engine of S slots holding this one's rows (live or paused), and where each of
        this engine's slots went (-1: empty). This engine keeps its buffers; `reset` frees them."""
        used = np.flatnonzero(self.used_S)
        if len(used) > S:
            raise ValueError(f"engine.shrink: {len(used)} rows do not fit in {S} slots")
        small = Engine(
            self.model_cfg,
            self.cfg,
            dataclasses.replace(self.ecfg, slots=S),
            capacity=self.capacity,
            sampled=self.To,
            stop_width=self.X,
            mesh=self.mesh,
            appendable=self.appendable,
        )
        idx_N = np.zeros(S, np.int32)
        idx_N[: len(used)] = used
        keep_N = np.arange(S) < len(used)
        slots = _take_jit(self.slots, idx_N, keep_N)
        if self.mesh is not None:
            slots = jax.device_put(slots, mesh_lib.batch_sharding(self.mesh))
        small.slots = slots
        small.len_S, small.count_S = self.len_S[idx_N], self.count_S[idx_N]
        small.live_S, small.used_S = self.live_S[idx_N] & keep_N, keep_N.copy()
        moved = np.full(self.ecfg.slots, -1, np.int64)
        moved[used] = np.arange(len(used))
        return small, moved

    def reset(self) -> None:
        """Every slot free and stopped (after `shrink` moved the rows away)."""
        self.slots = self.slots.replace(live_S=jnp.zeros_like(self.slots.live_S))
        self.live_S[:] = False
        self.used_S[:] = False

    def _window(self, need: int) -> int:
        """The smallest attention window >= need among L/2^i (i < decode_segments) and L."""
        L, n = self.L, self.cfg.decode_segments
        for w in sorted({-(-L // 2**i) for i in range(n)}):
            if w >= need:
                return w
        return L


def generate(
    params,
    prompts: Sequence[Sequence[int]],
    key: jax.Array,
    *,
    G: int,
    model_cfg: config_lib.ModelConfig,
    cfg: sampling.SamplingConfig,
    engine_cfg: EngineConfig,
    extra_stop_ids: Sequence[Sequence[int]] | None = None,
    budgets: Sequence[int] | None = None,
    engine: Engine | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> tuple[sampling.SampleOutput, Engine]:
    """G samples of each prompt by continuous batching; rows are group-major (row p*G + g).

    Returns the static sampler's output layout (prompts left-padded to their bucket, completions
    right-padded to `cfg.max_new_tokens`'s bucket), as numpy, and the engine (pass it back in to
    reuse its buffers and compiled shapes). `budgets`: per-row token budgets (default
    `cfg.max_new_tokens`); `extra_stop_ids`: per-row stop ids besides `cfg.eos_ids`. With a
    `mesh`, the slots are split over its batch axes and `params` must live on it.
    """
    if not prompts:
        raise ValueError("generate: no prompts")
    R = len(prompts) * G
    Tc = sampling.bucket(cfg.max_new_tokens, cfg.completion_buckets, "max_new_tokens")
    prompt_BxTp, prompt_mask_BxTp = sampling.pad_prompts(
        [p for p in prompts for _ in range(G)], cfg
    )
    Tp = prompt_BxTp.shape[1]
    stops_RxX = sampling.stop_table(R, cfg, extra_stop_ids)
    budget_R = np.full(R, cfg.max_new_tokens, np.int32) if budgets is None else np.asarray(budgets)
    fits = (
        engine is not None
        and engine.capacity >= Tp + Tc
        and engine.To == Tc
        and engine.ecfg == engine_cfg
        and engine.cfg == compiled_part(cfg)  # temperature, top-k/p: compiled into its decode
    )
    if not fits or engine.X < stops_RxX.shape[1]:
        engine = Engine(
            model_cfg,
            cfg,
            engine_cfg,
            capacity=Tp + Tc,
            sampled=Tc,
            stop_width=stops_RxX.shape[1],
            mesh=mesh,
            appendable=False,
        )
    u_RxTo = _uniforms_jit(key, (R, Tc))
    S = engine_cfg.slots
    root = engine  # the full-size engine, handed back for the next call
    shards = 1 if mesh is None else mesh_lib.batch_size_of(mesh)
    floor = max(engine_cfg.min_slots, shards)
    Bp = _pow2(-(-S // G))  # prompts staged at a time: enough to fill every slot
    next_prompt = 0
    job, job_out, job_prompts, staged, staged_prompts = None, None, [], None, []
    pending = collections.deque(range(R))
    slot_row = np.full(S, -1, np.int64)
    tokens_RxTc = np.full((R, Tc), cfg.pad_id, np.int32)
    logps_RxTc = np.zeros((R, Tc), np.float32)
    cert_RxTc = np.zeros((R, Tc), np.float32)
    lengths_R = np.zeros(R, np.int32)
    stopped_R = np.zeros(R, bool)
    while pending or engine.live_S.any():
        # Stage the next prompts while earlier ones decode; one prefill chunk per iteration.
        if job is None and next_prompt < len(prompts):
            job_prompts = list(range(next_prompt, min(next_prompt + Bp, len(prompts))))
            job = engine.prefill(params, [prompts[p] for p in job_prompts])
            next_prompt = job_prompts[-1] + 1
        if job is not None and job_out is None:
            job_out = next(job)
        # Fill free slots with pending rows whose prompt is staged.
        free = list(engine.free_slots)
        take_slots, take_src, take_rows = [], [], []
        while free and pending:
            p = pending[0] // G
            if staged is not None and p in staged_prompts:
                row = pending.popleft()
                take_slots.append(free.pop(0))
                take_src.append(staged_prompts.index(p))
                take_rows.append(row)
                continue
            if take_slots:  # flush what the current staging gives before switching
                break
            if job_out is not None:
                staged, staged_prompts, job, job_out = job_out, job_prompts, None, None
                continue
            break
        if take_slots:
            rows = np.asarray(take_rows)
            engine.open(staged, take_slots, take_src, budget_R[rows], stops_RxX[rows], u_RxTo[rows])
            slot_row[take_slots] = rows
            continue  # the staging may fill more slots, or the next one may start prefilling
        if not engine.live_S.any():
            continue  # waiting on a prefill
        ended = engine.step(params)
        if len(ended):
            for slot, (tok, lp, ce, stopped) in zip(ended, engine.sampled(ended), strict=True):
                r, n = slot_row[slot], len(tok)
                tokens_RxTc[r, :n], logps_RxTc[r, :n], cert_RxTc[r, :n] = tok, lp, ce
                lengths_R[r], stopped_R[r] = n, stopped
            engine.free(ended)
        # The tail: every row admitted and few left, so decode them in fewer slots.
        n_used, S_now = int(engine.used_S.sum()), engine.ecfg.slots
        S_new = S_now
        while engine_cfg.compact and not pending and S_new // 2 >= max(floor, 4 * n_used):
            S_new //= 2
        if S_new < S_now:
            small, moved = engine.shrink(S_new)
            old = np.flatnonzero(moved >= 0)
            new_row = np.full(S_new, -1, np.int64)
            new_row[moved[old]] = slot_row[old]
            slot_row, engine = new_row, small
    if engine is not root:
        root.reset()
    out = sampling.SampleOutput(
        prompt_BxTp=prompt_BxTp,
        prompt_mask_BxTp=prompt_mask_BxTp,
        tokens_BxTc=tokens_RxTc,
        mask_BxTc=np.arange(Tc)[None, :] < lengths_R[:, None],
        logps_BxTc=logps_RxTc,
        certainty_BxTc=cert_RxTc,
        lengths_B=lengths_R,
        stopped_B=stopped_R,
    )
    return out, root
