"""The continuous-batching engine against the static sampler, the slot API against one sampler
call over the whole history, and its compile and prefill counts."""

# pylint: disable=invalid-name
import dataclasses

import jax
import numpy as np
import pytest

from rlvr_jax import sampling
from rlvr_jax.engine import engine as engine_lib
from rlvr_jax.models import config as config_lib
from rlvr_jax.models import params as params_lib
from rlvr_jax.models import transformer

CFG = config_lib.get_preset("tiny")
# Ragged prompts (3 to 29 tokens) and 16 stop ids common enough that some rows stop early and
# others run to the budget.
_RS = np.random.RandomState(0)
PROMPTS = [list(_RS.randint(3, CFG.vocab_size, n)) for n in (3, 29, 11, 17, 5, 23)]
BASE = sampling.SamplingConfig(max_new_tokens=24, temperature=1.0, eos_ids=tuple(range(7, 23)))
SMALL = engine_lib.EngineConfig(
    slots=8, decode_chunk=4, prefill_chunk=16, append_chunk=16, min_slots=2
)


@pytest.fixture(scope="module")
def params():
    return params_lib.init_params(CFG, jax.random.key(0))


def _static(params, prompts, G, cfg, key):
    rows = [p for p in prompts for _ in range(G)]
    return jax.device_get(sampling.generate(params, rows, key, model_cfg=CFG, cfg=cfg))


def _assert_same(a, b):
    np.testing.assert_array_equal(a.lengths_B, b.lengths_B)
    np.testing.assert_array_equal(a.stopped_B, b.stopped_B)
    np.testing.assert_array_equal(a.tokens_BxTc, b.tokens_BxTc)
    np.testing.assert_array_equal(a.mask_BxTc, b.mask_BxTc)
    np.testing.assert_array_equal(a.prompt_BxTp, b.prompt_BxTp)
    m = np.asarray(a.mask_BxTc)
    for name in ("logps_BxTc", "certainty_BxTc"):
        diff = np.where(m, np.asarray(getattr(a, name)) - np.asarray(getattr(b, name)), 0)
        assert np.abs(diff).max() <= 1e-5, (name, np.abs(diff).max())


@pytest.mark.parametrize(
    "cfg",
    [
        BASE,
        dataclasses.replace(BASE, temperature=0.0),
        dataclasses.replace(BASE, temperature=0.7, top_k=20, top_p=0.9),
    ],
    ids=["sample", "greedy", "top_k_top_p"],
)
def test_continuous_batching_equals_static_sampler_per_row(params, cfg):
    """Same key, same rows: same tokens (bitwise), stop reasons and log-probs (<= 1e-5), with
    more rows (24) than slots (8), so slots are refilled mid-flight."""
    G = 4
    key = jax.random.key(5)
    ref = _static(params, PROMPTS, G, cfg, key)
    out, eng = engine_lib.generate(
        params, PROMPTS, key, G=G, model_cfg=CFG, cfg=cfg, engine_cfg=SMALL
    )
    _assert_same(out, ref)
    if cfg.temperature:  # the workload really is ragged: both stop reasons occur
        assert out.stopped_B.any() and not out.stopped_B.all()
        assert len(set(out.lengths_B.tolist())) > 3
    assert eng.prefilled == len(PROMPTS)  # one prefill per prompt, not per sample


def test_per_row_extra_stops_and_budgets(params):
    """Per-row stop ids as in the static sampler; per-row budgets cut rows where asked."""
    key = jax.random.key(1)
    extra = [[i % 5 + 20] for i in range(len(PROMPTS) * 2)]
    ref = jax.device_get(
        sampling.generate(
            params,
            [p for p in PROMPTS for _ in range(2)],
            key,
            model_cfg=CFG,
            cfg=BASE,
            extra_stop_ids=extra,
        )
    )
    out, _ = engine_lib.generate(
        params, PROMPTS, key, G=2, model_cfg=CFG, cfg=BASE, engine_cfg=SMALL, extra_stop_ids=extra
    )
    _assert_same(out, ref)
    budgets = [3 + i for i in range(len(PROMPTS) * 2)]
    cut, _ = engine_lib.generate(
        params, PROMPTS, key, G=2, model_cfg=CFG, cfg=BASE, engine_cfg=SMALL, budgets=budgets
    )
    want = np.minimum(ref.lengths_B, budgets)
    np.testing.assert_array_equal(cut.lengths_B, want)
    for r, n in enumerate(want):  # a row's prefix does not depend on its budget
        np.testing.assert_array_equal(cut.tokens_BxTc[r, :n], ref.tokens_BxTc[r, :n])


def test_no_recompilation_within_a_bucket(params):
    """A second batch of other prompts in the same buckets reuses every compiled function."""
    fns = (
        engine_lib._decode_jit,
        engine_lib._insert_jit,
        engine_lib._prefill_jit,
    )
    key = jax.random.key(2)
    out, eng = engine_lib.generate(
        params, PROMPTS, key, G=2, model_cfg=CFG, cfg=BASE, engine_cfg=SMALL
    )
    sizes = [f._cache_size() for f in fns]
    other = [list(np.random.RandomState(9).randint(3, 200, n)) for n in (4, 9, 27, 2, 14, 30)]
    engine_lib.generate(
        params, other, jax.random.key(3), G=2, model_cfg=CFG, cfg=BASE, engine_cfg=SMALL, engine=eng
    )
    assert [f._cache_size() for f in fns] == sizes
    del out


