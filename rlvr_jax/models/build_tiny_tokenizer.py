"""Builds the embedded tiny tokenizer (assets/tiny_tokenizer): a 512-token byte-level BPE, offline.

Run:    python -m rlvr_jax.models.build_tiny_tokenizer [--out DIR]
The corpus is synthetic and seeded (arithmetic word problems, worked solutions, the chat template's
words), so two runs write byte-identical files; tests/tokenizer_test.py checks the checked-in copy.
"""

from __future__ import annotations

import argparse
import json
import os
import random
from collections.abc import Callable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

VOCAB_SIZE = 512  # = config.TINY_VOCAB; the build asserts it
PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (PAD_TOKEN, IM_START, IM_END)  # appended last: ids 509, 510, 511 (Qwen-style)
SYSTEM_PROMPT = r"Solve the problem. Put the final answer in \boxed{}."
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "tiny_tokenizer")
SEED = 0
NUM_PROBLEMS = 3000

# Qwen2's split regex: letters keep one leading non-letter (" apples", "\boxed"), numbers split
# into single characters, newlines group. Digits() after it states the single-digit rule outright.
SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen-style ChatML without a default system turn (the tiny model needs no persona).
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)

NAMES = (
    "Tom", "Anna", "Sam", "Mia", "Ben", "Lily", "Max", "Emma", "Leo", "Zoe", "Jack", "Sara",
    "John", "Kate", "Noah", "Ella", "Liam", "Ava", "James", "Maria", "David", "Lucy", "Omar",
    "Nina",
)  # fmt: skip
ITEMS = (  # (singular, plural)
    ("apple", "apples"), ("orange", "oranges"), ("pencil", "pencils"), ("book", "books"),
    ("cookie", "cookies"), ("marble", "marbles"), ("sticker", "stickers"), ("card", "cards"),
    ("egg", "eggs"), ("candy", "candies"), ("toy", "toys"), ("coin", "coins"),
    ("flower", "flowers"), ("balloon", "balloons"), ("cupcake", "cupcakes"), ("shell", "shells"),
    ("banana", "bananas"), ("pen", "pens"), ("muffin", "muffins"), ("ticket", "tickets"),
)  # fmt: skip
CONTAINERS = (("box", "boxes"), ("bag", "bags"), ("pack", "packs"), ("basket", "baskets"))
GAIN = ("buys {n} more", "finds {n} more", "gets {n} more", "receives {n} more", "makes {n} more")
LOSS = ("gives away {n}", "eats {n}", "loses {n}", "sells {n}", "uses {n}", "gives {n} to a friend")
TIMES = ("in the morning", "in the afternoon", "on Monday", "on Tuesday", "on the weekend")
ACTIVITIES = (("reads", "pages"), ("walks", "miles"), ("saves", "dollars"), ("runs", "laps"))
CONTEXT = (  # GSM8K-flavoured sentences, so common English words get tokens too
    "It is a sunny day at the park.", "The store is open every day of the week.",
    "This is the first time they have done this.", "They are at school with their teacher.",
    "Her mother helps her count them.", "His family likes to bake on the weekend.",
    "The class is planning a party for the end of the year.",
    "Some of them are red and some are blue.",
    "A baker makes bread for the people who live in the town.",
    "They want to know how much it costs.",
)  # fmt: skip
QUESTIONS = (
    "How many {items} does {pro} have now?",
    "How many {items} does {name} have left?",
    "How many {items} are left?",
    "What is the total number of {items} {pro} has now?",
)
FINAL_LINES = (
    "The answer is \\boxed{{{a}}}.",
    "So the final answer is \\boxed{{{a}}}.",
    "Therefore, the answer is \\boxed{{{a}}}.",
    "#### {a}",
    "Answer: {a}",
    "The answer is {a}.",
)
MATH_SNIPPETS = (
    "\\frac{{{a}}}{{{b}}}", "{a} \\times {b}", "{a} \\cdot {b}", "({a} + {b}) \\div {b}",
    "$x = {a}$", "{a} * {b} = {c}", "{a} / {b}", "{a} - {b} < {c}", "{a} % of {b}", "${a}.{b}",
)  # fmt: skip


