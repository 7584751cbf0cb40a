"""Customer-service environments: returns (RETURN), order status (STATUS), policy QA (POLICY)."""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

import numpy as np

from rlvr_jax.envs.ecom import catalog as catalog_lib
from rlvr_jax.envs.ecom import episode, rewards, tools, user_sim

RETURN_REASONS = ("too small", "too large", "damaged", "wrong color", "not needed")


def _pick_line(cat, rng, h_orders, want):
    """A user, their h_orders newest orders, and one (order, product) line in them whose product
    appears only once (so a description of it is unambiguous) and that satisfies `want`."""
    for u in rng.permutation(list(cat.users)):
        visible = cat.orders_of[str(u)][:h_orders]
        counts = collections.Counter(pid for o in visible for pid, _ in o.items)
        lines = [(o, pid) for o in visible for pid, _ in o.items if counts[pid] == 1]
        lines = [(o, pid) for o, pid in lines if want(o, cat.by_id[pid])]
        if lines:
            o, pid = lines[int(rng.integers(len(lines)))]
            return str(u), visible, o, pid
    raise RuntimeError("no user fits")  # cannot happen with the shipped catalog sizes


@dataclasses.dataclass(frozen=True)
class ReturnGoal:
    order_id: str
    product_id: str
    replacement: str | None  # cart item id of the wanted replacement, if any


class Returns(episode.EcomEnv):
    """RETURN: find the order line the user describes, start its return, maybe add a
    replacement to the cart, then submit the order and product."""

    name = "RETURN"
    tool_names = ("order.list", "order.get_status", "return.check_eligibility",
                  "return.initiate", "catalog.get_variants", "cart.add", "cart.remove",
                  "cart.view")  # fmt: skip
    submit_spec = {"order_id": (str, True), "product_id": (str, True)}
    submit_help = "order_id, product_id"

    def build(self, rng, th, s):
        def eligible(o, p):
            window = int(self.cat.facts[f"window_days.{p.group}"])
            return o.status == "delivered" and catalog_lib.days_ago(o.delivered) <= window

        s.user_id, s.orders, order, pid = _pick_line(self.cat, rng, th.h_orders, eligible)
        p = self.cat.by_id[pid]
        slots = [
            user_sim.Slot("item", "the {}", p.title),
            user_sim.Slot("reason", "reason: {}", str(rng.choice(RETURN_REASONS)), False),
        ]
        replacement = None
        if th.d >= 2 and p.stock > 0 and rng.random() < 0.5:
            options = [v for v in p.variants if v.stock > 0]
            if not p.variants:
                replacement = pid
                slots.append(user_sim.Slot("rep", "also add a new one to my cart{}", "", False))
            elif options:
                v = options[int(rng.integers(len(options)))]
                replacement = v.variant_id
                slots.append(
                    user_sim.Slot("rep", "also add a new one in size {} to my cart", v.label, False)
                )
        user = user_sim.UserSim(
            rng, "I want to return an item", slots, p_missing=th.p_missing, p_noise=th.p_noise
        )
        return episode.Built(ReturnGoal(order.order_id, pid, replacement), user)

    def score(self, goal, s, answer):
        target = (goal.order_id, goal.product_id)
        picked = (answer["order_id"], answer["product_id"]) if answer else None
        r_sel = 1.0 if picked == target else -1.0
        r_ret = 1.0 if {r[:2] for r in s.returns} == {target} else -1.0
        want = {goal.replacement: 1} if goal.replacement else {}
        got = s.cart
        r_rep = 1.0 if set(got) == set(want) and all(q >= 1 for q in got.values()) else -1.0
        r_task = rewards.return_task(r_sel, r_ret, r_rep)
        ids = ((picked[1],) if picked else ()) + tuple(k.split("-")[0] for k in s.cart)
        return episode.Score(r_task, r_sel == r_ret == r_rep == 1.0, ids)


@dataclasses.dataclass(frozen=True)
class StatusGoal:
    order_id: str
    status: str


