"""Multi-turn rollouts on the engine's slots: the rollout's log-probs equal one forward pass over
the final transcript at the policy's tokens, observations are context without loss, and episodes
end on done, their turn limit, their budgets or an environment's error."""

# pylint: disable=invalid-name
import dataclasses

import jax
import numpy as np
import pytest

from rlvr_jax import sampling
from rlvr_jax.data import types as data_types
from rlvr_jax.engine import engine as engine_lib
from rlvr_jax.envs import base as env_base
from rlvr_jax.models import config as config_lib
from rlvr_jax.models import params as params_lib
from rlvr_jax.models import tokenizer as tokenizer_lib
from rlvr_jax.objectives import batch as batch_lib
from rlvr_jax.objectives import forward as forward_lib
from rlvr_jax.objectives import objective as objective_lib
from rlvr_jax.objectives import rl_config
from rlvr_jax.rollout import multi_turn
from rlvr_jax.rollout import types as rollout_types
from rlvr_jax.train import step as step_lib

CFG = config_lib.get_preset("tiny")
G = 2
ENGINE = engine_lib.EngineConfig(slots=8, decode_chunk=4, prefill_chunk=32, append_chunk=16)
MT = multi_turn.MultiTurnConfig(max_turns=3, turn_tokens=12, sampled_tokens=40, episode_tokens=256)


class Counter(env_base.Environment):
    """Answers each turn with a tool message; done after `1 + seed % 4` turns, reward = turns/10.
    Seed 13 raises on its second step."""

    def reset(self, seed, difficulty):
        self.seed, self.t = seed, 0
        return [{"role": "user", "content": f"count to {1 + seed % 4}"}]

    def step(self, action):
        self.t += 1
        if self.seed == 13 and self.t == 2:
            raise RuntimeError("broken tool")
        if self.t >= 1 + self.seed % 4:
            return env_base.Step([], self.t / 10, True, {"status": "ok", "success": True})
        return env_base.Step([{"role": "tool", "content": f"ok {self.t}"}])

    def finish(self, reason):
        return env_base.Step([], -0.5, True, {"status": "truncated", "reason": reason})


@pytest.fixture(scope="module")
def setup():
    tok = tokenizer_lib.load_tiny_tokenizer()
    params = params_lib.init_params(CFG, jax.random.key(0))
    # The end-of-turn token plus common ids as stops, so random weights end turns early.
    scfg = sampling.SamplingConfig(
        max_new_tokens=MT.turn_tokens,
        temperature=1.0,
        eos_ids=(*tok.eos_ids, *range(30, 130)),
        pad_id=tok.pad_id,
    )
    return tok, params, scfg


def _examples(seeds):
    return [data_types.Example(f"e{s}", "", "", meta={"seed": s}) for s in seeds]


def _run(setup, seeds, key=0):
    tok, params, scfg = setup
    ro, _ = multi_turn.sample(
        params,
        tok,
        _examples(seeds),
        multi_turn.InProcess(lambda ex: Counter()),
        jax.random.key(key),
        G=G,
        model_cfg=CFG,
        sampling_cfg=scfg,
        engine_cfg=ENGINE,
        mt=MT,
    )
    return ro


def test_logps_equal_a_forward_pass_over_the_transcript(setup):
    tok, params, _ = setup
    ro = _run(setup, [0, 1, 2, 3, 5, 6])
    s = ro.sample
    assert (ro.loss_mask_BxTc & ro.context_mask_BxTc).sum() == 0
    assert ro.context_mask_BxTc.sum() > 0, "some episodes must have observations"
    logps, _ = forward_lib.completion_logps(
        params,
        s.prompt_BxTp,
        s.prompt_mask_BxTp,
        s.tokens_BxTc,
        s.mask_BxTc,
        model_cfg=CFG,
    )
    policy = ro.loss_mask_BxTc
    diff = np.abs(np.where(policy, np.asarray(logps) - s.logps_BxTc, 0.0))
    assert diff.max() <= 1e-4, diff.max()
    # Observations have no log-prob from the sampler; each is the chat template's rendering.
    assert np.all(s.logps_BxTc[ro.context_mask_BxTc] == 0)
    text = tok.decode(s.tokens_BxTc[0][ro.context_mask_BxTc[0]])
    if text:
        assert "<|im_start|>tool\nok 1<|im_end|>" in text
    # Group-major rows share their prompt.
    np.testing.assert_array_equal(s.prompt_BxTp[0], s.prompt_BxTp[1])