def _gain_loss(rng: random.Random, name: str, pro: str) -> tuple[list[str], list[str], int]:
    """Starts with some items, then gains and loses a few times."""
    items = rng.choice(ITEMS)[1]
    total = rng.randint(2, 60)
    story, steps, actions = [f"{name} has {total} {items}."], [], []
    for _ in range(rng.randint(1, 3)):
        if rng.random() < 0.5:
            n = rng.randint(1, 40)
            actions.append(rng.choice(GAIN).format(n=n))
            steps.append(f"After that, {pro} has {total} + {n} = {total + n} {items}.")
            total += n
        else:
            n = rng.randint(1, total) if total > 0 else 0
            actions.append(rng.choice(LOSS).format(n=n))
            steps.append(f"Then {pro} has {total} - {n} = {total - n} {items}.")
            total -= n
    joiner = rng.choice((" and ", " and ", ", then ", f". Then {pro} "))
    story.append(f"{pro.capitalize()} " + joiner.join(actions) + ".")
    story.append(rng.choice(QUESTIONS).format(items=items, pro=pro, name=name))
    return story, steps, total


def _groups(rng: random.Random, name: str, pro: str) -> tuple[list[str], list[str], int]:
    """Containers of items, some given away."""
    items = rng.choice(ITEMS)[1]
    box, boxes = rng.choice(CONTAINERS)
    count, per = rng.randint(2, 9), rng.randint(2, 12)
    gone = rng.randint(1, count * per)
    story = [
        f"{name} buys {count} {boxes} of {items} {rng.choice(TIMES)}.",
        f"Each {box} has {per} {items}.",
        f"{pro.capitalize()} {rng.choice(LOSS).format(n=gone)}.",
        rng.choice(QUESTIONS).format(items=items, pro=pro, name=name),
    ]
    steps = [
        f"{name} buys {count} x {per} = {count * per} {items}.",
        f"Then {pro} has {count * per} - {gone} = {count * per - gone} {items}.",
    ]
    return story, steps, count * per - gone


def _money(rng: random.Random, name: str, pro: str) -> tuple[list[str], list[str], int]:
    """Buying at a unit price and getting change."""
    item, items = rng.choice(ITEMS)
    count, price = rng.randint(2, 9), rng.randint(1, 9)
    cost = count * price
    bill = rng.choice((20, 50, 100))
    story = [
        f"{name} buys {count} {items} {rng.choice(TIMES)}.",
        f"Each {item} costs ${price}.",
        f"{pro.capitalize()} has only a ${bill} bill and pays with it.",
        f"How much change does {pro} get, in dollars?",
    ]
    steps = [
        f"The {items} cost {count} * {price} = ${cost}.",
        f"The change is {bill} - {cost} = ${bill - cost}.",
    ]
    return story, steps, bill - cost


def _sharing(rng: random.Random, name: str, pro: str) -> tuple[list[str], list[str], int]:
    """Equal sharing: division with no remainder."""
    items = rng.choice(ITEMS)[1]
    each, friends = rng.randint(2, 12), rng.randint(2, 8)
    story = [
        f"{name} has {each * friends} {items}.",
        f"{pro.capitalize()} shares them equally among {friends} friends.",
        f"How many {items} does each friend get?",
    ]
    steps = [f"Each friend gets {each * friends} / {friends} = {each} {items}."]
    return story, steps, each


def _rate(rng: random.Random, name: str, pro: str) -> tuple[list[str], list[str], int]:
    """A daily rate over some days, plus extra, and a comparison with a second person."""
    verb, unit = rng.choice(ACTIVITIES)
    rate, days, extra = rng.randint(2, 30), rng.randint(2, 7), rng.randint(1, 20)
    other = rng.choice(NAMES)
    total = rate * days + extra
    story = [
        f"{name} {verb} {rate} {unit} every day for {days} days.",
        f"Then {pro} {verb} {extra} more {unit}.",
        f"{other} {verb} twice as many {unit} as {name}.",
        f"How many {unit} does {other} have in total?",
    ]
    steps = [
        f"{name} {verb} {rate} * {days} + {extra} = {total} {unit}.",
        f"{other} {verb} 2 * {total} = {2 * total} {unit}.",
    ]
    return story, steps, 2 * total


