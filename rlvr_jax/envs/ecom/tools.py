"""The shop's tools: argument checks, then a compact result line or an "error: ..." line.

`call_tool(session, name, arguments)` never raises for anything the policy writes: wrong argument
names, types or ranges, unknown ids and unmet preconditions come back as "error: ..." text (and
count as invalid calls). Every product id a result shows is recorded in `session.surfaced`, which
the hallucination term checks answers against. `answer.submit` is the environment's, not here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from rlvr_jax.envs.ecom import catalog as catalog_lib
from rlvr_jax.envs.ecom import retrieval

MAX_SHOWN = 10  # search results per call (observations stay short)
DEFAULT_SHOWN = 5
MAX_QTY = 20
FILTER_KEYS = ("category", "brand", "color", "material", "min_price", "max_price", "min_rating",
               "max_ship_days", "in_stock")  # fmt: skip

# name -> {argument: (type, required)}; int means an int (not a bool), float means any number.
SPECS: dict[str, dict[str, tuple[type, bool]]] = {
    "catalog.search": {"query": (str, True), "filters": (dict, False), "top_k": (int, False)},
    "catalog.get_product": {"product_id": (str, True)},
    "catalog.get_variants": {"product_id": (str, True)},
    "cart.add": {"product_id": (str, True), "quantity": (int, True), "variant_id": (str, False)},
    "cart.remove": {"product_id": (str, True)},
    "cart.set_quantity": {"product_id": (str, True), "quantity": (int, True)},
    "cart.view": {},
    "order.list": {},
    "order.get_status": {"order_id": (str, True)},
    "return.check_eligibility": {"order_id": (str, True), "product_id": (str, True)},
    "return.initiate": {"order_id": (str, True), "product_id": (str, True), "reason": (str, True)},
    "policy.search": {"query": (str, True)},
}
SIGNATURES = {
    "catalog.search": "catalog.search(query,filters?,top_k?)",
    "cart.add": "cart.add(product_id,quantity,variant_id?)",
}


_VOCAB = {
    "category": set(catalog_lib.CATEGORIES),
    "brand": set(catalog_lib.BRANDS),
    "color": set(catalog_lib.COLORS),
    "material": {m for ms in catalog_lib.MATERIALS.values() for m in ms},
}


class ToolError(Exception):
    """A call the policy got wrong; its message is what the policy sees after "error: "."""


@dataclasses.dataclass
class Session:
    """One episode's mutable tool state (the environment owns it; tools update it)."""

    cat: catalog_lib.Catalog
    rng: np.random.Generator  # retrieval corruption
    depth: int  # theta.top_k
    eps_rank: float
    user_id: str | None = None
    orders: tuple[catalog_lib.Order, ...] = ()  # the visible history (theta.h_orders newest)
    oos: frozenset[str] = frozenset()  # products out of stock in this episode only
    cart: dict[str, int] = dataclasses.field(default_factory=dict)  # item id -> quantity
    surfaced: set[str] = dataclasses.field(default_factory=set)
    returns: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
    tool_calls: int = 0
    invalid_calls: int = 0

    def in_stock(self, p: catalog_lib.Product) -> bool:
        return p.stock > 0 and p.product_id not in self.oos

    def product(self, pid: Any) -> catalog_lib.Product:
        p = self.cat.by_id.get(pid) if isinstance(pid, str) else None
        if p is None:
            raise ToolError(f"unknown product id {pid}")
        return p

    def order(self, oid: Any) -> catalog_lib.Order:
        for o in self.orders:
            if o.order_id == oid:
                return o
        raise ToolError(f"unknown order id {oid}")


def signature(name: str) -> str:
    return SIGNATURES.get(name, f"{name}({','.join(SPECS[name])})")


def check_args(spec: dict[str, tuple[type, bool]], args: dict[str, Any]) -> None:
    """Raises ToolError on unknown or missing arguments and on wrong types."""
    for k in args:
        if k not in spec:
            raise ToolError(f"unknown argument '{k}'")
    for k, (typ, required) in spec.items():
        if k not in args:
            if required:
                raise ToolError(f"missing argument '{k}'")
            continue
        v = args[k]
        ok = (
            isinstance(v, (int, float)) and not isinstance(v, bool)
            if typ is float
            else isinstance(v, int) and not isinstance(v, bool)
            if typ is int
            else isinstance(v, typ)
        )
        if not ok:
            raise ToolError(f"argument '{k}' must be {typ.__name__}")


