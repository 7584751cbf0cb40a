"""The template user simulator: persona, slot omission, typos, an intent switch, rage-quit.

Seeded and rule-based. The user opens with their goal as slots (short phrases); each omittable
slot is left out with probability p_missing, and then the opening says so ("I have more needs.").
A clarifying question (an assistant turn of plain text, no tool call) makes the user reveal every
omitted slot: a "clarify" act, whose turn is not charged to efficiency. Asking when nothing is left
to reveal is unhelpful; after PATIENCE such turns the user quits. With probability p_switch the
user changes one visible slot after the agent's first tool turn ("switch"). Typos (adjacent-letter
swaps, rate p_noise) hit the slot values only: never ids, numbers or the template words.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

PATIENCE = 2  # unhelpful free-text turns the user tolerates before quitting
MORE_HINT = "I have more needs."
ACTS = ("inform", "clarify", "switch", "quit")

PERSONA_KEYS = ("price", "rating", "speed")
PRICE_CAP, SHIP_CAP = 500.0, 10.0  # the utility's normalisers (whole-catalog bounds)


def sample_persona(rng: np.random.Generator) -> dict[str, float]:
    """Dirichlet(1, 1, 1) preference weights over price/rating/speed, floored at 0.1 and rounded
    to tenths (summing to 1) so the user can state them exactly ("price 50%")."""
    w = 0.1 + 0.7 * rng.dirichlet(np.ones(len(PERSONA_KEYS)))
    tenths = np.floor(w * 10).astype(int)
    for i in np.argsort(-(w * 10 - tenths), kind="stable")[: 10 - int(tenths.sum())]:
        tenths[i] += 1  # largest remainder
    return {k: int(t) / 10 for k, t in zip(PERSONA_KEYS, tenths, strict=True)}


def persona_text(weights: dict[str, float]) -> str:
    return "priorities: " + ", ".join(f"{k} {round(v * 100)}%" for k, v in weights.items())


def utility(weights: dict[str, float], price: float, rating: float, ship_days: float) -> float:
    """The persona's utility of a product, in [0, 1]: cheap, well rated and fast is best."""
    return (
        weights["price"] * (1 - min(price, PRICE_CAP) / PRICE_CAP)
        + weights["rating"] * rating / 5
        + weights["speed"] * (1 - min(ship_days, SHIP_CAP) / SHIP_CAP)
    )


_WORD = re.compile(r"[A-Za-z]{4,}")


def add_typos(text: str, p_noise: float, rng: np.random.Generator) -> str:
    """Swaps two adjacent interior letters of each word of 4+ letters with probability p_noise
    (first and last letters stay, so the word keeps its shape)."""
    if p_noise <= 0:
        return text

    def swap(m: re.Match) -> str:
        w = m.group(0)
        if rng.random() >= p_noise:
            return w
        i = int(rng.integers(1, len(w) - 2))
        return w[:i] + w[i + 1] + w[i] + w[i + 2 :]

    return _WORD.sub(swap, text)


@dataclasses.dataclass(frozen=True)
class Slot:
    key: str  # what it constrains: "color", "line1", "item"
    template: str  # how the user says it, around the value: "color {}"
    value: str  # the part typos may hit: "red"
    omittable: bool = True

    def render(self, p_noise: float, rng: np.random.Generator) -> str:
        return self.template.format(add_typos(self.value, p_noise, rng))


@dataclasses.dataclass(frozen=True)
class UserAct:
    act: str  # one of ACTS
    text: str


class UserSim:
    """One episode's user: the goal's slots, and the slot (same key, new value) it switches to."""

    def __init__(
        self,
        rng: np.random.Generator,
        intro: str,
        slots: list[Slot],
        *,
        outro: str = "",
        p_missing: float,
        p_noise: float,
        switch: Slot | None = None,
    ):
        self._rng, self._p_noise = rng, p_noise
        self.intro, self.outro = intro, outro
        self.keys = [s.key for s in slots]
        self.texts = [s.render(p_noise, rng) for s in slots]
        self.hidden = [s.omittable and rng.random() < p_missing for s in slots]
        self._switch = switch
        self.unhelpful = 0
        self.switched = False

    def opening(self) -> UserAct:
        shown = [t for t, h in zip(self.texts, self.hidden, strict=True) if not h]
        text = self.intro + (": " + "; ".join(shown) if shown else "") + "."
        if self.outro:
            text += " " + self.outro
        if any(self.hidden):
            text += " " + MORE_HINT
        return UserAct("inform", text)

    def reply(self, agent_text: str) -> UserAct:
        """The answer to a plain-text assistant turn."""
        del agent_text  # the template user answers any question the same way
        hidden = [t for t, h in zip(self.texts, self.hidden, strict=True) if h]
        if hidden:
            self.hidden = [False] * len(self.texts)
            return UserAct("clarify", "Also: " + "; ".join(hidden) + ".")
        self.unhelpful += 1
        if self.unhelpful >= PATIENCE:
            return UserAct("quit", "Forget it, bye.")
        return UserAct("inform", "That's all I need.")

    def maybe_switch(self) -> UserAct | None:
        """The intent switch, delivered once (after the agent's first tool turn)."""
        if self._switch is None or self.switched:
            return None
        self.switched = True
        text = self._switch.render(self._p_noise, self._rng)
        i = self.keys.index(self._switch.key)
        self.texts[i], self.hidden[i] = text, False  # saying it reveals it
        return UserAct("switch", f"Actually, change: {text}.")
