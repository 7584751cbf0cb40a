"""Tests for PromptIterator: seeded epochs, per-process slices, and exact resume from state()."""

import json

from absl.testing import absltest, parameterized

from rlvr_jax.data import iterator, types


def _examples(n):
    return [types.Example(uid=f"u{i}", prompt=f"prompt {i}", answer=str(i)) for i in range(n)]


def _uids(batches):
    return [[e.uid for e in batch] for batch in batches]


def _take(it, k):
    return _uids(next(it) for _ in range(k))


class PromptIteratorTest(parameterized.TestCase):
    def test_deterministic_and_seeded(self):
        exs = _examples(20)
        a = _take(iterator.PromptIterator(exs, batch_size=4, seed=0), 12)
        b = _take(iterator.PromptIterator(exs, batch_size=4, seed=0), 12)
        c = _take(iterator.PromptIterator(exs, batch_size=4, seed=1), 12)
        self.assertEqual(a, b)
        self.assertNotEqual(a, c)

    def test_epochs_are_fresh_permutations(self):
        exs = _examples(12)
        it = iterator.PromptIterator(exs, batch_size=4, seed=0)
        epochs = [sum(_take(it, 3), []) for _ in range(3)]
        for epoch in epochs:
            self.assertCountEqual(epoch, [e.uid for e in exs])  # each example once per epoch
        self.assertNotEqual(epochs[0], epochs[1])
        self.assertNotEqual(epochs[0], [e.uid for e in exs])  # shuffled
        self.assertEqual(it.state()["epoch"], 3)
        self.assertEqual(it.state()["position"], 0)

    def test_batches_cross_epoch_boundaries(self):
        # 10 examples, batches of 4: the third batch is 2 from epoch 0 and 2 from epoch 1.
        exs = _examples(10)
        stream = sum(_take(iterator.PromptIterator(exs, batch_size=4, seed=0), 5), [])
        self.assertCountEqual(stream[:10], [e.uid for e in exs])
        self.assertCountEqual(stream[10:20], [e.uid for e in exs])
        # A batch larger than the dataset spans several epochs.
        big = iterator.PromptIterator(_examples(3), batch_size=8, seed=0)
        self.assertLen(next(big), 8)
        self.assertEqual(big.state()["epoch"], 2)
        self.assertEqual(big.state()["position"], 2)

    @parameterized.named_parameters(
        ("mid_epoch", 10, 4, 3, 7),
        ("at_epoch_boundary", 12, 4, 3, 5),
        ("before_first_batch", 10, 4, 0, 4),
        ("many_epochs", 7, 3, 11, 9),
    )
    def test_resume_is_exact(self, n, batch_size, before, after):
        exs = _examples(n)
        straight_it = iterator.PromptIterator(exs, batch_size=batch_size, seed=5)
        straight = _take(straight_it, before + after)
        first = iterator.PromptIterator(exs, batch_size=batch_size, seed=5)
        head = _take(first, before)
        state = json.loads(json.dumps(first.state()))  # survives a JSON round trip
        resumed = iterator.PromptIterator(exs, batch_size=batch_size, seed=5)
        _take(resumed, 2)  # an iterator that has already moved on is reset by restore
        resumed.restore(state)
        self.assertEqual(head + _take(resumed, after), straight)
        self.assertEqual(resumed.state(), straight_it.state())

    @parameterized.parameters(1, 2, 4)
    def test_process_slices_cover_the_global_batch(self, process_count):
        exs = _examples(24)
        global_it = iterator.PromptIterator(exs, batch_size=8, seed=3)
        procs = [
            iterator.PromptIterator(
                exs, batch_size=8, seed=3, process_index=p, process_count=process_count
            )
            for p in range(process_count)
        ]
        self.assertEqual(procs[0].local_batch_size, 8 // process_count)
        for _ in range(7):  # crosses two epoch boundaries
            want = [e.uid for e in next(global_it)]
            slices = [[e.uid for e in next(it)] for it in procs]
            self.assertEqual(sum(slices, []), want)  # contiguous slices, in process order
            for p in range(process_count):
                for q in range(p + 1, process_count):
                    self.assertEmpty(set(slices[p]) & set(slices[q]))
        self.assertEqual({json.dumps(it.state()) for it in procs}, {json.dumps(global_it.state())})

    def test_resume_with_other_process_count(self):
        # The cursor is global: 2 processes resume a single-process run's stream.
        exs = _examples(10)
        single = iterator.PromptIterator(exs, batch_size=4, seed=0)
        _take(single, 3)
        state = single.state()
        want = [e.uid for e in next(single)]
        halves = []
        for p in range(2):
            it = iterator.PromptIterator(
                exs, batch_size=4, seed=0, process_index=p, process_count=2
            )
            it.restore(state)
            halves += [e.uid for e in next(it)]
        self.assertEqual(halves, want)

    def test_restore_rejects_other_streams(self):
        exs = _examples(10)
        state = iterator.PromptIterator(exs, batch_size=4, seed=0).state()
        with self.assertRaisesRegex(ValueError, "seed"):
            iterator.PromptIterator(exs, batch_size=4, seed=1).restore(state)
        with self.assertRaisesRegex(ValueError, "num_examples"):
            iterator.PromptIterator(_examples(11), batch_size=4, seed=0).restore(state)
        changed = exs[:-1] + [types.Example(uid="u9", prompt="other", answer="9")]
        with self.assertRaisesRegex(ValueError, "fingerprint"):
            iterator.PromptIterator(changed, batch_size=4, seed=0).restore(state)
        with self.assertRaisesRegex(ValueError, "cursor"):
            iterator.PromptIterator(exs, batch_size=4, seed=0).restore(state | {"position": 10})

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "at least one"):
            iterator.PromptIterator([], batch_size=4, seed=0)
        with self.assertRaisesRegex(ValueError, "divisible"):
            iterator.PromptIterator(_examples(4), batch_size=3, seed=0, process_count=2)
        with self.assertRaisesRegex(ValueError, "process_index"):
            iterator.PromptIterator(
                _examples(4), batch_size=4, seed=0, process_index=2, process_count=2
            )

    def test_python_iteration(self):
        it = iterator.PromptIterator(_examples(5), batch_size=2, seed=0)
        first = [e.uid for e in next(iter(it))]
        self.assertLen(first, 2)
        self.assertIs(iter(it), it)


if __name__ == "__main__":
    absltest.main()
