"""Sampler behaviour on a tiny qwen2: determinism, stop tokens, early exit, buckets, validation.

Parity with transformers and with a full forward pass lives in `sampling_parity_test.py`.
"""

import dataclasses

import jax
import numpy as np
import pytest

from rlvr_jax import sampling
from rlvr_jax.models import hf
from tests import fixtures

# Four prompts of different lengths, so every batch is left-padded (to the 16-token bucket).
PROMPTS = [[5, 17, 3, 88, 42, 9, 61, 7, 30, 12, 2], [44, 8, 19], [71, 26, 55, 90, 13, 4, 66], [33]]
GREEDY = sampling.SamplingConfig(max_new_tokens=32, temperature=0.0)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    hf_model = fixtures.make_hf_model("qwen2")
    folder = fixtures.save_hf_model(hf_model, tmp_path_factory.mktemp("qwen2"))
    model_cfg, params, _ = hf.load_checkpoint(folder)
    return model_cfg, params


def _generate(model, cfg, key=0, prompts=PROMPTS, **kw) -> sampling.SampleOutput:
    model_cfg, params = model
    out = sampling.generate(
        params, prompts, jax.random.key(key), model_cfg=model_cfg, cfg=cfg, **kw
    )
    return jax.device_get(out)


@pytest.fixture(scope="module")
def greedy(model) -> sampling.SampleOutput:
    """An unconstrained greedy run: every stop-token case is a truncation of it."""
    return _generate(model, GREEDY)


def _truncated(run, stops_B, max_new, Tc, pad_id=0):
    """What a greedy run with per-row stop sets must return: `run` cut at each row's first stop."""
    B = len(stops_B)
    tokens_BxTc = np.full((B, Tc), pad_id, np.int32)
    logps_BxTc = np.zeros((B, Tc), np.float32)
    lengths_B, stopped_B = np.full(B, max_new), np.zeros(B, bool)
    for b, stops in enumerate(stops_B):
        hits = [t for t in range(max_new) if run.tokens_BxTc[b, t] in stops]
        if hits:
            lengths_B[b], stopped_B[b] = hits[0] + 1, True
        tokens_BxTc[b, : lengths_B[b]] = run.tokens_BxTc[b, : lengths_B[b]]
        logps_BxTc[b, : lengths_B[b]] = run.logps_BxTc[b, : lengths_B[b]]
    mask_BxTc = np.arange(Tc)[None, :] < lengths_B[:, None]
    return tokens_BxTc, mask_BxTc, logps_BxTc, lengths_B, stopped_B


def _assert_output(out, expected):
    tokens_BxTc, mask_BxTc, logps_BxTc, lengths_B, stopped_B = expected
    np.testing.assert_array_equal(out.lengths_B, lengths_B)
    np.testing.assert_array_equal(out.stopped_B, stopped_B)
    np.testing.assert_array_equal(out.mask_BxTc, mask_BxTc)
    np.testing.assert_array_equal(out.tokens_BxTc, tokens_BxTc)
    np.testing.assert_allclose(out.logps_BxTc, logps_BxTc, atol=1e-5, rtol=0)


def test_greedy_run_is_full_length(greedy):
    assert greedy.tokens_BxTc.shape == (4, 32) and greedy.prompt_BxTp.shape == (4, 16)
    np.testing.assert_array_equal(greedy.lengths_B, [32] * 4)
    assert not greedy.stopped_B.any() and greedy.mask_BxTc.all()
    np.testing.assert_array_equal(greedy.prompt_mask_BxTp.sum(1), [len(p) for p in PROMPTS])
    np.testing.assert_array_equal(greedy.prompt_BxTp[1, -3:], PROMPTS[1])
    assert (greedy.logps_BxTc < 0).all()


def test_same_key_same_samples_other_key_differs(model):
    cfg = dataclasses.replace(GREEDY, temperature=1.0)
    a, b, c = (_generate(model, cfg, key=k) for k in (1, 1, 2))
    np.testing.assert_array_equal(a.tokens_BxTc, b.tokens_BxTc)
    np.testing.assert_array_equal(a.logps_BxTc, b.logps_BxTc)
    differs_B = (a.tokens_BxTc != c.tokens_BxTc).any(axis=1)
    print(f"rows that differ between keys 1 and 2: {differs_B.sum()}/4")
    assert differs_B.all()


