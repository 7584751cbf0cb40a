"""Scripted experts (one per environment) and a random baseline policy.

An expert is a pure function of the messages so far (system, user, assistant, tool: exactly what
the policy sees) to the next assistant turn. It re-reads the whole conversation each turn: the
user's goal (typos fixed against the shop's public vocabulary), then what its earlier tool calls
returned, and does the next missing step. It never reads the environment's hidden state, so its
episodes are valid warm-start transcripts.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

from rlvr_jax.envs import actions, base
from rlvr_jax.envs.ecom import catalog as catalog_lib
from rlvr_jax.envs.ecom import tools, user_sim

Expert = Callable[[list[base.Message]], str]
ASK = "Could you tell me the rest of what you need?"

_VOCAB = sorted(
    set(catalog_lib.CATEGORIES) | set(catalog_lib.BRANDS) | set(catalog_lib.COLORS)
    | {m for ms in catalog_lib.MATERIALS.values() for m in ms}
)  # fmt: skip
_SHAPE = {(w[0], w[-1], "".join(sorted(w))): w for w in _VOCAB}
_LINE = re.compile(r"^(P\d{4}) (\w+ \w+ \w+ \w+) \$(\d+) ([\d.]+)\* (\d+)d( oos)?$")
_TITLE = r"(\w+ \w+ \w+ \w+)"


def fix_word(word: str) -> str:
    """Undoes the simulator's typo (an adjacent interior swap) for shop vocabulary words."""
    if len(word) < 4 or word in _SHAPE.values():
        return word
    return _SHAPE.get((word[0], word[-1], "".join(sorted(word))), word)


def fix_text(text: str) -> str:
    return re.sub(r"[a-z]+", lambda m: fix_word(m.group(0)), text)


def _user_texts(messages: list[base.Message]) -> list[str]:
    return [fix_text(m["content"]) for m in messages if m["role"] == "user"]


def _needs_clarify(messages: list[base.Message]) -> bool:
    first = next(m["content"] for m in messages if m["role"] == "user")
    asked = any(m["role"] == "assistant" and not actions.parse_action(m["content"]).tool_calls
                for m in messages)  # fmt: skip
    return first.endswith(user_sim.MORE_HINT) and not asked


def _budget(messages: list[base.Message]) -> int:
    return int(re.search(r"at most (\d+) per turn", messages[0]["content"]).group(1))


def _results(messages: list[base.Message]) -> list[tuple[actions.ToolCall, str]]:
    """Each earlier tool call with the tool message that answered it (in order)."""
    out, pending = [], []
    for m in messages:
        if m["role"] == "assistant":
            pending = list(actions.parse_action(m["content"]).tool_calls)
        elif m["role"] == "tool" and pending:
            out.append((pending.pop(0), m["content"]))
    return out


def _call(name: str, **arguments: Any) -> str:
    return actions.format_tool_call(name, arguments)


def _turn(calls: list[str], budget: int) -> str:
    return "".join(calls[:budget])


def _last_cart(results) -> dict[str, int]:
    cart: dict[str, int] = {}
    for _, text in results:
        if text == "cart empty" or text.startswith(("ok. cart", "cart:")):
            cart = dict(
                (k, int(q)) for k, q in re.findall(r"([\w-]+) x(\d+)", text.split("cart", 1)[1])
            )
    return cart


# --- PD and SUB ---
def _constraints(texts: list[str]) -> dict[str, Any]:
    """The user's current constraints as search filters (later messages override)."""
    filters: dict[str, Any] = {}
    for t in texts:
        for key in ("brand", "color", "material"):
            for v in re.findall(rf"\b{key} (\w+)", t):
                filters[key] = v
        for v in re.findall(r"under \$(\d+)", t):
            filters["max_price"] = int(v)
        for v in re.findall(r"rating (\d\.\d)\+", t):
            filters["min_rating"] = float(v)
        for v in re.findall(r"ships in (\d+) days", t):
            filters["max_ship_days"] = int(v)
    return filters


def _search_lines(results, arguments: dict[str, Any]) -> list[tuple] | None:
    """The parsed lines of the latest search made with exactly these arguments."""
    for call, text in reversed(results):
        if call.name == "catalog.search" and call.arguments == arguments:
            return [m.groups() for m in map(_LINE.match, text.split("\n")) if m]
    return None


def pd_expert(messages: list[base.Message]) -> str:
    if _needs_clarify(messages):
        return ASK
    texts = _user_texts(messages)
    category = re.search(r"looking for a (\w+)", texts[0]).group(1)
    k = int(re.search(r"Give me (\d+) picks", texts[0]).group(1))
    weights = {key: int(re.search(rf"{key} (\d+)%", texts[0]).group(1)) / 100
               for key in user_sim.PERSONA_KEYS}  # fmt: skip
    filters = {"category": category, **_constraints(texts), "in_stock": True}
    words = [filters[key] for key in ("brand", "color", "material") if key in filters]
    args = {"query": " ".join([*words, category]), "filters": filters, "top_k": tools.MAX_SHOWN}
    lines = _search_lines(_results(messages), args)
    if lines is None:
        return _call("catalog.search", **args)
    ranked = sorted(
        lines,
        key=lambda g: (-user_sim.utility(weights, int(g[2]), float(g[3]), int(g[4])), g[0]),
    )
    return _call("answer.submit", product_ids=[g[0] for g in ranked[:k]])


