"""Confusable names for the LongTraceRL knowledge graph (longtrace_kg).

Names are built from a small pool of syllables, so many share parts; some are one edit away from an
earlier name on purpose ("Doravel" and "Doravell"; "Ada Kelvan" and "Ada Kelvann"); people share
first names; universities, companies and books borrow place names. Names are ASCII letters and
spaces and unique case-insensitively, so a start entity named in a question is never ambiguous.
"""

from __future__ import annotations

import random

SYLLABLES = (
    "do", "ra", "vel", "kel", "van", "tor", "mar", "os", "ka", "lin", "bre", "sa", "quen", "mo",
    "ri", "tal", "ne", "zor", "ash", "fen", "gal", "hu", "ir", "jo", "lu", "mi", "nor", "pe",
    "sil", "ur", "ve", "wy",
)  # fmt: skip
FIRST_NAMES = (
    "Ada", "Bram", "Cora", "Dain", "Edda", "Finn", "Gwen", "Hale", "Ines", "Joss", "Kira", "Lars",
    "Mira", "Nils", "Orla", "Pim", "Rhea", "Sven", "Tova", "Ulf", "Vera", "Wim", "Yara", "Zeno",
    "Anouk", "Berit", "Casimir", "Dagny", "Elof", "Freya", "Gorm", "Hedda", "Ivo", "Juna",
)  # fmt: skip
COMPANY_SUFFIXES = ("Works", "Trading", "Holdings", "Press", "Motors", "Labs", "Foods", "Mills")
BOOK_NOUNS = ("Garden", "Tower", "Winter", "Crown", "Letters", "Shadow", "Harbour", "Voyage")
# Words that many names share by construction; they do not make two names confusable.
COMMON_WORDS = frozenset(
    w.lower() for w in ("the", "of", "University", "Institute", *COMPANY_SUFFIXES, *BOOK_NOUNS)
)


def _word(rng: random.Random, low: int = 2, high: int = 3) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(low, high))).capitalize()


def _one_edit(rng: random.Random, word: str) -> str:
    """`word` one edit away: last letter doubled, a vowel appended, or one vowel changed."""
    kind = rng.randrange(3)
    if kind == 0:
        return word + word[-1]
    if kind == 1:
        return word + rng.choice("ae")
    vowels = [i for i, c in enumerate(word) if c in "aeiou" and i > 0]
    if not vowels:
        return word + "e"
    i = rng.choice(vowels)
    return word[:i] + rng.choice([v for v in "aeiou" if v != word[i]]) + word[i + 1 :]


class Namer:
    """Draws globally unique names (case-insensitive) and records one-edit twins."""

    def __init__(self, rng: random.Random):
        self.rng, self.taken = rng, set()
        self.words: list[str] = []  # the single-word (place) names so far
        self.people: list[str] = []
        self.twin_of: dict[str, str] = {}  # a name -> the existing name it is one edit from

    def take(self, name: str) -> bool:
        if name.lower() in self.taken:
            return False
        self.taken.add(name.lower())
        return True

    def draw(self, kind: str) -> str:
        rng = self.rng
        for _ in range(1000):
            twin = None
            borrowed = rng.choice(self.words) if self.words else _word(rng)
            if kind in ("country", "city", "river"):
                if self.words and rng.random() < 0.15:
                    twin = rng.choice(self.words)
                    name = _one_edit(rng, twin)
                else:
                    name = _word(rng, 2, 2 if kind == "country" else 3)
            elif kind == "person":  # twins keep the first name, their surnames one edit apart
                if self.people and rng.random() < 0.15:
                    twin = rng.choice(self.people)
                    first, last = twin.split()
                    name = f"{first} {_one_edit(rng, last)}"
                else:
                    name = f"{rng.choice(FIRST_NAMES)} {_word(rng)}"
            elif kind == "university":
                form = rng.randrange(3)
                name = (f"University of {borrowed}", f"{borrowed} University",
                        f"{_word(rng)} Institute")[form]  # fmt: skip
            elif kind == "company":
                base = borrowed if rng.random() < 0.5 else _word(rng)
                name = f"{base} {rng.choice(COMPANY_SUFFIXES)}"
            else:  # book
                noun = rng.choice(BOOK_NOUNS)
                form = rng.randrange(3)
                name = (f"{_word(rng)} {_word(rng, 1, 2)}", f"The {noun} of {borrowed}",
                        f"The {_word(rng)} {noun}")[form]  # fmt: skip
            if self.take(name):
                if kind in ("country", "city", "river"):
                    self.words.append(name)
                elif kind == "person":
                    self.people.append(name)
                if twin is not None:
                    self.twin_of[name] = twin
                return name
        raise RuntimeError(f"could not draw a unique {kind} name")


def name_words(name: str) -> list[str]:
    """The distinctive lowercased words of a name (shared suffixes and "the"/"of" left out)."""
    return [w for w in name.lower().split() if w not in COMMON_WORDS]
