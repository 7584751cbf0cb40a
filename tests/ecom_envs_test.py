"""Ecom-RLVE environments: determinism, scripted experts vs the random baseline, hostile input."""

import numpy as np
import pytest

from rlvr_jax.envs.ecom import catalog, envs, experts

N_EPISODES = 200
SEEDS = list(range(5000, 5000 + N_EPISODES))
DIFFS = np.random.default_rng(123).integers(0, 6, size=N_EPISODES).tolist()  # d in 0..5


def test_catalog_shape():
    cat = catalog.make_catalog(0)
    assert len(cat.products) >= 2000
    assert len({p.title for p in cat.products}) == len(cat.products)  # titles are unique
    assert all(o.order_id in cat.order_by_id for o in cat.orders)
    assert cat.facts["free_ship_over"] in (25, 35, 50, 75)
    assert catalog.make_catalog(0) is cat  # built once per process


def test_typo_fixing_vocab_has_no_collisions():
    assert len(experts._SHAPE) == len(experts._VOCAB)


@pytest.mark.parametrize("name", envs.ENV_NAMES)
def test_deterministic_by_seed(name):
    env = envs.make_env(name)
    runs = [experts.run_episode(env, experts.expert_for(name), 77, 4) for _ in range(2)]
    assert runs[0][0] == runs[1][0]
    assert runs[0][1].reward == runs[1][1].reward
    firsts = {tuple(m["content"] for m in env.reset(seed, 2)) for seed in range(8)}
    assert len(firsts) > 1  # and different seeds give different episodes


def _rates(name, make_policy):
    env = envs.make_env(name)
    results = []
    for i, (seed, d) in enumerate(zip(SEEDS, DIFFS, strict=True)):
        _, step = experts.run_episode(env, make_policy(i), seed, d)
        assert step.done and step.info["env"] == name and step.info["difficulty"] == d
        results.append(step)
    return results


@pytest.mark.parametrize("name", envs.ENV_NAMES)
def test_expert_solves_random_does_not(name):
    expert = _rates(name, lambda i: experts.expert_for(name))
    random = _rates(name, lambda i: experts.random_policy(np.random.default_rng(i)))
    expert_success = np.mean([s.info["success"] for s in expert])
    random_success = np.mean([s.info["success"] for s in random])
    print(f"{name}: expert success {expert_success:.3f} "
          f"(mean reward {np.mean([s.reward for s in expert]):.3f}), "
          f"random success {random_success:.3f}")  # fmt: skip
    assert expert_success >= 0.95
    assert random_success < 0.05
    # Experts never hallucinate, never err, and score r_task >= 0.95 when successful.
    assert all(s.info["status"] == "ok" and s.info["invalid_tool_calls"] == 0 for s in expert)
    assert all(s.info["r_hall"] == 0.0 for s in expert)
    assert all(s.info["r_task"] >= 0.95 for s in expert if s.info["success"])
    if name != "POLICY":  # POLICY has no product ids to omit beyond the category
        assert any(s.info["clarify_turns"] > 0 for s in expert)  # the simulator omits slots


def _final_keys():
    return {"status", "success", "r_task", "r_eff", "r_hall", "turns", "tool_calls",
            "invalid_tool_calls", "hallucinated_ids", "difficulty", "env"}  # fmt: skip


def _call(name, **args):
    return experts._call(name, **args)


HOSTILE = [
    # (case, action text, expected outcome)
    ("malformed_json", '<tool_call>{"name": "catalog.search", "arguments": {</tool_call>', "hard"),
    ("unbalanced_tags", '<tool_call>{"name": "catalog.search"', "hard"),
    ("arguments_not_object", '<tool_call>{"name": "cart.view", "arguments": [1]}</tool_call>',
     "hard"),
    ("unknown_tool", _call("catalog.delete_everything"), "hard"),
    ("tool_of_another_env", _call("policy.search", query="returns"), "hard"),
    ("over_long_turn", "x" * 4001, "hard"),
    ("empty_turn", "   ", "hard"),
    ("bad_argument_type", _call("catalog.search", query=5), "tool"),
    ("bool_for_int", _call("catalog.search", query="mug", top_k=True), "tool"),
    ("out_of_range", _call("catalog.search", query="mug", top_k=500), "tool"),
    ("unknown_argument", _call("catalog.get_product", product_id="P0001", color="red"), "tool"),
    ("missing_argument", _call("catalog.get_product"), "tool"),
    ("nonexistent_id", _call("catalog.get_product", product_id="P9999"), "tool"),
    ("bad_filter", _call("catalog.search", query="mug", filters={"colour": "red"}), "tool"),
    ("not_in_cart", _call("cart.remove", product_id="P0001"), "tool"),
    ("bad_quantity", _call("cart.add", product_id="P0001", quantity=-3), "tool"),
    ("bad_submit", _call("answer.submit", order_id=3), "tool"),
    ("too_many_calls", _call("cart.view") * 3, "tool"),
]  # fmt: skip


