"""Shopping environments: product discovery (PD), substitution (SUB) and cart building (CART)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from rlvr_jax.envs.ecom import catalog as catalog_lib
from rlvr_jax.envs.ecom import episode, rewards, tools, user_sim

SEARCH_TOOLS = ("catalog.search", "catalog.get_product", "catalog.get_variants")
FILTERS_HELP = "filters: " + ",".join(tools.FILTER_KEYS) + "."
MAX_MATCHES = 10  # a PD goal singles out at most this many products (one search can show them)
_TRIES = 200

# How the user states each constraint ("{}" is the value typos may hit).
CONSTRAINT_TEMPLATES = {
    "brand": "brand {}",
    "color": "color {}",
    "material": "material {}",
    "max_price": "under ${}",
    "min_rating": "rating {}+",
    "max_ship_days": "ships in {} days or less",
}
DISCRETE = ("brand", "color", "material")


def satisfies(p: catalog_lib.Product, key: str, value: Any) -> bool:
    if key in DISCRETE or key == "category":
        return getattr(p, key) == value
    if key == "max_price":
        return p.price <= value
    if key == "min_rating":
        return p.rating >= value
    if key == "max_ship_days":
        return p.ship_days <= value
    raise ValueError(key)


def _numeric_value(key: str, p: catalog_lib.Product, rng: np.random.Generator) -> Any:
    """A threshold the product p meets, a little looser than p itself."""
    if key == "max_price":
        return int(5 * math.ceil((p.price + int(rng.integers(0, 10))) / 5))
    if key == "min_rating":
        return math.floor(p.rating * 2) / 2
    return min(catalog_lib.MAX_SHIP_DAYS, p.ship_days + int(rng.integers(0, 3)))


def _category_oos(cat, category, p_oos, rng, keep=()) -> frozenset[str]:
    """The episode's out-of-stock overlay: each product of `category` with probability p_oos."""
    return frozenset(
        p.product_id
        for p in cat.products
        if p.category == category and rng.random() < p_oos and p.product_id not in keep
    )


def _product_ids(answer: dict[str, Any] | None, k: int) -> tuple[str, ...]:
    return tuple(answer["product_ids"][:k]) if answer else ()


def _check_product_ids(args: dict[str, Any]) -> None:
    ids = args["product_ids"]
    if not ids or len(ids) > tools.MAX_SHOWN or not all(isinstance(i, str) for i in ids):
        raise tools.ToolError(f"product_ids must be 1..{tools.MAX_SHOWN} product id strings")
    if len(set(ids)) != len(ids):
        raise tools.ToolError("product_ids has duplicates")


@dataclasses.dataclass(frozen=True)
class PDGoal:
    category: str
    constraints: tuple[tuple[str, Any], ...]  # besides the category
    k: int
    weights: tuple[tuple[str, float], ...]  # the persona
    d: int

    def matches(self, p: catalog_lib.Product) -> bool:
        return p.category == self.category and all(satisfies(p, k, v) for k, v in self.constraints)


