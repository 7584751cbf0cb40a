"""Tests for the file loaders, last_boxed, dedupe and the TFDS path, on files the tests write."""

import json
import os
import tempfile

from absl.testing import absltest, parameterized

from rlvr_jax.data import files, types
from rlvr_jax.data import tfds as data_tfds

try:
    import pyarrow as pa
    import pyarrow.parquet as pq
except ImportError:
    pa = None
try:
    import tensorflow_datasets as tfds
except ImportError:
    tfds = None

GSM8K_ROWS = [
    {"question": "Tom has 3 apples. He buys 2 more. How many?", "answer": "3+2=<<3+2=5>>5\n#### 5"},
    {"question": "How many cents?", "answer": "100*12=<<100*12=1200>>1200\n#### 1,200"},
]
MATH_ROWS = [
    {"problem": "Find $x$.", "solution": "So $x = \\boxed{\\frac{1}{2}}$.", "level": "Level 2"},
    {"problem": "Sets?", "solution": "First \\boxed{1}, then \\boxed{\\{1, 2\\}}.", "type": "Alg"},
]


class FilesTest(parameterized.TestCase):
    def setUp(self):
        super().setUp()
        self.dir = self.enter_context(tempfile.TemporaryDirectory())

    def _write(self, name, text):
        path = os.path.join(self.dir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def _jsonl(self, name, rows):
        return self._write(name, "".join(json.dumps(r) + "\n" for r in rows))

    @parameterized.named_parameters(
        ("simple", "The answer is \\boxed{42}.", "42"),
        ("last_of_two", "\\boxed{1} or rather \\boxed{2}", "2"),
        ("nested", "\\boxed{\\frac{a}{b^{2}}}", "\\frac{a}{b^{2}}"),
        ("escaped_braces", "\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("fbox", "\\fbox{7} then", "7"),
        ("space_form", "$\\boxed 5$", "5"),
        ("empty", "in \\boxed{}", ""),
        ("unbalanced", "\\boxed{\\frac{1}{2}", None),
        ("none", "no box here", None),
        ("no_argument", "\\boxed", None),
    )
    def test_last_boxed(self, text, want):
        self.assertEqual(files.last_boxed(text), want)

    def test_gsm8k(self):
        path = self._jsonl("gsm8k/test.jsonl", GSM8K_ROWS)
        exs = files.load_gsm8k(path)
        self.assertEqual([e.answer for e in exs], ["5", "1200"])  # commas stripped
        self.assertEqual(exs[0].prompt, GSM8K_ROWS[0]["question"])
        self.assertEqual(exs[0].solution, GSM8K_ROWS[0]["answer"])
        self.assertEqual([e.uid for e in exs], ["test.jsonl:1", "test.jsonl:2"])
        self.assertEqual(exs[0].source, "gsm8k")
        self.assertEqual(files.load("gsm8k", path), exs)

    def test_math_jsonl_json_and_tree(self):
        want = ["\\frac{1}{2}", "\\{1, 2\\}"]
        exs = files.load_math(self._jsonl("math.jsonl", MATH_ROWS))
        self.assertEqual([e.answer for e in exs], want)
        self.assertEqual(exs[0].meta, {"level": "Level 2"})
        # A pretty-printed JSON list: uids and errors use the line where each object starts.
        path = self._write("math.json", json.dumps(MATH_ROWS, indent=2))
        exs = files.load_math(path)
        self.assertEqual([e.answer for e in exs], want)
        self.assertEqual([e.uid for e in exs], ["math.json:2", "math.json:7"])
        # MATH's own layout: one object per file in subject folders that reuse file names.
        tree = os.path.join(self.dir, "MATH")
        self._write("MATH/algebra/1.json", json.dumps(MATH_ROWS[0]))
        self._write("MATH/geometry/1.json", json.dumps(MATH_ROWS[1]))
        exs = files.load("math", tree)
        self.assertEqual([e.uid for e in exs], ["algebra/1.json:1", "geometry/1.json:1"])
        self.assertEqual([e.answer for e in exs], want)

    def test_math500_and_aime(self):
        rows = [
            {
                "problem": "p1",
                "solution": "\\boxed{3}",
                "answer": "3",
                "unique_id": "test/a/1.json",
            },
            {"Problem": "p2", "Answer": 204, "ID": "2024-I-1"},  # AIME mirror: capitals, int
        ]
        path = self._jsonl("aime.jsonl", rows)
        exs = files.load_answer_jsonl(path, source="aime")
        self.assertEqual([(e.prompt, e.answer) for e in exs], [("p1", "3"), ("p2", "204")])
        self.assertEqual(exs[0].meta, {"unique_id": "test/a/1.json"})
        self.assertEqual(exs[1].meta, {"id": "2024-I-1"})
        self.assertIsNone(exs[1].solution)
        # MATH-500 through load_math: the row's own answer wins over the boxed one.
        self.assertEqual(files.load_math(self._jsonl("m500.jsonl", rows[:1]))[0].answer, "3")

    @absltest.skipIf(pa is None, "pyarrow is not installed")
    def test_parquet(self):
        chat = [
            {"role": "system", "content": "Think step by step."},
            {"role": "user", "content": "What is 2+2?"},
        ]
        table = pa.Table.from_pylist(
            [
                {
                    "data_source": "openai/gsm8k",
                    "prompt": chat,
                    "reward_model": {"ground_truth": "4"},
                },
                {"data_source": "", "prompt": chat[1:], "reward_model": {"ground_truth": "72"}},
            ]
        )
        path = os.path.join(self.dir, "train.parquet")
        pq.write_table(table, path)
        exs = files.load_parquet(path)
        self.assertEqual(
            [(e.prompt, e.answer) for e in exs],
            [("What is 2+2?", "4"), ("What is 2+2?", "72")],
        )
        self.assertEqual(exs[0].source, "openai/gsm8k")
        self.assertEqual(exs[1].source, "parquet")
        self.assertEqual(exs[0].meta["messages"], chat)
        # A plain-string prompt, and a row with no ground truth.
        pq.write_table(
            pa.Table.from_pylist([{"prompt": "Q?", "reward_model": {"ground_truth": "1"}}]), path
        )
        self.assertEqual(files.load("parquet", path)[0].prompt, "Q?")
        bad = [
            {"prompt": "Q?", "reward_model": {"ground_truth": "1"}},
            {"prompt": "R?", "reward_model": {"style": "rule"}},
        ]
        pq.write_table(pa.Table.from_pylist(bad), path)
        with self.assertRaisesRegex(
            ValueError, r"train\.parquet, row 2: .*reward_model\.ground_truth"
        ):
            files.load_parquet(path)

    @parameterized.named_parameters(
        ("gsm8k_no_answer", files.load_gsm8k, [{"question": "q"}], "line 3: .*'answer'"),
        ("gsm8k_no_hashes", files.load_gsm8k, [{"question": "q", "answer": "5"}], "line 3: .*####"),
        ("gsm8k_empty", files.load_gsm8k, [{"question": "q", "answer": "#### "}], "line 3: .*####"),
        (
            "math_no_box",
            files.load_math,
            [{"problem": "p", "solution": "5"}],
            "line 3: .*'solution'",
        ),
        ("math_empty_box", files.load_math, [{"problem": "p", "solution": "\\boxed{ }"}], "line 3"),
        ("answer_missing", files.load_answer_jsonl, [{"problem": "p"}], "line 3: .*'answer'"),
        ("answer_null", files.load_answer_jsonl, [{"problem": "p", "answer": None}], "line 3"),
        ("problem_missing", files.load_answer_jsonl, [{"answer": "1"}], "line 3: .*'problem'"),
    )
    def test_row_errors_name_file_line_and_field(self, load, bad_rows, pattern):
        good = {"question": "q", "answer": "#### 1", "problem": "p", "solution": "\\boxed{1}"}
        # Line 2 is blank (skipped, but still counted), line 3 is the bad row.
        path = self._write("rows.jsonl", json.dumps(good) + "\n\n" + json.dumps(bad_rows[0]) + "\n")
        with self.assertRaisesRegex(ValueError, "rows.jsonl, " + pattern):
            load(path)

    def test_malformed_json(self):
        path = self._write("bad.jsonl", '{"question": "q", "answer": "#### 1"}\n{"question": \n')
        with self.assertRaisesRegex(ValueError, r"bad\.jsonl, line 2: malformed JSON"):
            files.load_gsm8k(path)
        path = self._write(
            "bad.json", '[\n  {"problem": "p", "solution": "\\\\boxed{1}"},\n  {"problem" "p"}\n]'
        )
        with self.assertRaisesRegex(ValueError, r"bad\.json, line 3: malformed JSON"):
            files.load_math(path)
        path = self._write("list.jsonl", "[1, 2]\n")
        with self.assertRaisesRegex(ValueError, r"list\.jsonl, line 1: expected a JSON object"):
            files.load_gsm8k(path)
        path = self._write("bad2.json", '[{"problem": "p", "solution": "\\\\boxed{1}"}] extra')
        with self.assertRaisesRegex(ValueError, r"bad2\.json, line 1: malformed JSON"):
            files.load_math(path)

    def test_missing_file(self):
        missing = os.path.join(self.dir, "nope.jsonl")
        for load in (
            files.load_gsm8k,
            files.load_math,
            files.load_answer_jsonl,
            files.load_parquet,
        ):
            with self.assertRaisesRegex(FileNotFoundError, "nope.jsonl"):
                load(missing)
        with self.assertRaisesRegex(ValueError, "kind"):
            files.load("csv", missing)

    def test_dedupe(self):
        exs = [
            types.Example(uid="a", prompt="What is 2 + 2?", answer="4"),
            types.Example(uid="b", prompt="  what is 2 +   2 ", answer="4"),
            types.Example(uid="c", prompt="What is 2 + 3?", answer="5"),
            types.Example(uid="d", prompt='"What is\n2 + 2?!"', answer="4"),
            types.Example(uid="e", prompt="What is 2 + 3?", answer="5"),
        ]
        self.assertEqual([e.uid for e in files.dedupe(exs)], ["a", "c"])
        self.assertEqual(files.normalize_prompt("  Hi,\tTHERE!! "), "hi, there")


@absltest.skipIf(
    tfds is None,
    "tensorflow-datasets is not installed (optional: pip install "
    "'tensorflow-datasets>=4.9.10,<4.10', no TensorFlow needed)",
)
class TfdsTest(absltest.TestCase):
    def test_load_tfds_gsm8k_offline(self):
        # The registered gsm8k builder with its download step replaced by local rows.
        class LocalGsm8k(tfds.text.gsm8k.Gsm8k, skip_registration=True):
            name = "gsm8k"

            def _split_generators(self, dl_manager):
                del dl_manager
                return {"test": self._generate_examples(src)}

        src = os.path.join(self.enter_context(tempfile.TemporaryDirectory()), "test.jsonl")
        with open(src, "w", encoding="utf-8") as f:
            f.write("".join(json.dumps(r) + "\n" for r in GSM8K_ROWS))
        data_dir = self.enter_context(tempfile.TemporaryDirectory())
        LocalGsm8k(data_dir=data_dir, file_format="array_record").download_and_prepare()
        exs = data_tfds.load_tfds_gsm8k(data_dir, "test")
        self.assertEqual(
            sorted((e.prompt, e.answer) for e in exs),
            sorted(
                (r["question"], r["answer"].split("#### ")[1].replace(",", "")) for r in GSM8K_ROWS
            ),
        )
        with self.assertRaises(FileNotFoundError):
            data_tfds.load_tfds_gsm8k(os.path.join(data_dir, "missing"), "test")


if __name__ == "__main__":
    absltest.main()
