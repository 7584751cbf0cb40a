"""Tokenizer: a typed wrapper over a local HF tokenizer folder, and the packaged tiny tokenizer.

Loading is offline only (`local_files_only=True`). Chat prompts are rendered by the folder's own
jinja template and encoded without added special tokens, so a template's BOS is never doubled.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

TINY_TOKENIZER_DIR = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "assets", "tiny_tokenizer"
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": ...}
Ids = Sequence[int] | np.ndarray  # one sequence of token ids (lists, numpy or jax arrays)


class _NoTorchBanner(logging.Filter):
    """Drops transformers' import-time "PyTorch was not found" advice and nothing else: JAX users
    load only tokenizers and configs, which need no torch."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("PyTorch was not found")


def _silence_torch_banner() -> None:
    """Installs _NoTorchBanner on transformers' root logger once (before its first import)."""
    logger = logging.getLogger("transformers")
    if not any(isinstance(f, _NoTorchBanner) for f in logger.filters):
        logger.addFilter(_NoTorchBanner())


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class Tokenizer:
    """A loaded tokenizer and the ids the sampler needs.

    `pad_id` is the tokenizer's pad token, or its first EOS id when it has none (Llama-3 ships no
    pad token); padding is always masked, so the choice only has to be a valid id. `eos_ids` is the
    tokenizer's EOS followed by the checkpoint's generation_config.json `eos_token_id`s,
    deduplicated: any of them ends a sample. `vocab_size` counts every id the tokenizer can emit,
    added tokens included; a checkpoint's embedding table may be larger (padded).
    """

    hf: Any = dataclasses.field(repr=False)  # transformers.PreTrainedTokenizerBase
    folder: str
    pad_id: int
    eos_ids: tuple[int, ...]
    vocab_size: int

    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        """Token ids of `text`; special-token strings in it map to their ids, no BOS is added."""
        return list(self.hf.encode(text, add_special_tokens=add_special_tokens))

    def decode(self, ids: Ids, *, skip_special_tokens: bool = False) -> str:
        """Text of `ids`, without cleanup of spaces, so decode(encode(text)) == text."""
        return self.hf.decode(
            np.asarray(ids).tolist(),
            skip_special_tokens=skip_special_tokens,
            clean_up_tokenization_spaces=False,
        )

    def batch_decode(
        self, ids_batch: Iterable[Ids], *, skip_special_tokens: bool = False
    ) -> list[str]:
        """`decode` over a batch (a list of sequences or a 2-D array)."""
        return [self.decode(ids, skip_special_tokens=skip_special_tokens) for ids in ids_batch]

    def render_chat(
        self,
        messages: str | Sequence[Message],
        *,
        system: str | None = None,
        add_generation_prompt: bool = True,
    ) -> str:
        """The chat template's text for `messages` (a bare string is one user turn)."""
        if not getattr(self.hf, "chat_template", None):
            raise ValueError(f"tokenizer in {self.folder!r} has no chat_template")
        turns = [{"role": "user", "content": messages}] if isinstance(messages, str) else messages
        turns = [dict(m) for m in turns]
        if system is not None:
            if turns and turns[0].get("role") == "system":
                raise ValueError("system= given but messages already start with a system turn")
            turns.insert(0, {"role": "system", "content": system})
        return self.hf.apply_chat_template(
            turns, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def apply_chat_template(
        self,
        messages: str | Sequence[Message],
        *,
        system: str | None = None,
        add_generation_prompt: bool = True,
    ) -> list[int]:
        """Token ids of the rendered chat: the prompt the policy samples from."""
        text = self.render_chat(
            messages, system=system, add_generation_prompt=add_generation_prompt
        )
        return self.encode(text)


def _generation_eos_ids(folder: str) -> list[int]:
    """`eos_token_id` (an int or a list) from the folder's generation_config.json, if any."""
    path = os.path.join(folder, "generation_config.json")
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        eos = json.load(f).get("eos_token_id")
    if eos is None:
        return []
    return [int(i) for i in (eos if isinstance(eos, list) else [eos])]


def from_hf(hf: Any, folder: str) -> Tokenizer:
    """Wraps an already loaded HF tokenizer; `folder` supplies generation_config.json eos ids."""
    candidates = [hf.eos_token_id] if hf.eos_token_id is not None else []
    eos_ids = tuple(dict.fromkeys(candidates + _generation_eos_ids(folder)))  # ordered dedup
    if not eos_ids:
        raise ValueError(f"tokenizer in {folder!r} has no EOS token and no generation_config eos")
    pad_id = hf.pad_token_id if hf.pad_token_id is not None else eos_ids[0]
    return Tokenizer(hf=hf, folder=folder, pad_id=pad_id, eos_ids=eos_ids, vocab_size=len(hf))


def load_tokenizer(folder: str | os.PathLike) -> Tokenizer:
    """Loads the tokenizer in a local checkpoint folder, offline."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"tokenizer folder {folder!r} does not exist")
    if not any(os.path.isfile(os.path.join(folder, name)) for name in TOKENIZER_FILES):
        raise FileNotFoundError(f"no tokenizer files ({', '.join(TOKENIZER_FILES)}) in {folder!r}")
    # Imported here: transformers takes seconds to import and only loading needs it.
    _silence_torch_banner()
    import transformers

    hf = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return from_hf(hf, folder)


@functools.cache
def load_tiny_tokenizer() -> Tokenizer:
    """The packaged 512-token tokenizer of the tiny presets (built by build_tiny_tokenizer.py)."""
    return load_tokenizer(TINY_TOKENIZER_DIR)


def copy_files(tok: Tokenizer, folder: str) -> None:
    """Copies the tokenizer's files into `folder` (an HF export), so the folder loads as it is."""
    os.makedirs(folder, exist_ok=True)
    for name in TOKENIZER_FILES + ("special_tokens_map.json", "merges.txt"):
        if os.path.exists(os.path.join(tok.folder, name)):
            shutil.copy(os.path.join(tok.folder, name), folder)