class ProductDiscovery(episode.EcomEnv):
    """PD: recommend k products meeting the user's constraints, ranked by their priorities."""

    name = "PD"
    tool_names = SEARCH_TOOLS
    submit_spec = {"product_ids": (list, True)}
    submit_help = "product_ids: best first"
    system_extra = FILTERS_HELP

    def build(self, rng, th, s):
        products = self.cat.products
        for _ in range(_TRIES):
            target = products[int(rng.integers(len(products)))]
            if target.stock <= 0:
                continue
            keys = [str(k) for k in rng.permutation(list(CONSTRAINT_TEMPLATES))[: th.m - 1]]
            cons = tuple(
                (k, getattr(target, k) if k in DISCRETE else _numeric_value(k, target, rng))
                for k in keys
            )
            weights = tuple(user_sim.sample_persona(rng).items())
            goal = PDGoal(target.category, cons, th.k_rec, weights, th.d)
            if sum(goal.matches(p) for p in products) <= MAX_MATCHES:
                break
        s.oos = _category_oos(self.cat, goal.category, th.p_oos, rng, keep={target.product_id})
        switch_goal, switch_slot = self._switch(goal, rng, th, s)
        slots = [user_sim.Slot(k, CONSTRAINT_TEMPLATES[k], str(v)) for k, v in goal.constraints]
        user = user_sim.UserSim(
            rng,
            f"I'm looking for a {goal.category}",
            slots,
            outro=f"Give me {goal.k} picks; {user_sim.persona_text(dict(weights))}.",
            p_missing=th.p_missing,
            p_noise=th.p_noise,
            switch=switch_slot,
        )
        return episode.Built(goal, user, switch_goal)

    def _switch(self, goal, rng, th, s):
        """With probability p_switch: one discrete constraint changes to another value that
        still leaves 1..MAX_MATCHES matches, at least one in stock."""
        if rng.random() >= th.p_switch:
            return None, None
        for i, (key, value) in enumerate(goal.constraints):
            if key not in DISCRETE:
                continue
            for new in rng.permutation(
                [v for v in catalog_lib.values_of(key, goal.category) if v != value]
            ):
                cons = goal.constraints[:i] + ((key, str(new)),) + goal.constraints[i + 1 :]
                alt = dataclasses.replace(goal, constraints=cons)
                matches = [p for p in self.cat.products if alt.matches(p)]
                if 1 <= len(matches) <= MAX_MATCHES and any(s.in_stock(p) for p in matches):
                    return alt, user_sim.Slot(key, CONSTRAINT_TEMPLATES[key], str(new))
        return None, None

    def check_submit(self, args):
        super().check_submit(args)
        _check_product_ids(args)

    def score(self, goal, s, answer):
        rec = _product_ids(answer, goal.k)
        weights = dict(goal.weights)

        def util(p):
            return user_sim.utility(weights, p.price, p.rating, p.ship_days)

        pool = {
            p.product_id: util(p) for p in self.cat.products if goal.matches(p) and s.in_stock(p)
        }
        rels = [pool.get(pid, 0.0) for pid in rec]
        nd = rewards.ndcg(rels, sorted(pool.values(), reverse=True)[: goal.k])
        n_cons = 1 + len(goal.constraints)
        s_best = (
            max(
                (
                    (p.category == goal.category)
                    + sum(satisfies(p, k, v) for k, v in goal.constraints)
                    for p in (self.cat.by_id.get(pid) for pid in rec)
                    if p is not None
                ),
                default=0,
            )
            / n_cons
        )
        oos = [pid not in self.cat.by_id or not s.in_stock(self.cat.by_id[pid]) for pid in rec]
        oos_rate = sum(oos) / len(oos) if oos else 1.0
        r_task = rewards.pd_task(nd, s_best, oos_rate, goal.d)
        return episode.Score(r_task, rewards.is_correct_threshold(r_task), rec)


@dataclasses.dataclass(frozen=True)
class SubGoal:
    original: str  # the out-of-stock product id
    constraints: tuple[tuple[str, Any], ...]  # max_price / min_rating
    k: int


def overlap(a: catalog_lib.Product, b: catalog_lib.Product) -> int:
    """Shared brand, color and material: SUB's similarity (0..3)."""
    return sum(getattr(a, k) == getattr(b, k) for k in DISCRETE)