def test_append_and_resume_equal_one_call_over_the_history(params):
    """Turn 1 sampled, an observation appended, turn 2 sampled: the same tokens and log-probs
    as the static sampler run once on prompt + turn 1 + observation (greedy, so that the second
    call's uniforms do not matter), and the cache after append equals a fresh forward pass."""
    cfg = dataclasses.replace(BASE, temperature=0.0, eos_ids=())
    eng = engine_lib.Engine(CFG, cfg, SMALL, capacity=128, sampled=32)
    prompts = PROMPTS[:3]
    slots = [5, 0, 3]
    staged = list(eng.prefill(params, prompts))[-1]
    no_stops = np.full((3, 1), -1, np.int32)
    u = jax.numpy.zeros((3, 32))
    eng.open(staged, slots, [0, 1, 2], [6, 6, 6], no_stops, u)
    while eng.live_S.any():
        eng.step(params)
    turn1 = [t for t, *_ in eng.sampled(slots)]
    obs = [[30, 31, 32], list(range(40, 61)), [50]]  # 21 tokens: two append chunks of 16
    eng.append(params, slots, obs)
    eng.resume(params, slots, [5, 5, 5], no_stops)
    while eng.live_S.any():
        eng.step(params)
    turn2 = eng.sampled(slots, starts=[6, 6, 6])
    for i, slot in enumerate(slots):
        history = list(prompts[i]) + list(turn1[i]) + obs[i]
        ref = jax.device_get(
            sampling.generate(
                params,
                [history],
                jax.random.key(0),
                model_cfg=CFG,
                cfg=dataclasses.replace(cfg, max_new_tokens=5),
            )
        )
        tokens, logps, _, stopped = turn2[i]
        np.testing.assert_array_equal(tokens, ref.tokens_BxTc[0, :5])
        np.testing.assert_allclose(logps, ref.logps_BxTc[0, :5], atol=1e-5)
        assert not stopped  # ended on its budget
        assert eng.len_S[slot] == len(history) + 5
    # The logits a fresh forward pass gives after the whole history of slot 5.
    history = list(prompts[0]) + list(turn1[0]) + obs[0] + list(turn2[0][0])
    # The last sampled token is in the cache; the slot's logits are the next token's.
    full = np.asarray([history], np.int32)
    logits = transformer.forward(
        params, full, np.arange(len(history))[None], np.ones_like(full, bool), CFG
    )
    np.testing.assert_allclose(
        np.asarray(eng.slots.logits_SxV[5]), np.asarray(logits[0, -1]), atol=1e-4
    )


def test_engine_errors_name_the_problem(params):
    eng = engine_lib.Engine(CFG, BASE, SMALL, capacity=40, sampled=16)
    with pytest.raises(ValueError, match="capacity"):
        list(eng.prefill(params, [[5] * 41]))
    with pytest.raises(ValueError, match="empty"):
        list(eng.prefill(params, [[5], []]))
    with pytest.raises(ValueError, match="power of two"):
        engine_lib.EngineConfig(prefill_chunk=24)
    staged = list(eng.prefill(params, [[5, 6, 7]]))[-1]
    stops = np.full((1, 1), -1, np.int32)
    eng.open(staged, [2], [0], [4], stops, jax.numpy.zeros((1, 16)))
    with pytest.raises(ValueError, match="in use"):
        eng.open(staged, [2], [0], [4], stops, jax.numpy.zeros((1, 16)))
    with pytest.raises(ValueError, match="still decoding"):
        eng.append(params, [2], [[1, 2]])
    while eng.live_S.any():
        eng.step(params)
    with pytest.raises(ValueError, match="sampled-token room"):
        eng.resume(params, [2], [13], stops)
    with pytest.raises(ValueError, match="capacity"):
        eng.append(params, [2], [[1] * 40])


@pytest.mark.parametrize("shape", [(2, 1, 1), (1, 1, 2), (2, 2, 1)])
def test_engine_on_meshes_matches_one_device(params, shape):
    """Slots split over the data / fsdp axes, weights over the tensor axis: same samples."""
    from rlvr_jax import mesh as mesh_lib

    n = int(np.prod(shape))
    mesh = mesh_lib.make_mesh(shape, devices=jax.devices()[:n])
    shardings = mesh_lib.param_shardings(mesh, params_lib.param_axes(CFG))
    placed = jax.device_put(params, shardings)
    key = jax.random.key(4)
    one, _ = engine_lib.generate(
        params, PROMPTS, key, G=2, model_cfg=CFG, cfg=BASE, engine_cfg=SMALL
    )
    out, _ = engine_lib.generate(
        placed, PROMPTS, key, G=2, model_cfg=CFG, cfg=BASE, engine_cfg=SMALL, mesh=mesh
    )
    np.testing.assert_array_equal(out.tokens_BxTc, one.tokens_BxTc)
    np.testing.assert_allclose(out.logps_BxTc, one.logps_BxTc, atol=1e-5)