def test_observations_carry_zero_loss_weight(setup):
    """The train step's loss and gradient do not change when the observation positions' old
    log-probs and advantages change: only the policy's tokens are trained."""
    _, params, _ = setup
    ro = _run(setup, [1, 2, 3, 6])
    rng = np.random.RandomState(0)
    batch = rollout_types.to_batch(ro, rng.randn(len(ro.texts)).astype(np.float32))
    ctx = batch.context_mask_BxTc
    assert ctx.sum() > 0
    np.testing.assert_array_equal(batch.completion_mask_BxTc, ro.loss_mask_BxTc)
    np.testing.assert_array_equal(batch_lib.attention_mask(batch), ro.sample.mask_BxTc)
    noisy = batch.replace(
        old_logps_BxTc=np.where(ctx, -3.0, batch.old_logps_BxTc).astype(np.float32),
        adv_BxTc=np.where(ctx, 5.0, batch.adv_BxTc).astype(np.float32),
    )
    rl = rl_config.RLConfig(group_size=G)
    objective = objective_lib.compose(rl)
    totals = (np.float32(batch.completion_mask_BxTc.sum()),) * 2

    def loss_and_grad(b):
        fn = lambda p: step_lib._loss_fn(  # noqa: SLF001
            p, b, totals, None, model_cfg=CFG, objective=objective, temperature=1.0, num_micro=1
        )[0]
        return jax.value_and_grad(fn)(params)

    (l1, g1), (l2, g2) = loss_and_grad(batch), loss_and_grad(noisy)
    np.testing.assert_allclose(l1, l2, rtol=0, atol=0)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True):
        np.testing.assert_array_equal(a, b)


def test_episode_endings_and_env_errors(setup):
    ro = _run(setup, [0, 3, 13, 7])
    by_seed = {s: ro.verdicts[i * G : i * G + G] for i, s in enumerate([0, 3, 13, 7])}
    for v in by_seed[13]:  # raised on step 2 (unless its first turn was cut)
        assert v.status in ("env_error", "truncated")
    assert any(v.status == "env_error" for v in by_seed[13]) or all(
        v.info.get("reason") == "turn_budget" for v in by_seed[13]
    )
    for v in ro.verdicts:
        assert v.turns <= MT.max_turns
        if v.status == "ok":
            assert v.reward == pytest.approx(v.turns / 10)
        if v.status == "truncated":
            assert v.info["reason"] in ("turn_budget", "turn_limit", "token_budget")
    # seed 7 needs 4 env steps, seed 3 too: episodes reach them or are cut with a reason.
    assert ro.loss_mask_BxTc.sum(axis=1).max() <= MT.sampled_tokens
    assert ro.sample.lengths_B.max() + ro.sample.prompt_mask_BxTp.sum(1).max() <= MT.episode_tokens


def test_same_key_same_rollout_and_budgets(setup):
    a, b = _run(setup, [1, 2], key=3), _run(setup, [1, 2], key=3)
    np.testing.assert_array_equal(a.sample.tokens_BxTc, b.sample.tokens_BxTc)
    np.testing.assert_array_equal(a.rewards_B, b.rewards_B)
    c = _run(setup, [1, 2], key=4)
    assert not np.array_equal(a.sample.tokens_BxTc, c.sample.tokens_BxTc)


def test_config_errors():
    with pytest.raises(ValueError, match="turn_tokens"):
        multi_turn.MultiTurnConfig(turn_tokens=100, sampled_tokens=50)
    with pytest.raises(ValueError, match="max_turns"):
        dataclasses.replace(MT, max_turns=0)


def test_transcript_tokens_render_like_the_chat_template(setup):
    """A scripted episode's tokens decode to the chat template's rendering of its messages (the
    warm start trains on what the rollout would have produced)."""
    tok = setup[0]
    first = [{"role": "user", "content": "count to 2"}]
    turns = [("first", [{"role": "tool", "content": "ok 1"}]), ("second", [])]
    prompt, completion, mask = multi_turn.transcript_tokens(tok, first, turns)
    msgs = first + [
        {"role": "assistant", "content": "first"},
        {"role": "tool", "content": "ok 1"},
        {"role": "assistant", "content": "second"},
    ]
    rendered = tok.render_chat(msgs, add_generation_prompt=False)
    assert tok.decode(prompt + completion) + "\n" == rendered
    trained = tok.decode([t for t, m in zip(completion, mask, strict=True) if m])
    assert trained == "first<|im_end|>second<|im_end|>"


def test_greedy_eval_then_sampled_rollouts_keep_their_own_sampling(setup):
    """One MultiTurn serves the greedy evaluator and the sampled rollouts: after a greedy call,
    the G episodes of a group still sample differently (an engine keeps its compiled sampling)."""
    tok, params, scfg = setup
    mt_engine = multi_turn.MultiTurn(tok, CFG, G, engine_cfg=ENGINE, mt=MT)
    episodes = multi_turn.InProcess(lambda ex: Counter())
    greedy = dataclasses.replace(scfg, temperature=0.0)
    g = mt_engine(params, _examples([1, 2]), jax.random.key(0), greedy, episodes, G=2)
    np.testing.assert_array_equal(g.sample.tokens_BxTc[0], g.sample.tokens_BxTc[1])
    s = mt_engine(params, _examples([1, 2]), jax.random.key(0), scfg, episodes)
    assert not np.array_equal(s.sample.tokens_BxTc[0], s.sample.tokens_BxTc[1])