class OrderStatus(episode.EcomEnv):
    """STATUS: find the order the user describes and report its status."""

    name = "STATUS"
    tool_names = ("order.list", "order.get_status", "catalog.get_product")
    submit_spec = {"order_id": (str, True), "status": (str, True)}
    submit_help = "order_id, status: " + "|".join(catalog_lib.ORDER_STATUSES)

    def build(self, rng, th, s):
        # Draw the status first so every status is common, not just "delivered".
        status = str(rng.choice(catalog_lib.ORDER_STATUSES))
        try:
            s.user_id, s.orders, order, pid = _pick_line(
                self.cat, rng, th.h_orders, lambda o, p: o.status == status
            )
        except RuntimeError:
            s.user_id, s.orders, order, pid = _pick_line(
                self.cat, rng, th.h_orders, lambda o, p: True
            )
        slots = [user_sim.Slot("item", "the one with the {}", self.cat.by_id[pid].title)]
        user = user_sim.UserSim(
            rng, "Where is my order", slots, p_missing=th.p_missing, p_noise=th.p_noise
        )
        return episode.Built(StatusGoal(order.order_id, order.status), user)

    def check_submit(self, args):
        super().check_submit(args)
        if args["status"].strip().lower() not in catalog_lib.ORDER_STATUSES:
            raise tools.ToolError("status must be one of " + "|".join(catalog_lib.ORDER_STATUSES))

    def score(self, goal, s, answer):
        oid_ok = bool(answer) and answer["order_id"] == goal.order_id
        stat_ok = bool(answer) and answer["status"].strip().lower() == goal.status
        return episode.Score(rewards.status_task(oid_ok, stat_ok), oid_ok and stat_ok)


@dataclasses.dataclass(frozen=True)
class PolicyGoal:
    question: str
    gold: Any  # a number, or a string for categorical questions
    branches: int  # facts the answer combines


def policy_questions(cat: catalog_lib.Catalog, category: str, rng: np.random.Generator):
    """(branches, question, needs_category, gold) for every question type, for one category."""
    f, g = cat.facts, catalog_lib.CATEGORY_GROUP[category]
    window, fee = int(f[f"window_days.{g}"]), int(f[f"restock_pct.{g}"])
    x, n = int(rng.integers(10, 200)), int(rng.integers(1, 100))
    free, cost = int(f["free_ship_over"]), int(f["ship_cost"])
    shipping = 0 if x >= free else cost
    return [
        (1, "How many days do I have to return my item", True, window),
        (1, "How many months of warranty does my item have", True, int(f[f"warranty_months.{g}"])),
        (1, "Can I return my item once opened, yes or no", True, f[f"opened_ok.{g}"]),
        (1, "Above what order total in $ is standard shipping free", False, free),
        (1, "Are refunds issued to card or store credit", False, f["refund_method"]),
        (2, f"What is the restocking fee in $ for my ${x} item", True, round(x * fee / 100, 2)),
        (2, f"What does standard shipping cost in $ for a ${x} order", False, shipping),
        (3, f"How many days are left to return my item delivered {n} days ago", True,
         max(0, window - n)),
        (3, f"How much in $ is refunded for my ${x} item after the restocking fee", True,
         round(x - x * fee / 100, 2)),
    ]  # fmt: skip


class PolicyQA(episode.EcomEnv):
    """POLICY: answer a question about the returns/shipping policy, some needing arithmetic."""

    name = "POLICY"
    tool_names = ("policy.search",)
    submit_spec = {"answer": (object, True)}
    submit_help = "answer: a number or a word"

    def build(self, rng, th, s):
        category = str(rng.choice(catalog_lib.CATEGORIES))
        options = [q for q in policy_questions(self.cat, category, rng) if q[0] <= th.b_branch]
        branches, question, needs_category, gold = options[int(rng.integers(len(options)))]
        slots = [user_sim.Slot("item", "it's a {}", category)] if needs_category else []
        user = user_sim.UserSim(rng, question, slots, p_missing=th.p_missing, p_noise=th.p_noise)
        return episode.Built(PolicyGoal(question, gold, branches), user)

    def check_submit(self, args):
        super().check_submit(args)
        v = args["answer"]
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise tools.ToolError("answer must be a number or a string")

    def score(self, goal, s, answer):
        if answer is None:
            return episode.Score(-1.0, False)
        if isinstance(goal.gold, str):
            r_task = rewards.policy_categorical(str(answer["answer"]), goal.gold)
        else:
            try:
                r_task = rewards.policy_numeric(float(answer["answer"]), float(goal.gold))
            except ValueError:
                r_task = -1.0
        return episode.Score(r_task, rewards.is_correct_threshold(r_task))