def test_shared_stop_token(model, greedy):
    stop = int(greedy.tokens_BxTc[0, 5])
    cfg = dataclasses.replace(GREEDY, eos_ids=(stop,))
    out = _generate(model, cfg)
    expected = _truncated(greedy, [{stop}] * 4, 32, 32)
    assert expected[3][0] == 6 and not expected[4].all()  # row 0 stops at step 5, some row runs on
    _assert_output(out, expected)


def test_per_row_extra_stop_ids(model, greedy):
    stop = int(greedy.tokens_BxTc[1, 3])
    assert (
        stop in greedy.tokens_BxTc[0]
    )  # the token also occurs in row 0, which must not stop on it
    out = _generate(model, GREEDY, extra_stop_ids=[[], [stop], [], []])
    _assert_output(out, _truncated(greedy, [set(), {stop}, set(), set()], 32, 32))
    assert out.stopped_B.tolist() == [False, True, False, False]


def test_eos_and_extras_combine(model, greedy):
    eos, extra = int(greedy.tokens_BxTc[2, 9]), int(greedy.tokens_BxTc[3, 4])
    cfg = dataclasses.replace(GREEDY, max_new_tokens=20, eos_ids=(eos,))
    out = _generate(model, cfg, extra_stop_ids=[[], [], [], [extra, 96]])
    stops_B = [{eos}, {eos}, {eos}, {eos, extra, 96}]
    _assert_output(out, _truncated(greedy, stops_B, 20, 32))


def test_loop_exits_when_every_row_has_stopped(model, greedy, monkeypatch):
    # The decode cache is donated and returned: slots the loop never reached keep their zeros.
    results = []
    decode_jit = sampling._decode_jit

    def spy(*args, **kwargs):
        results.append(decode_jit(*args, **kwargs))
        return results[-1]

    monkeypatch.setattr(sampling, "_decode_jit", spy)
    stops = {int(t) for t in greedy.tokens_BxTc[:, 2]}
    cfg = dataclasses.replace(GREEDY, max_new_tokens=1000, eos_ids=tuple(sorted(stops)))
    out = _generate(model, cfg)
    assert out.tokens_BxTc.shape == (4, 1024)
    _assert_output(out, _truncated(greedy, [stops] * 4, 32, 1024))
    assert out.stopped_B.all()
    steps = int(out.lengths_B.max())
    print(f"lengths {out.lengths_B.tolist()} in a 1024-token bucket: {steps} decode steps")
    assert steps <= 3
    k_BxNxKxS = np.asarray(results[-1][0].k[0])
    written_S = np.abs(k_BxNxKxS).sum(axis=(0, 1, 2)) > 0
    np.testing.assert_array_equal(written_S[16:], np.arange(1024) < steps)


def test_budget_inside_a_bucket_stops_the_loop(model, greedy):
    out = _generate(model, dataclasses.replace(GREEDY, max_new_tokens=20))
    _assert_output(out, _truncated(greedy, [set()] * 4, 20, 32))


def test_pad_id_as_stop_token_with_budget_below_bucket(model, greedy):
    # Common in practice: Qwen's pad token is also its end-of-text token.
    assert 0 not in greedy.tokens_BxTc[:, :4]
    out = _generate(model, dataclasses.replace(GREEDY, max_new_tokens=4, eos_ids=(0,), pad_id=0))
    print(f"lengths {out.lengths_B.tolist()} stopped {out.stopped_B.tolist()} (want 4, False)")
    _assert_output(out, _truncated(greedy, [{0}] * 4, 4, 16))