def call_tool(session: Session, name: str, args: dict[str, Any]) -> str:
    """Runs one tool call; the result line, or "error: ..." (counted) for a wrong call."""
    session.tool_calls += 1
    try:
        check_args(SPECS[name], args)
        return _TOOLS[name](session, **args)
    except ToolError as e:
        session.invalid_calls += 1
        return f"error: {e}"


def _filter_fn(filters: dict[str, Any]):
    for k, v in filters.items():
        if k not in FILTER_KEYS:
            raise ToolError(f"unknown filter '{k}'")
        if k in ("category", "brand", "color", "material"):
            vocab = _VOCAB[k]
            if not isinstance(v, str) or v.lower() not in vocab:
                raise ToolError(f"unknown {k} '{v}'")
        elif k == "in_stock":
            if not isinstance(v, bool):
                raise ToolError("filter 'in_stock' must be bool")
        elif not isinstance(v, (int, float)) or isinstance(v, bool):
            raise ToolError(f"filter '{k}' must be a number")

    def keep(p: catalog_lib.Product, in_stock: bool) -> bool:
        f = filters
        return (
            all(
                getattr(p, k) == f[k].lower()
                for k in ("category", "brand", "color", "material")
                if k in f
            )  # fmt: skip
            and p.price >= f.get("min_price", 0)
            and p.price <= f.get("max_price", float("inf"))
            and p.rating >= f.get("min_rating", 0)
            and p.ship_days <= f.get("max_ship_days", float("inf"))
            and (in_stock or not f.get("in_stock", False))
        )

    return keep


def _search(s: Session, query: str, filters: dict | None = None, top_k: int = DEFAULT_SHOWN):
    if not 1 <= top_k <= MAX_SHOWN:
        raise ToolError(f"top_k must be in 1..{MAX_SHOWN}")
    keep = _filter_fn(filters or {})
    ranked = retrieval.product_index(s.cat).rank(query, s.depth)
    ranked = retrieval.corrupt(ranked, s.eps_rank, s.rng)
    lines = []
    for i in ranked:
        p = s.cat.products[i]
        if keep(p, s.in_stock(p)):
            lines.append(catalog_lib.product_line(p, s.in_stock(p)))
            s.surfaced.add(p.product_id)
            if len(lines) == top_k:
                break
    return "\n".join(lines) if lines else "no results"


def _get_product(s: Session, product_id: str) -> str:
    p = s.product(product_id)
    s.surfaced.add(p.product_id)
    sizes = " sizes " + "/".join(v.label for v in p.variants) if p.variants else ""
    stock = "in stock" if s.in_stock(p) else "out of stock"
    return (
        f"{p.product_id} {p.title}: brand {p.brand}, color {p.color}, material {p.material}, "
        f"${p.price}, {p.rating}*, ships {p.ship_days}d, {stock}{sizes}"
    )


def _get_variants(s: Session, product_id: str) -> str:
    p = s.product(product_id)
    s.surfaced.add(p.product_id)
    if not p.variants:
        return f"{p.product_id} has no variants"
    stock = s.in_stock(p)
    return " ".join(f"{v.variant_id}({v.stock if stock else 0})" for v in p.variants)


def _cart_text(s: Session) -> str:
    if not s.cart:
        return "cart empty"
    return "cart: " + ", ".join(f"{k} x{q}" for k, q in s.cart.items())


def _cart_add(s: Session, product_id: str, quantity: int, variant_id: str | None = None) -> str:
    p = s.product(product_id)
    if not 1 <= quantity <= MAX_QTY:
        raise ToolError(f"quantity must be in 1..{MAX_QTY}")
    key, stock = p.product_id, p.stock
    if p.variants:
        v = next((v for v in p.variants if v.variant_id == variant_id), None)
        if variant_id is None:
            raise ToolError(f"{p.product_id} needs a variant_id (see catalog.get_variants)")
        if v is None:
            raise ToolError(f"unknown variant id {variant_id} for {p.product_id}")
        key, stock = v.variant_id, v.stock
    elif variant_id is not None:
        raise ToolError(f"{p.product_id} has no variants")
    if not s.in_stock(p) or stock <= 0:
        raise ToolError(f"{key} is out of stock")
    s.surfaced.add(p.product_id)
    s.cart[key] = s.cart.get(key, 0) + quantity
    return "ok. " + _cart_text(s)


