"""The synthetic shop: products, users with order histories, and the returns/shipping policy.

Everything comes from one seed, in-process (no downloads): about 2,200 products over 40 one-word
categories, 300 users with dated orders, and a policy of short sections with numeric and
categorical facts. Ids and titles are short because the policy model reads them through a
512-token byte-level BPE: "P0412", "O1023", "U017", "acme red cotton tee".
"""

from __future__ import annotations

import dataclasses
import datetime
import functools

import numpy as np

TODAY = datetime.date(2025, 6, 1)  # the shop's "now": order ages and return windows count from it

# Category groups: the policy is written per group, variants (sizes) exist for two of them.
GROUPS = {
    "apparel": ("tee", "shirt", "jeans", "jacket", "hoodie", "dress"),
    "footwear": ("sneakers", "boots", "sandals", "loafers"),
    "electronics": ("headphones", "speaker", "charger", "keyboard", "mouse", "monitor", "camera"),
    "home": ("lamp", "pillow", "blanket", "rug", "curtain"),
    "kitchen": ("mug", "kettle", "blender", "skillet", "knife", "bottle", "toaster"),
    "outdoor": ("tent", "backpack", "lantern", "hammock"),
    "beauty": ("shampoo", "lotion", "perfume"),
    "toys": ("puzzle", "robot", "kite", "drone"),
}
MATERIALS = {
    "apparel": ("cotton", "wool", "linen", "denim", "silk"),
    "footwear": ("leather", "suede", "canvas", "rubber", "mesh"),
    "electronics": ("plastic", "aluminum", "steel", "glass"),
    "home": ("cotton", "wool", "bamboo", "linen", "jute"),
    "kitchen": ("steel", "ceramic", "glass", "bamboo", "plastic"),
    "outdoor": ("nylon", "polyester", "canvas", "aluminum"),
    "beauty": ("herbal", "floral", "citrus", "vanilla"),
    "toys": ("plastic", "wood", "foam", "paper"),
}
BASE_PRICE = {"apparel": 40, "footwear": 80, "electronics": 120, "home": 45, "kitchen": 35,
              "outdoor": 90, "beauty": 20, "toys": 30}  # fmt: skip
SIZES = {"apparel": ("S", "M", "L", "XL"), "footwear": ("7", "8", "9", "10", "11")}
COLORS = ("red", "blue", "green", "black", "white", "gray", "navy", "pink", "yellow", "brown")
BRANDS = ("acme", "zenith", "nordic", "orbit", "pioneer", "lumen", "vertex", "harbor", "maple",
          "cobalt", "summit", "willow")  # fmt: skip
CATEGORY_GROUP = {c: g for g, cs in GROUPS.items() for c in cs}
CATEGORIES = tuple(CATEGORY_GROUP)
ORDER_STATUSES = ("processing", "shipped", "delivered", "returned", "cancelled")

PRODUCTS_PER_CATEGORY = 55
NUM_USERS = 300
MAX_SHIP_DAYS = 10


@dataclasses.dataclass(frozen=True)
class Variant:
    variant_id: str  # "P0412-M"
    label: str  # a size: "M", "9"
    stock: int


@dataclasses.dataclass(frozen=True)
class Product:
    product_id: str
    category: str
    brand: str
    color: str
    material: str
    price: int  # whole dollars
    rating: float  # 1.0 .. 5.0, one decimal
    ship_days: int
    stock: int
    variants: tuple[Variant, ...] = ()  # empty: one-size product

    @property
    def title(self) -> str:
        return f"{self.brand} {self.color} {self.material} {self.category}"

    @property
    def group(self) -> str:
        return CATEGORY_GROUP[self.category]


@dataclasses.dataclass(frozen=True)
class Order:
    order_id: str
    user_id: str
    items: tuple[tuple[str, int], ...]  # (product_id, quantity)
    ordered: datetime.date
    status: str  # one of ORDER_STATUSES
    delivered: datetime.date | None  # set for delivered/returned
    eta: datetime.date | None  # set for processing/shipped


@dataclasses.dataclass(frozen=True)
class PolicySection:
    section_id: str  # "S3"
    text: str  # one compact line, what policy.search shows
    facts: tuple[tuple[str, object], ...]  # the same facts, machine-readable


@dataclasses.dataclass(frozen=True)
class Catalog:
    seed: int
    products: tuple[Product, ...]
    orders: tuple[Order, ...]
    users: tuple[str, ...]
    policy: tuple[PolicySection, ...]

    @functools.cached_property
    def by_id(self) -> dict[str, Product]:
        return {p.product_id: p for p in self.products}

    @functools.cached_property
    def order_by_id(self) -> dict[str, Order]:
        return {o.order_id: o for o in self.orders}

    @functools.cached_property
    def orders_of(self) -> dict[str, tuple[Order, ...]]:
        """Each user's orders, newest first."""
        out: dict[str, list[Order]] = {u: [] for u in self.users}
        for o in self.orders:
            out[o.user_id].append(o)
        return {u: tuple(sorted(os, key=lambda o: (o.ordered, o.order_id), reverse=True))
                for u, os in out.items()}  # fmt: skip

    @functools.cached_property
    def facts(self) -> dict[str, object]:
        """All policy facts by key ("window_days.apparel", "free_ship_over", ...)."""
        return {k: v for s in self.policy for k, v in s.facts}

    def __hash__(self) -> int:  # the seed names the catalog; hashing 2k products would be slow
        return hash(self.seed)