def sub_expert(messages: list[base.Message]) -> str:
    if _needs_clarify(messages):
        return ASK
    texts = _user_texts(messages)
    m = re.search(r"(P\d{4}) (\w+) (\w+) (\w+) (\w+) \(\$(\d+)\)", texts[0])
    orig, brand, color, material, category = m.groups()[:5]
    k = int(re.search(r"suggest (\d+) similar", texts[0]).group(1))
    filters = {"category": category, **_constraints(texts[1:] + [texts[0].split(")", 1)[1]])}
    filters["in_stock"] = True
    args = {"query": f"{brand} {color} {material} {category}", "filters": filters,
            "top_k": tools.MAX_SHOWN}  # fmt: skip
    lines = _search_lines(_results(messages), args)
    if lines is None:
        return _call("catalog.search", **args)

    def shared(g):
        return sum(a == b for a, b in zip(g[1].split()[:3], (brand, color, material), strict=True))

    ranked = sorted((g for g in lines if g[0] != orig), key=lambda g: -shared(g))
    return _call("answer.submit", product_ids=[g[0] for g in ranked[:k]])


# --- CART ---
def cart_expert(messages: list[base.Message]) -> str:
    if _needs_clarify(messages):
        return ASK
    want: dict[str, tuple[int, str | None]] = {}  # title -> (quantity, size)
    for t in _user_texts(messages):
        for qty, title, size in re.findall(rf"(\d+) x {_TITLE}(?: size (\w+))?", t):
            want[title] = (int(qty), size or None)
    results = _results(messages)
    pids, variants = {}, {}
    for call, text in results:
        if call.name == "catalog.search":
            for g in (m.groups() for m in map(_LINE.match, text.split("\n")) if m):
                pids[g[1]] = g[0]
        if call.name == "catalog.get_variants" and not text.startswith("error"):
            for vid, label in re.findall(r"(P\d{4}-(\w+))\(", text):
                variants.setdefault(call.arguments["product_id"], {})[label] = vid
    cart = _last_cart(results)
    calls = []
    for title, (qty, size) in want.items():
        pid = pids.get(title)
        if pid is None:
            calls.append(_call("catalog.search", query=title, top_k=3))
        elif size and pid not in variants:
            calls.append(_call("catalog.get_variants", product_id=pid))
        else:
            key = variants[pid][size] if size else pid
            if key in cart and cart[key] != qty:
                calls.append(_call("cart.set_quantity", product_id=key, quantity=qty))
            elif key not in cart:
                extra = {"variant_id": key} if size else {}
                calls.append(_call("cart.add", product_id=pid, quantity=qty, **extra))
    return _turn(calls, _budget(messages)) if calls else _call("answer.submit")


# --- RETURN and STATUS ---
def _find_line(results, title: str) -> tuple[str, str] | None:
    """(order id, product id) of the order line whose product has this title."""
    for call, text in results:
        if call.name == "order.list":
            for line in text.split("\n"):
                for pid, t in re.findall(rf"(P\d{{4}}) {_TITLE} x\d+", line):
                    if t == title:
                        return line.split()[0], pid
    return None


def return_expert(messages: list[base.Message]) -> str:
    if _needs_clarify(messages):
        return ASK
    text = " ".join(_user_texts(messages))
    title = re.search(rf"the {_TITLE}", text).group(1)
    reason = re.search(r"reason: ([a-z ]+)", text).group(1).strip()
    rep = re.search(r"also add a new one(?: in size (\w+))? to my cart", text)
    results = _results(messages)
    line = _find_line(results, title)
    if line is None:
        return _call("order.list")
    oid, pid = line
    calls = []
    if not any(t.startswith("return R") for _, t in results):
        calls.append(_call("return.initiate", order_id=oid, product_id=pid, reason=reason))
    if rep:
        size = rep.group(1)
        got = [t for c, t in results if c.name == "catalog.get_variants"]
        cart = _last_cart(results)
        if size and not got:
            calls.append(_call("catalog.get_variants", product_id=pid))
        elif not cart:
            vid = re.search(rf"(P\d{{4}}-{size})\(", got[-1]).group(1) if size else None
            extra = {"variant_id": vid} if vid else {}
            calls.append(_call("cart.add", product_id=pid, quantity=1, **extra))
    if calls:
        return _turn(calls, _budget(messages))
    return _call("answer.submit", order_id=oid, product_id=pid)


def status_expert(messages: list[base.Message]) -> str:
    if _needs_clarify(messages):
        return ASK
    title = re.search(rf"the one with the {_TITLE}", " ".join(_user_texts(messages))).group(1)
    results = _results(messages)
    line = _find_line(results, title)
    if line is None:
        return _call("order.list")
    oid = line[0]
    for call, text in results:
        if call.name == "order.get_status" and call.arguments["order_id"] == oid:
            return _call("answer.submit", order_id=oid, status=text.split()[1].rstrip(","))
    return _call("order.get_status", order_id=oid)


