"""Tests for the tokenizer wrapper, the checked-in tiny tokenizer and its deterministic build."""

import io
import json
import os
import shutil
import tempfile
from unittest import mock

import numpy as np
from absl.testing import absltest, parameterized

from rlvr_jax.models import build_tiny_tokenizer, config, tokenizer

SYSTEM = r"Solve the problem. Put the final answer in \boxed{}."
PROBLEM = (
    "Anna has 23 stickers. She buys 4 packs with 6 stickers in each and gives 9 to a friend. "
    "Then she finds 12 more and loses 5. How many stickers does she have now? "
    "Put the final answer in \\boxed{}."
)


class TinyTokenizerTest(parameterized.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tok = tokenizer.load_tiny_tokenizer()

    @parameterized.named_parameters(
        ("ascii", "Tom has 12 apples. He buys 7 more and gives away 5."),
        ("latex", r"So $\frac{3}{4} \times 8 = 6$ and the answer is \boxed{6}."),
        ("gsm8k", "48/2 = <<48/2=24>>24 clips\n#### 72"),
        ("newlines_tabs", "a\n\nb\r\n\tc   d  \n"),
        ("unicode", "Zoë paid €3,50 — naïve café 日本語 🙂"),
        ("not_nfc", "e\u0301 vs \u00e9"),  # no normalizer: combining accents survive
        ("leading_space", " 007 "),
        ("special_strings", "<|im_start|>user\nhi<|im_end|>\n"),
        ("empty", ""),
    )
    def test_round_trip(self, text):
        self.assertEqual(self.tok.decode(self.tok.encode(text)), text)

    def test_digits_are_single_tokens(self):
        for d in "0123456789":
            self.assertLen(self.tok.encode(d), 1)
        ids = self.tok.encode("x 2024")
        self.assertEqual([self.tok.decode([i]) for i in ids[-4:]], ["2", "0", "2", "4"])

    def test_vocab_and_special_ids(self):
        self.assertEqual(self.tok.vocab_size, config.TINY_VOCAB)
        self.assertEqual(self.tok.vocab_size, 512)
        specials = [
            self.tok.hf.convert_tokens_to_ids(t) for t in build_tiny_tokenizer.SPECIAL_TOKENS
        ]
        self.assertEqual(specials, [509, 510, 511])  # <|endoftext|>, <|im_start|>, <|im_end|>
        self.assertEqual(self.tok.encode("<|im_end|>"), [511])
        self.assertIsNone(self.tok.hf.bos_token)

    def test_eos_and_pad(self):
        self.assertEqual(self.tok.eos_ids, (511,))
        self.assertEqual(self.tok.pad_id, 509)

    def test_chat_template(self):
        want = (
            f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
            "<|im_start|>user\nTom has 12 apples.<|im_end|>\n"
            "<|im_start|>assistant\n"
        )
        self.assertEqual(self.tok.render_chat("Tom has 12 apples.", system=SYSTEM), want)
        ids = self.tok.apply_chat_template("Tom has 12 apples.", system=SYSTEM)
        self.assertEqual(ids, self.tok.encode(want))
        self.assertEqual(ids[0], 510)
        self.assertEqual(self.tok.decode(ids), want)
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "hi"}]
        no_gen = self.tok.render_chat(messages, add_generation_prompt=False)
        self.assertTrue(no_gen.endswith("<|im_start|>user\nhi<|im_end|>\n"))
        self.assertEqual(self.tok.decode(ids, skip_special_tokens=True).count("<|"), 0)
        with self.assertRaisesRegex(ValueError, "system"):
            self.tok.render_chat(messages, system=SYSTEM)

    def test_batch_decode(self):
        texts = ["1 + 1 = 2", "#### 3"]
        self.assertEqual(self.tok.batch_decode([self.tok.encode(t) for t in texts]), texts)
        ids_BxT = np.array([self.tok.encode("12 + 3"), self.tok.encode("45 - 6")])
        self.assertEqual(self.tok.batch_decode(ids_BxT), ["12 + 3", "45 - 6"])

    def test_word_problem_is_short(self):
        n_words, ids = len(PROBLEM.split()), self.tok.encode(PROBLEM)
        print(f"\n{n_words}-word problem -> {len(ids)} tokens")
        self.assertBetween(n_words, 35, 45)
        self.assertLess(len(ids), 80)

    def test_build_is_deterministic_and_matches_checked_in_files(self):
        with tempfile.TemporaryDirectory() as tmp:
            written = build_tiny_tokenizer.write(tmp)
            self.assertCountEqual(
                os.listdir(tokenizer.TINY_TOKENIZER_DIR), [os.path.basename(p) for p in written]
            )
            for path in written:
                with open(path, "rb") as f:
                    fresh = f.read()
                name = os.path.basename(path)
                with open(os.path.join(tokenizer.TINY_TOKENIZER_DIR, name), "rb") as f:
                    self.assertEqual(
                        fresh,
                        f.read(),
                        f"{name} differs from a fresh build: rerun "
                        "`python -m rlvr_jax.models.build_tiny_tokenizer` only if intended",
                    )