def _products(rng: np.random.Generator) -> tuple[Product, ...]:
    products, seen = [], set()
    for category in CATEGORIES:
        group = CATEGORY_GROUP[category]
        made = 0
        while made < PRODUCTS_PER_CATEGORY:
            brand = str(rng.choice(BRANDS))
            color = str(rng.choice(COLORS))
            material = str(rng.choice(MATERIALS[group]))
            if (brand, color, material, category) in seen:  # titles are unique
                continue
            seen.add((brand, color, material, category))
            pid = f"P{len(products):04d}"
            stock = 0 if rng.random() < 0.08 else int(rng.integers(1, 50))
            variants = tuple(
                Variant(f"{pid}-{label}", label, int(rng.integers(0, 12)) if stock else 0)
                for label in SIZES.get(group, ())
            )
            products.append(
                Product(
                    product_id=pid,
                    category=category,
                    brand=brand,
                    color=color,
                    material=material,
                    price=max(3, int(round(BASE_PRICE[group] * rng.lognormal(0.0, 0.45)))),
                    rating=round(float(rng.uniform(2.5, 5.0)), 1),
                    ship_days=int(rng.integers(1, MAX_SHIP_DAYS + 1)),
                    stock=stock,
                    variants=variants,
                )
            )
            made += 1
    return tuple(products)


def _orders(rng: np.random.Generator, products: tuple[Product, ...]) -> tuple[Order, ...]:
    orders = []
    for u in range(NUM_USERS):
        for _ in range(int(rng.integers(3, 9))):
            oid = f"O{len(orders):04d}"
            picks = rng.choice(len(products), size=int(rng.integers(1, 4)), replace=False)
            items = tuple((products[i].product_id, int(rng.integers(1, 3))) for i in sorted(picks))
            age = int(rng.integers(1, 121))  # days since the order was placed
            ordered = TODAY - datetime.timedelta(days=age)
            ship = max(products[i].ship_days for i in picks)
            delivered = eta = None
            if rng.random() < 0.04:
                status = "cancelled"
            elif age <= 2:
                status, eta = "processing", ordered + datetime.timedelta(days=ship + 2)
            elif age <= ship + 1:
                status, eta = "shipped", ordered + datetime.timedelta(days=ship + 2)
            else:
                status = "returned" if rng.random() < 0.08 else "delivered"
                delivered = ordered + datetime.timedelta(days=ship + 1)
            orders.append(Order(oid, f"U{u:03d}", items, ordered, status, delivered, eta))
    return tuple(orders)


def _policy(rng: np.random.Generator) -> tuple[PolicySection, ...]:
    sections = []
    for group, cats in GROUPS.items():
        window = int(rng.choice([14, 30, 45, 60, 90]))
        fee = int(rng.choice([0, 5, 10, 15, 20]))
        opened = str(rng.choice(["yes", "no"]))
        warranty = int(rng.choice([3, 6, 12, 24]))
        text = (
            f"returns {group} ({' '.join(cats)}): window {window} days; restocking fee {fee}%; "
            f"opened items returnable: {opened}; warranty {warranty} months"
        )
        facts = (
            (f"window_days.{group}", window),
            (f"restock_pct.{group}", fee),
            (f"opened_ok.{group}", opened),
            (f"warranty_months.{group}", warranty),
        )
        sections.append((text, facts))
    free, cost = int(rng.choice([25, 35, 50, 75])), int(rng.choice([4, 5, 6, 8]))
    express, express_days = int(rng.choice([10, 12, 15])), int(rng.choice([1, 2]))
    sections.append((
        f"shipping: free standard shipping over ${free}, else ${cost}; "
        f"express ${express} ({express_days} days)",
        (("free_ship_over", free), ("ship_cost", cost), ("express_cost", express),
         ("express_days", express_days)),
    ))  # fmt: skip
    method, refund_days = str(rng.choice(["card", "store credit"])), int(rng.choice([3, 5, 7]))
    sections.append((
        f"refunds: issued to {method} within {refund_days} days after we receive the return",
        (("refund_method", method), ("refund_days", refund_days)),
    ))  # fmt: skip
    return tuple(PolicySection(f"S{i}", t, f) for i, (t, f) in enumerate(sections))


@functools.lru_cache(maxsize=4)
def make_catalog(seed: int = 0) -> Catalog:
    """The catalog for `seed` (built once per process: about 0.1 s)."""
    rng = np.random.default_rng([seed, 7919])
    products = _products(rng)
    orders = _orders(rng, products)
    users = tuple(f"U{u:03d}" for u in range(NUM_USERS))
    return Catalog(seed, products, orders, users, _policy(rng))


def values_of(attribute: str, category: str) -> tuple[str, ...]:
    """The values a discrete attribute (brand, color, material) takes in a category."""
    if attribute == "brand":
        return BRANDS
    if attribute == "color":
        return COLORS
    return MATERIALS[CATEGORY_GROUP[category]]


def product_line(p: Product, in_stock: bool) -> str:
    """The one-line form search results use: id, title, price, rating, shipping, stock."""
    return f"{p.product_id} {p.title} ${p.price} {p.rating}* {p.ship_days}d" + (
        "" if in_stock else " oos"
    )


def days_ago(date: datetime.date) -> int:
    return (TODAY - date).days