def _cart_keys(s: Session, item_id: str) -> list[str]:
    keys = [k for k in s.cart if k == item_id or k.split("-")[0] == item_id]
    if not keys:
        raise ToolError(f"{item_id} is not in the cart")
    return keys


def _cart_remove(s: Session, product_id: str) -> str:
    for k in _cart_keys(s, product_id):
        del s.cart[k]
    return "ok. " + _cart_text(s)


def _cart_set(s: Session, product_id: str, quantity: int) -> str:
    if not 0 <= quantity <= MAX_QTY:
        raise ToolError(f"quantity must be in 0..{MAX_QTY}")
    keys = _cart_keys(s, product_id)
    if len(keys) > 1:
        raise ToolError(f"{product_id} has several variants in the cart; name one")
    if quantity == 0:
        del s.cart[keys[0]]
    else:
        s.cart[keys[0]] = quantity
    return "ok. " + _cart_text(s)


def _cart_view(s: Session) -> str:
    return _cart_text(s)


def _order_list(s: Session) -> str:
    if not s.orders:
        return "no orders"
    lines = []
    for o in s.orders:
        items = "; ".join(f"{pid} {s.cat.by_id[pid].title} x{q}" for pid, q in o.items)
        s.surfaced.update(pid for pid, _ in o.items)
        lines.append(f"{o.order_id} {o.ordered.isoformat()}: {items}")
    return "\n".join(lines)


def _order_status(s: Session, order_id: str) -> str:
    o = s.order(order_id)
    if o.status in ("delivered", "returned"):
        return f"{o.order_id} {o.status} (delivered {o.delivered.isoformat()})"
    if o.status in ("processing", "shipped"):
        return f"{o.order_id} {o.status}, eta {o.eta.isoformat()}"
    return f"{o.order_id} {o.status}"


def eligibility(s: Session, order_id: Any, product_id: Any) -> tuple[bool, str]:
    """Whether a line can be returned now, and why (raises on unknown ids)."""
    o = s.order(order_id)
    p = s.product(product_id)
    if p.product_id not in {pid for pid, _ in o.items}:
        raise ToolError(f"{p.product_id} is not in order {o.order_id}")
    if any(r[:2] == (o.order_id, p.product_id) for r in s.returns) or o.status == "returned":
        return False, "already returned"
    if o.status != "delivered":
        return False, f"order is {o.status}, not delivered"
    window = int(s.cat.facts[f"window_days.{p.group}"])
    age = catalog_lib.days_ago(o.delivered)
    if age > window:
        return False, f"delivered {age} days ago, window {window} days"
    return True, f"{window - age} of {window} days left"


def _check_eligibility(s: Session, order_id: str, product_id: str) -> str:
    ok, why = eligibility(s, order_id, product_id)
    return ("eligible: " if ok else "not eligible: ") + why


def _return_initiate(s: Session, order_id: str, product_id: str, reason: str) -> str:
    if not reason.strip():
        raise ToolError("reason must not be empty")
    ok, why = eligibility(s, order_id, product_id)
    if not ok:
        raise ToolError(f"not eligible: {why}")
    s.returns.append((order_id, product_id, reason))
    return f"return R{len(s.returns)} created for {product_id} in {order_id}"


def _policy_search(s: Session, query: str) -> str:
    hits = retrieval.policy_index(s.cat).rank(query, 2)
    return "\n".join(f"{s.cat.policy[i].section_id} {s.cat.policy[i].text}" for i in hits) or (
        "no results"
    )


_TOOLS = {
    "catalog.search": _search,
    "catalog.get_product": _get_product,
    "catalog.get_variants": _get_variants,
    "cart.add": _cart_add,
    "cart.remove": _cart_remove,
    "cart.set_quantity": _cart_set,
    "cart.view": _cart_view,
    "order.list": _order_list,
    "order.get_status": _order_status,
    "return.check_eligibility": _check_eligibility,
    "return.initiate": _return_initiate,
    "policy.search": _policy_search,
}