class LoadTokenizerTest(absltest.TestCase):
    def _tmp(self) -> str:
        # tempfile, not create_tempdir: absl flags are unparsed under pytest.
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        return tmp.name

    def _copy_tiny(self) -> str:
        folder = os.path.join(self._tmp(), "ckpt")
        shutil.copytree(tokenizer.TINY_TOKENIZER_DIR, folder)
        return folder

    def test_builder_command_line_writes_the_asset_with_a_given_corpus(self):
        """`main_for`: `--out` overrides the default folder; the corpus and vocabulary reach
        `write`."""
        rng = np.random.default_rng(0)
        words = ["".join(rng.choice(list("abcdefghijklmnop"), 6)) for _ in range(3000)]
        corpus = [" ".join(words[i : i + 30]) + " Doravel\n" for i in range(0, 3000, 30)]
        with tempfile.TemporaryDirectory() as tmp:
            argv = ["build", "--out", tmp]
            with mock.patch("sys.argv", argv), mock.patch("sys.stdout", io.StringIO()) as out:
                build_tiny_tokenizer.main_for(
                    "Doc line.\nmore", "/nonexistent", lambda: corpus, 300
                )
            self.assertIn(f"wrote {os.path.join(tmp, 'tokenizer.json')}", out.getvalue())
            tok = tokenizer.load_tokenizer(tmp)
            self.assertEqual(tok.vocab_size, 300)  # the vocabulary size reached the build
            # The corpus reached it too: a word in every line of it is one token (the default
            # math corpus never saw it).
            self.assertLen(tok.encode(" Doravel"), 1)
            self.assertGreater(len(tokenizer.load_tiny_tokenizer().encode(" Doravel")), 1)

    def test_generation_config_eos_ids_are_appended_and_deduplicated(self):
        folder = self._copy_tiny()
        with open(os.path.join(folder, "generation_config.json"), "w") as f:
            json.dump({"eos_token_id": [511, 509]}, f)
        self.assertEqual(tokenizer.load_tokenizer(folder).eos_ids, (511, 509))

    def test_pad_falls_back_to_eos(self):
        folder = self._copy_tiny()
        path = os.path.join(folder, "tokenizer_config.json")
        with open(path) as f:
            cfg = json.load(f)
        del cfg["pad_token"]
        with open(path, "w") as f:
            json.dump(cfg, f)
        tok = tokenizer.load_tokenizer(folder)
        self.assertIsNone(tok.hf.pad_token_id)
        self.assertEqual(tok.pad_id, 511)

    def test_missing_folder(self):
        missing = os.path.join(self._tmp(), "nope")
        with self.assertRaisesRegex(FileNotFoundError, "does not exist.*nope|nope.*does not exist"):
            tokenizer.load_tokenizer(missing)

    def test_folder_without_tokenizer_files(self):
        empty = self._tmp()
        with self.assertRaisesRegex(FileNotFoundError, "no tokenizer files"):
            tokenizer.load_tokenizer(empty)


if __name__ == "__main__":
    absltest.main()