@pytest.mark.parametrize("case, text, outcome", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_input(case, text, outcome):
    env = envs.make_env("CART")
    env.reset(seed=11, difficulty=0)  # B_tool = 1
    if case == "bad_submit":
        env = envs.make_env("STATUS")
        env.reset(seed=11, difficulty=0)
    step = env.step(text)
    if outcome == "hard":
        assert step.done and step.reward == -1.0
        assert step.info["status"] == "hard_fail" and not step.info["success"]
        assert _final_keys() <= set(step.info)
    else:
        assert not step.done
        errors = [m for m in step.observation if m["content"].startswith("error:")]
        assert errors and all(m["role"] == "tool" for m in step.observation)
        if case == "too_many_calls":
            assert step.observation[0]["content"] == "cart empty"  # the first call still ran
            assert "at most 1 tool calls per turn" in step.observation[1]["content"]


def test_third_invalid_call_is_a_hard_fail():
    env = envs.make_env("PD")
    env.reset(seed=3, difficulty=4)  # T_max = 6: the turn limit does not end it first
    bad = _call("catalog.get_product", product_id="P9999")
    assert not env.step(bad).done and not env.step(bad).done
    step = env.step(bad)
    assert step.done and step.reward == -1.0 and step.info["invalid_tool_calls"] == 3


def test_turn_limit_scores_what_exists():
    env = envs.make_env("PD")
    env.reset(seed=5, difficulty=0)  # T_max = 4
    steps = [env.step(_call("catalog.search", query="mug")) for _ in range(4)]
    assert [s.done for s in steps] == [False, False, False, True]
    info = steps[-1].info
    assert info["status"] == "ok" and info["reason"] == "turn limit" and not info["success"]
    assert info["r_task"] == pytest.approx(-1.0)  # nothing recommended
    assert info["r_eff"] == pytest.approx(-1.0)


def test_finish_and_rage_quit():
    env = envs.make_env("CART")
    msgs = env.reset(seed=9, difficulty=4)
    step = env.finish("token budget")
    assert step.done and step.info["status"] == "truncated" and step.info["r_task"] == -1.0
    # A user with nothing left to reveal quits after two unhelpful questions.
    env.reset(seed=9, difficulty=0)
    first = env.step("What else?")
    if first.observation and first.observation[0]["content"].startswith("Also:"):
        first = env.step("What else?")
    last = env.step("Anything more?")
    assert last.done and last.info["user_act"] == "quit" and last.info["status"] == "ok"
    assert msgs[0]["role"] == "system" and msgs[1]["role"] == "user"


def test_hallucinated_ids_are_reported():
    env = envs.make_env("PD")
    env.reset(seed=1, difficulty=0)
    step = env.step(_call("answer.submit", product_ids=["P0003", "P0004"]))
    assert step.done and step.info["hallucinated_ids"] == ["P0003", "P0004"]
    assert step.info["r_hall"] == -1.0


@pytest.mark.parametrize("name", envs.ENV_NAMES)
def test_a_turn_cut_at_its_token_budget_is_a_hard_fail(name):
    """finish(OVERLONG_TURN) is the rollout's over-long turn: -1 like any hard fail, so running
    past the turn budget never pays better than a malformed call; other cuts are truncations."""
    from rlvr_jax.envs import base  # noqa: PLC0415

    env = envs.make_env(name)
    env.reset(seed=3, difficulty=1)
    step = env.finish(base.OVERLONG_TURN)
    assert step.done and step.reward == -1.0 and step.info["status"] == "hard_fail"
    env.reset(seed=3, difficulty=1)
    step = env.finish(base.TURN_LIMIT)
    assert step.done and step.info["status"] == "truncated" and step.reward > -1.0