class Substitution(episode.EcomEnv):
    """SUB: the user's product is out of stock; recommend k similar in-stock ones."""

    name = "SUB"
    tool_names = SEARCH_TOOLS
    submit_spec = {"product_ids": (list, True)}
    submit_help = "product_ids: best first"
    system_extra = FILTERS_HELP

    def build(self, rng, th, s):
        for _ in range(_TRIES):  # a well-posed goal: at least k relevant substitutes exist
            orig = self.cat.products[int(rng.integers(len(self.cat.products)))]
            cons = []
            for k in ("max_price", "min_rating")[: max(0, th.m - 2)]:
                if k == "max_price":
                    cons.append((k, int(5 * math.ceil(orig.price * rng.uniform(1.0, 1.4) / 5))))
                else:
                    cons.append((k, float(rng.choice([3.0, 3.5]))))
            goal = SubGoal(orig.product_id, tuple(cons), th.k_rec)
            s.oos = _category_oos(self.cat, orig.category, th.p_oos, rng) | {orig.product_id}
            if sum(self.relevance(goal, s, p) > 0 for p in self.cat.products) >= goal.k:
                break
        slots = [user_sim.Slot("k", "suggest {} similar in-stock items", str(goal.k), False)]
        slots += [user_sim.Slot(k, CONSTRAINT_TEMPLATES[k], str(v)) for k, v in goal.constraints]
        user = user_sim.UserSim(
            rng,
            f"{orig.product_id} {orig.title} (${orig.price}) is out of stock",
            slots,
            p_missing=th.p_missing,
            p_noise=th.p_noise,
        )
        return episode.Built(goal, user)

    def check_submit(self, args):
        super().check_submit(args)
        _check_product_ids(args)

    def relevance(self, goal: SubGoal, s: tools.Session, p: catalog_lib.Product) -> float:
        orig = self.cat.by_id[goal.original]
        if p.category != orig.category or p.product_id == orig.product_id or not s.in_stock(p):
            return 0.0
        if not all(satisfies(p, k, v) for k, v in goal.constraints):
            return 0.0
        return overlap(p, orig) / 3

    def score(self, goal, s, answer):
        rec = _product_ids(answer, goal.k)
        by_id = self.cat.by_id
        rels = [self.relevance(goal, s, by_id[pid]) if pid in by_id else 0.0 for pid in rec]
        ideal = sorted((self.relevance(goal, s, p) for p in self.cat.products), reverse=True)
        nd = rewards.ndcg(rels, ideal[: goal.k])
        oos = [pid not in by_id or not s.in_stock(by_id[pid]) for pid in rec]
        r_task = rewards.sub_task(nd, sum(oos) / len(oos) if oos else 1.0)
        return episode.Score(r_task, rewards.is_correct_threshold(r_task), rec)


@dataclasses.dataclass(frozen=True)
class CartGoal:
    lines: tuple[tuple[str, int], ...]  # (cart item id: variant id or product id, quantity)


def _line_slot(i: int, p: catalog_lib.Product, qty: int, label: str | None) -> user_sim.Slot:
    size = f" size {label}" if label else ""
    return user_sim.Slot(f"line{i}", f"{qty} x {{}}{size}", p.title, omittable=i > 0)


class CartBuilding(episode.EcomEnv):
    """CART: put the described items, sizes and quantities in the cart, then submit."""

    name = "CART"
    tool_names = SEARCH_TOOLS + ("cart.add", "cart.remove", "cart.set_quantity", "cart.view")
    submit_spec = {}
    submit_help = "no arguments, once the cart is right"
    system_extra = FILTERS_HELP

    def build(self, rng, th, s):
        n = min(4, max(1, th.m - 1))
        lines, slots, chosen = [], [], set()
        while len(lines) < n:
            p = self.cat.products[int(rng.integers(len(self.cat.products)))]
            if p.stock <= 0 or p.product_id in chosen:
                continue
            label, key, stock = None, p.product_id, p.stock
            if p.variants:
                options = [v for v in p.variants if v.stock > 0]
                if not options:
                    continue
                v = options[int(rng.integers(len(options)))]
                label, key, stock = v.label, v.variant_id, v.stock
            qty = int(rng.integers(1, min(3, stock) + 1))
            chosen.add(p.product_id)
            lines.append((key, qty, p, label))
            slots.append(_line_slot(len(slots), p, qty, label))
        goal = CartGoal(tuple((key, qty) for key, qty, _, _ in lines))
        switch_goal = switch_slot = None
        if rng.random() < th.p_switch:
            i = int(rng.integers(n))
            key, qty, p, label = lines[i]
            new = qty % 2 + 1  # 1 <-> 2, 3 -> 2: always a change, always in stock
            switch_goal = CartGoal(goal.lines[:i] + ((key, new),) + goal.lines[i + 1 :])
            switch_slot = _line_slot(i, p, new, label)
        user = user_sim.UserSim(
            rng,
            "Please add to my cart",
            slots,
            p_missing=th.p_missing,
            p_noise=th.p_noise,
            switch=switch_slot,
        )
        return episode.Built(goal, user, switch_goal)

    def score(self, goal, s, answer):
        del answer  # the cart is the answer; submitting only ends the episode
        f1 = rewards.unit_f1(dict(goal.lines), s.cart)
        ids = tuple(dict.fromkeys(k.split("-")[0] for k in s.cart))
        return episode.Score(rewards.cart_task(f1), f1 == 1.0, ids)
