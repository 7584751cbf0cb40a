"""The embedded Ecom tokenizer: a fresh build equals the checked-in files, it shares the tiny
tokenizer's special tokens and chat template, and it shortens an episode."""

import os

from rlvr_jax.envs.ecom import envs, experts
from rlvr_jax.envs.ecom import tokenizer as ecom_tokenizer
from rlvr_jax.models import build_tiny_tokenizer
from rlvr_jax.models import tokenizer as tokenizer_lib
from rlvr_jax.rollout import multi_turn
from rlvr_jax.tasks import ecom


def test_build_is_deterministic_and_matches_checked_in_files(tmp_path):
    written = build_tiny_tokenizer.write(
        str(tmp_path), ecom_tokenizer.corpus(), ecom_tokenizer.VOCAB_SIZE
    )
    assert sorted(os.listdir(ecom_tokenizer.ASSET_DIR)) == sorted(
        os.path.basename(p) for p in written
    )
    for path in written:
        name = os.path.basename(path)
        with open(path, "rb") as f, open(os.path.join(ecom_tokenizer.ASSET_DIR, name), "rb") as g:
            assert f.read() == g.read(), (
                f"{name} differs from a fresh build: rerun "
                "`python -m rlvr_jax.envs.ecom.tokenizer` only if intended"
            )


def test_same_specials_and_template_and_shorter_episodes():
    tok = tokenizer_lib.load_tokenizer(ecom_tokenizer.ASSET_DIR)
    tiny = tokenizer_lib.load_tiny_tokenizer()
    assert tok.vocab_size == ecom_tokenizer.VOCAB_SIZE
    assert tok.decode(tok.eos_ids) == tiny.decode(tiny.eos_ids) == "<|im_end|>"
    msgs = [{"role": "user", "content": "hi"}]
    assert tok.render_chat(msgs) == tiny.render_chat(msgs)
    messages, _ = experts.run_episode(envs.make_env("CART"), experts.expert_for("CART"), 9, 2)
    first, turns = ecom.split_turns(messages)
    text = tok.render_chat(messages, add_generation_prompt=False)
    assert tok.decode(tok.encode(text)) == text  # lossless
    n_ecom = sum(map(len, multi_turn.transcript_tokens(tok, first, turns)[:2]))
    n_tiny = sum(map(len, multi_turn.transcript_tokens(tiny, first, turns)[:2]))
    assert n_ecom * 2 < n_tiny, (n_ecom, n_tiny)
