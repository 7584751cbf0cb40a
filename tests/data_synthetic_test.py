"""Tests for the synthetic arithmetic task: determinism, disjoint splits, answers, token lengths."""

import json
import re

import numpy as np
from absl.testing import absltest, parameterized

from rlvr_jax.data import files, synthetic
from rlvr_jax.models import tokenizer

STEP_RE = re.compile(r"^Then (?:he|she) has (\d+) ([-+*]) (\d+) = (\d+) \w+\.$")


def _recompute(meta):
    """The running totals from meta's start, ops and operands, by plain Python arithmetic."""
    total, values = meta["start"], []
    for op, operand in zip(meta["ops"], meta["operands"], strict=True):
        total = {"+": total + operand, "-": total - operand, "*": total * operand}[op]
        values.append(total)
    return values


class SyntheticTest(parameterized.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tok = tokenizer.load_tiny_tokenizer()

    def test_deterministic_for_a_seed(self):
        cfg = synthetic.config_for_level(3)
        a = synthetic.make_split(cfg, "train", 50, seed=7)
        b = synthetic.make_split(cfg, "train", 50, seed=7)
        self.assertEqual(a, b)
        c = synthetic.make_split(cfg, "train", 50, seed=8)
        self.assertNotEqual([e.prompt for e in a], [e.prompt for e in c])

    def test_prefix_stable(self):
        # A larger n extends the split; it does not reshuffle it.
        cfg = synthetic.config_for_level(2)
        small = synthetic.make_split(cfg, "test", 20, seed=0)
        large = synthetic.make_split(cfg, "test", 60, seed=0)
        self.assertEqual(small, large[:20])

    @parameterized.parameters(1, 2, 3, 4)
    def test_splits_disjoint(self, level):
        cfg = synthetic.config_for_level(level)
        train = synthetic.make_split(cfg, "train", 2000, seed=0)
        test = synthetic.make_split(cfg, "test", 300, seed=0)
        # Even with the same seed, and with a test split drawn from another seed.
        test_other = synthetic.make_split(cfg, "test", 300, seed=1)
        train_prompts = {files.normalize_prompt(e.prompt) for e in train}
        for ex in test + test_other:
            self.assertNotIn(files.normalize_prompt(ex.prompt), train_prompts)
            self.assertTrue(synthetic.is_held_out(ex.prompt))
        self.assertFalse(any(synthetic.is_held_out(e.prompt) for e in train))
        # No duplicates within a split either.
        self.assertLen(train_prompts, len(train))
        self.assertLen({e.uid for e in train + test}, len(train) + len(test))

    @parameterized.parameters(1, 2, 3, 4)
    def test_answers_and_solutions(self, level):
        cfg = synthetic.config_for_level(level)
        for ex in synthetic.make_split(cfg, "train", 300, seed=3):
            meta = ex.meta
            self.assertEqual(meta["values"], _recompute(meta))
            self.assertEqual(ex.answer, str(meta["values"][-1]))
            self.assertBetween(meta["num_steps"], cfg.min_steps, cfg.max_steps)
            self.assertEqual(meta["num_steps"], len(meta["ops"]))
            self.assertContainsSubset(set(meta["ops"]), set(cfg.ops))
            self.assertTrue(all(1 <= v <= cfg.max_answer for v in [meta["start"], *meta["values"]]))
            # The worked solution: one line per step with the correct intermediate, then the box.
            lines = ex.solution.split("\n")
            self.assertLen(lines, meta["num_steps"] + 1)
            self.assertEqual(files.last_boxed(ex.solution), ex.answer)
            self.assertTrue(lines[-1].endswith(f"\\boxed{{{ex.answer}}}."))
            previous = meta["start"]
            for i, line in enumerate(lines[:-1]):
                lhs, op, operand, value = STEP_RE.match(line).groups()
                self.assertEqual(
                    (int(lhs), op, int(operand), int(value)),
                    (previous, meta["ops"][i], meta["operands"][i], meta["values"][i]),
                )
                previous = meta["values"][i]
            # Every operand is stated in the prompt, and meta survives JSON.
            self.assertIn(f"has {meta['start']} ", ex.prompt)
            self.assertEqual(json.loads(json.dumps(meta)), meta)
            self.assertEqual(ex.source, "synthetic")

    def test_level_one_is_one_small_step(self):
        for ex in synthetic.make_split(synthetic.config_for_level(1), "train", 200, seed=0):
            self.assertEqual(ex.meta["num_steps"], 1)
            self.assertLessEqual(int(ex.answer), 20)
            self.assertEqual(ex.meta["config"], "L1")
            self.assertStartsWith(ex.uid, "synthetic/L1/train/0/")

    def test_uids_unique_across_configs(self):
        custom = synthetic.SyntheticConfig(max_operand=5, max_answer=9)
        self.assertRegex(synthetic.config_tag(custom), r"^c[0-9a-f]{8}$")
        uids = [
            e.uid
            for cfg in (*synthetic.LEVELS.values(), custom)
            for e in synthetic.make_split(cfg, "train", 20, seed=0)
        ]
        self.assertLen(set(uids), len(uids))

    def test_multiplication_is_worded(self):
        cfg = synthetic.SyntheticConfig(min_steps=2, max_steps=2, ops=("*",), max_answer=100)
        for ex in synthetic.make_split(cfg, "train", 30, seed=0):
            self.assertEqual(ex.meta["ops"], ["*", "*"])
            self.assertRegex(ex.prompt, r"Then (he|she) has (twice|\d times) as many\.")

    def test_token_lengths(self):
        means = {}
        for level in sorted(synthetic.LEVELS):
            exs = synthetic.make_split(synthetic.config_for_level(level), "test", 300, seed=0)
            lengths = [len(self.tok.encode(e.prompt)) for e in exs]
            sol = [len(self.tok.encode(e.solution)) for e in exs]
            means[level] = float(np.mean(lengths))
            print(
                f"level {level}: prompt tokens mean {np.mean(lengths):.1f} "
                f"[{min(lengths)}, {max(lengths)}]; solution mean {np.mean(sol):.1f} max {max(sol)}"
            )
        self.assertBetween(means[1], 25, 45)
        lengths = [
            len(self.tok.encode(e.prompt))
            for e in synthetic.make_split(synthetic.config_for_level(1), "test", 300, seed=0)
        ]
        self.assertGreaterEqual(min(lengths), 20)
        self.assertLessEqual(max(lengths), 50)
        self.assertEqual(sorted(means.values()), list(means.values()))  # harder is longer

    @parameterized.named_parameters(
        ("steps", dict(min_steps=3, max_steps=2)),
        ("zero_steps", dict(min_steps=0)),
        ("op", dict(ops=("/",))),
        ("empty_ops", dict(ops=())),
        ("duplicate_ops", dict(ops=("+", "+"))),
        ("answer", dict(max_answer=1)),
    )
    def test_config_validation(self, kwargs):
        with self.assertRaises(ValueError):
            synthetic.SyntheticConfig(**kwargs)

    def test_bad_arguments(self):
        cfg = synthetic.config_for_level(1)
        with self.assertRaisesRegex(ValueError, "split"):
            synthetic.make_split(cfg, "valid", 3, seed=0)
        with self.assertRaisesRegex(ValueError, "level"):
            synthetic.config_for_level(5)
        # Every draw dead-ends: a second doubling would pass max_answer.
        dead = synthetic.SyntheticConfig(min_steps=2, max_steps=2, max_answer=3, ops=("*",))
        with self.assertRaisesRegex(ValueError, "only 0 distinct train prompts"):
            synthetic.make_split(dead, "train", 5, seed=0)

    @parameterized.parameters(1, 3)
    def test_noisy_solutions(self, level):
        examples = synthetic.make_split(synthetic.config_for_level(level), "train", 400, seed=0)
        noisy = synthetic.noisy_solutions(examples, slip_frac=0.5, unanswered_frac=0.3, seed=0)
        again = synthetic.noisy_solutions(examples, slip_frac=0.5, unanswered_frac=0.3, seed=0)
        self.assertEqual(again, noisy)  # deterministic
        n_slipped = n_unanswered = 0
        for ex, nz in zip(examples, noisy, strict=True):
            self.assertEqual((nz.uid, nz.prompt, nz.answer), (ex.uid, ex.prompt, ex.answer))
            old, new = ex.solution.split("\n"), nz.solution.split("\n")
            if nz.solution == ex.solution:
                continue
            if files.last_boxed(nz.solution) is None:  # unanswered: the steps, no final line
                n_unanswered += 1
                self.assertEqual(new, old[:-1])
                continue
            n_slipped += 1
            boxed = int(files.last_boxed(nz.solution))
            self.assertIn(abs(boxed - int(ex.answer)), (1, 2))
            self.assertEqual(old[:-2], new[:-2])  # every step but the last is untouched
            self.assertEqual(int(re.search(r"= (\d+) ", new[-2]).group(1)), boxed)
        self.assertBetween(n_unanswered, 90, 150)  # 30% of 400
        self.assertBetween(n_slipped, 110, 170)  # 50% of the other 280
        clean = synthetic.noisy_solutions(examples, slip_frac=0.0, unanswered_frac=0.0, seed=0)
        self.assertEqual(clean, examples)
        with self.assertRaisesRegex(ValueError, "slip fraction"):
            synthetic.noisy_solutions(examples, slip_frac=1.5, unanswered_frac=0.0, seed=0)


if __name__ == "__main__":
    absltest.main()