FAMILIES = (_gain_loss, _gain_loss, _groups, _money, _sharing, _rate)


def _problem(rng: random.Random) -> str:
    """One word problem with a worked solution, as a user/assistant exchange."""
    name, pro = rng.choice(NAMES), rng.choice(("he", "she"))
    story, steps, answer = rng.choice(FAMILIES)(rng, name, pro)
    if rng.random() < 0.3:
        story.insert(rng.randint(0, len(story) - 1), rng.choice(CONTEXT))
    final = rng.choice(FINAL_LINES).format(a=answer)
    solution = "\n".join(steps) if rng.random() < 0.5 else " ".join(steps)
    return f"user\n{' '.join(story)}\nassistant\n{solution}\n{final}\n"


def _corpus() -> list[str]:
    """The seeded training corpus: problems under the system prompt, plus math notation."""
    rng = random.Random(SEED)
    texts = [f"system\n{SYSTEM_PROMPT}\n" + _problem(rng) for _ in range(NUM_PROBLEMS)]
    for _ in range(NUM_PROBLEMS // 10):
        a, b = rng.randint(1, 999), rng.randint(1, 99)
        texts.append(rng.choice(MATH_SNIPPETS).format(a=a, b=b, c=a * b))
    return texts


def build_tokenizer(corpus: list[str] | None = None, vocab_size: int = VOCAB_SIZE) -> Tokenizer:
    """Trains the byte-level BPE on `corpus` (default: the synthetic math corpus); special tokens
    take the last three ids. Other embedded tokenizers (rlvr_jax/envs/ecom/tokenizer.py) reuse it
    with their own corpus and size, and the same chat template."""
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    # No normalizer: any string, NFC or not, must decode back to itself.
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIAL_TOKENS),
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(_corpus() if corpus is None else corpus, trainer=trainer)
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    if tok.get_vocab_size() != vocab_size:
        raise RuntimeError(f"trained vocab has {tok.get_vocab_size()} tokens, want {vocab_size}")
    return tok


def tokenizer_config() -> dict[str, object]:
    """tokenizer_config.json: loads verbatim from tokenizer.json through PreTrainedTokenizerFast."""
    # Not Qwen2Tokenizer: transformers 5 rebuilds that class's pipeline (NFC, no Digits step).
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "additional_special_tokens": [IM_START, IM_END],
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,  # cleanup would break the decode round trip
        "eos_token": IM_END,
        "errors": "replace",
        "model_max_length": 32768,
        "pad_token": PAD_TOKEN,
        "split_special_tokens": False,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": None,
    }


def write(out: str, corpus: list[str] | None = None, vocab_size: int = VOCAB_SIZE) -> list[str]:
    """Builds the tokenizer and writes its files into `out`; returns their paths."""
    os.makedirs(out, exist_ok=True)
    tok_path = os.path.join(out, "tokenizer.json")
    cfg_path = os.path.join(out, "tokenizer_config.json")
    build_tokenizer(corpus, vocab_size).save(tok_path, pretty=True)
    with open(cfg_path, "w", encoding="utf-8", newline="\n") as f:
        f.write(json.dumps(tokenizer_config(), indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    return [tok_path, cfg_path]


def main_for(
    doc: str,
    default_out: str,
    corpus: Callable[[], list[str]] | None = None,
    vocab_size: int = VOCAB_SIZE,
) -> None:
    """A tokenizer builder's command line: `--out DIR` (default `default_out`), then `write`.
    `corpus` is called after the arguments parse (`--help` builds nothing)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--out", default=default_out, help="output folder (default: the asset)")
    out = parser.parse_args().out
    for path in write(out, corpus() if corpus else None, vocab_size):
        print(f"wrote {path} ({os.path.getsize(path)} bytes)")


def main() -> None:
    main_for(__doc__, DEFAULT_OUT)


if __name__ == "__main__":
    main()