# --- POLICY ---
def policy_expert(messages: list[base.Message]) -> str:
    if _needs_clarify(messages):
        return ASK
    text = " ".join(_user_texts(messages))
    item = re.search(r"it's a (\w+)", text)
    category = item.group(1) if item else None
    if "shipping" in text:
        query = "shipping free standard"
    elif "refunds issued" in text:
        query = "refunds issued"
    else:
        query = f"returns {category}"
    found = [t for c, t in _results(messages) if c.name == "policy.search"]
    if not found:
        return _call("policy.search", query=query)
    lines = found[-1].split("\n")
    if category:
        section = next((ln for ln in lines if re.search(rf"\(.*\b{category}\b.*\)", ln)), "")
    else:
        section = " ".join(lines)

    def num(pattern: str) -> float:
        m = re.search(pattern, section)
        return float(m.group(1)) if m else 0.0

    x = float(m.group(1)) if (m := re.search(r"\$(\d+) (?:item|order)", text)) else 0.0
    fee = num(r"restocking fee (\d+)%")
    if "days do I have" in text:
        answer: Any = num(r"window (\d+) days")
    elif "warranty" in text:
        answer = num(r"warranty (\d+) months")
    elif "once opened" in text:
        answer = (re.search(r"returnable: (\w+)", section) or re.search("(no)", "no")).group(1)
    elif "shipping free" in text:
        answer = num(r"over \$(\d+)")
    elif "refunds issued" in text:
        answer = "store credit" if "store credit" in section else "card"
    elif "restocking fee in" in text:
        answer = round(x * fee / 100, 2)
    elif "shipping cost" in text:
        answer = 0.0 if x >= num(r"over \$(\d+)") else num(r"else \$(\d+)")
    elif "days are left" in text:
        n = float(re.search(r"delivered (\d+) days ago", text).group(1))
        answer = max(0.0, num(r"window (\d+) days") - n)
    else:
        answer = round(x - x * fee / 100, 2)
    return _call("answer.submit", answer=answer)


EXPERTS: dict[str, Expert] = {
    "PD": pd_expert,
    "SUB": sub_expert,
    "CART": cart_expert,
    "RETURN": return_expert,
    "STATUS": status_expert,
    "POLICY": policy_expert,
}


def expert_for(name: str) -> Expert:
    return EXPERTS[name]


# --- The random baseline ---
def random_policy(rng: np.random.Generator) -> Expert:
    """Random but well-formed actions: a random listed tool with arguments drawn from ids and
    words seen so far (or made up), a random submission, or a plain-text question."""

    def act(messages: list[base.Message]) -> str:
        system = messages[0]["content"]
        names = [n for n in tools.SPECS if n + "(" in system]
        seen = " ".join(m["content"] for m in messages)
        pids = re.findall(r"P\d{4}", seen) or [f"P{rng.integers(3000):04d}"]
        oids = re.findall(r"O\d{4}", seen) or [f"O{rng.integers(3000):04d}"]
        words = re.findall(r"[a-z]{3,}", seen) or ["item"]

        def value(arg: str) -> Any:
            if arg in ("product_id", "variant_id"):
                return str(rng.choice(pids))
            if arg == "order_id":
                return str(rng.choice(oids))
            if arg in ("quantity", "top_k"):
                return int(rng.integers(1, 4))
            if arg == "filters":
                return {} if rng.random() < 0.5 else {"in_stock": True}
            if arg == "status":
                return str(rng.choice(catalog_lib.ORDER_STATUSES))
            if arg == "answer":
                return int(rng.integers(0, 100)) if rng.random() < 0.5 else str(rng.choice(words))
            if arg == "product_ids":
                return [str(p) for p in rng.choice(pids, size=min(3, len(pids)), replace=False)]
            return " ".join(rng.choice(words, size=2))

        u = rng.random()
        if u < 0.1:
            return "Can you tell me more?"
        submit = re.search(r"answer\.submit\(([^)]*)\)", system).group(1)
        if u < 0.35:
            args = {a: value(a) for a in ("product_ids", "order_id", "product_id", "status",
                                           "answer") if a in submit}  # fmt: skip
            return _call("answer.submit", **args)
        name = str(rng.choice(names))
        spec = tools.SPECS[name]
        args = {a: value(a) for a, (_, req) in spec.items() if req or rng.random() < 0.5}
        return _call(name, **args)

    return act


def run_episode(env, policy: Expert, seed: int, difficulty: int) -> tuple[list, base.Step]:
    """Plays one episode; returns the transcript (assistant turns included) and the last Step."""
    messages = env.reset(seed, difficulty)
    for _ in range(64):  # far above any T_max: the environment ends the episode first
        text = policy(messages)
        step = env.step(text)
        messages = messages + [{"role": "assistant", "content": text}] + step.observation
        if step.done:
            return messages, step
    return messages, env.finish("runaway")