def test_top_k_1_and_tiny_top_p_equal_greedy(model, greedy):
    for cfg in (
        dataclasses.replace(GREEDY, temperature=1.0, top_k=1),
        dataclasses.replace(GREEDY, temperature=1.0, top_p=1e-6),
    ):
        out = _generate(model, cfg, key=3)
        np.testing.assert_array_equal(out.tokens_BxTc, greedy.tokens_BxTc)
        # At temperature 1 the reported log-probs are the untruncated policy's, as greedy's are.
        np.testing.assert_allclose(out.logps_BxTc, greedy.logps_BxTc, atol=1e-5, rtol=0)


def test_no_recompile_within_a_bucket(model):
    # Buckets no other test uses, so the first call here compiles once and the counts are exact.
    cfg = sampling.SamplingConfig(
        max_new_tokens=8, temperature=0.0, prompt_buckets=(8, 24), completion_buckets=(8, 24)
    )
    sizes = lambda: (sampling._prefill_jit._cache_size(), sampling._decode_jit._cache_size())
    lens_a, lens_b = [[1, 2, 3], [4] * 8, [5, 6], [7] * 7], [[9], [8, 7, 6, 5], [1] * 6, [3] * 2]

    def calls(*runs):
        before = sizes()
        for prompts, overrides, kw in runs:
            _generate(model, dataclasses.replace(cfg, **overrides), prompts=prompts, **kw)
        after = sizes()
        return after[0] - before[0], after[1] - before[1]

    assert calls((lens_a, {}, {})) == (1, 1)
    padded = sampling.pad_prompts(lens_b, cfg)
    assert calls(
        (lens_b, {}, {}),
        (padded, {"max_new_tokens": 3}, {}),
        (lens_a, {"max_new_tokens": 5, "eos_ids": (3,)}, {}),
        (lens_b, {"eos_ids": (11,)}, {"extra_stop_ids": None}),
    ) == (0, 0)
    # Stop tables of width 4: one new decode program, then none for other sets of that width.
    assert calls((lens_a, {"eos_ids": (1, 2, 3)}, {})) == (0, 1)
    assert calls(
        (lens_b, {"eos_ids": (4, 5, 6, 7)}, {}),
        (lens_a, {"eos_ids": (1, 2)}, {"extra_stop_ids": [[9], [], [10, 11], [12]]}),
    ) == (0, 0)
    # A new prompt bucket, then a new completion bucket: each compiles both programs once.
    assert calls((lens_b[:3] + [[2] * 20], {}, {}), (lens_a[:3] + [[2] * 17], {}, {})) == (1, 1)
    longer = ((lens_a, {"max_new_tokens": 20}, {}), (lens_b, {"max_new_tokens": 9}, {}))
    assert calls(*longer) == (1, 1)


def test_pre_padded_prompts_equal_token_lists(model, greedy):
    padded = sampling.pad_prompts(PROMPTS, GREEDY)
    out = _generate(model, GREEDY, prompts=padded)
    np.testing.assert_array_equal(out.tokens_BxTc, greedy.tokens_BxTc)


@pytest.mark.parametrize(
    "field,value",
    [
        ("max_new_tokens", 0),
        ("temperature", -0.5),
        ("top_k", -1),
        ("top_p", 0.0),
        ("top_p", 1.5),
        ("prompt_buckets", (32, 16)),
        ("completion_buckets", ()),
    ],
)
def test_config_validation_names_the_field(field, value):
    kw = {"max_new_tokens": 8, field: value}
    with pytest.raises(ValueError, match=rf"SamplingConfig\.{field}="):
        sampling.SamplingConfig(**kw)


def test_budget_above_largest_completion_bucket():
    with pytest.raises(ValueError, match="max_new_tokens=40 exceeds the largest completion bucket"):
        sampling.SamplingConfig(max_new_tokens=40, completion_buckets=(16, 32))


def test_bad_prompts_raise(model):
    cfg = dataclasses.replace(GREEDY, prompt_buckets=(8, 16))
    with pytest.raises(ValueError, match="prompt of 17 tokens exceeds the largest bucket 16"):
        _generate(model, cfg, prompts=[[1, 2], [3] * 17])
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        _generate(model, cfg, prompts=[[1, 2], []])
    with pytest.raises(ValueError, match="no prompts"):
        _generate(model, cfg, prompts=[])
