"""The embedded code tasks: 6 stdin/stdout and 8 function-call tasks, each with a reference
solution and known-wrong ones (a wrong answer, a wrong type, an early exit, an always-equal object),
for tests and smoke runs. Host-side only: nothing here imports JAX.
"""

from __future__ import annotations

from rlvr_jax.rewards.code_types import CallTest, CodeTask, StdioTest


def _stdio(uid: str, prompt: str, cases, reference: str, *wrong: str) -> CodeTask:
    tests = tuple(StdioTest(i, o) for i, o in cases)
    return CodeTask(f"embedded/{uid}", prompt, tests, reference, wrong, "embedded")


def _calls(uid: str, prompt: str, fn: str, cases, reference: str, *wrong: str, **tol) -> CodeTask:
    tests = tuple(CallTest(fn, args, out, **tol) for args, out in cases)
    return CodeTask(f"embedded/{uid}", prompt, tests, reference, wrong, "embedded")


_STDIO_NOTE = "Read from standard input and print to standard output."
_ALWAYS_EQUAL = """
class Anything(dict):
    def __eq__(self, other):
        return True
    __hash__ = None
def word_freq(text):
    return Anything()
"""

EMBEDDED_TASKS: tuple[CodeTask, ...] = (
    _stdio(
        "sum_two",
        f"Two integers a and b are given on one line. Print a + b. {_STDIO_NOTE}",
        [("1 2\n", "3\n"), ("-5 5\n", "0\n"), ("1000000000000 1\n", "1000000000001\n"),
         ("7 -10\n", "-3\n")],
        "a, b = map(int, input().split())\nprint(a + b)\n",
        "a, b = map(int, input().split())\nprint(a - b)\n",
        "print(3)\n",
    ),
    _stdio(
        "reverse_words",
        f"Print the words of one line in reverse order, separated by single spaces. {_STDIO_NOTE}",
        [("hello world\n", "world hello\n"), ("a b c\n", "c b a\n"), ("  one  \n", "one\n"),
         ("x  y\n", "y x\n")],
        "print(' '.join(input().split()[::-1]))\n",
        "print(input()[::-1])\n",
    ),
    _stdio(
        "max_of_list",
        f"The first line holds n, the second n integers. Print the largest. {_STDIO_NOTE}",
        [("3\n1 5 2\n", "5\n"), ("1\n-7\n", "-7\n"), ("4\n-1 -2 -3 -4\n", "-1\n"),
         ("5\n3 3 9 9 1\n", "9\n")],
        "input()\nprint(max(map(int, input().split())))\n",
        "input()\nbest = 0\nfor x in map(int, input().split()):\n    best = max(best, x)\n"
        "print(best)\n",
    ),
    _stdio(
        "fizzbuzz",
        "Given n, print the numbers 1..n one per line, but Fizz for multiples of 3, Buzz for "
        f"multiples of 5 and FizzBuzz for multiples of both. {_STDIO_NOTE}",
        [("1\n", "1\n"), ("5\n", "1\n2\nFizz\n4\nBuzz\n"),
         ("15\n", "1\n2\nFizz\n4\nBuzz\nFizz\n7\n8\nFizz\nBuzz\n11\nFizz\n13\n14\nFizzBuzz\n")],
        "for i in range(1, int(input()) + 1):\n"
        "    print('FizzBuzz' if i % 15 == 0 else 'Fizz' if i % 3 == 0 else "
        "'Buzz' if i % 5 == 0 else i)\n",
        "for i in range(1, int(input()) + 1):\n"
        "    print('Fizz' if i % 3 == 0 else 'Buzz' if i % 5 == 0 else "
        "'FizzBuzz' if i % 15 == 0 else i)\n",
    ),
    _stdio(
        "count_vowels",
        f"Print how many vowels (a, e, i, o, u, in either case) one line holds. {_STDIO_NOTE}",
        [("Hello\n", "2\n"), ("AEIOU xyz\n", "5\n"), ("rhythm\n", "0\n"),
         ("Programming Is Fun\n", "5\n")],
        "print(sum(c in 'aeiouAEIOU' for c in input()))\n",
        "print(sum(c in 'aeiou' for c in input()))\n",
    ),
    _stdio(
        "primes",
        "The first line holds t, then t lines hold one integer n each. For each, print YES if n "
        f"is prime and NO otherwise. {_STDIO_NOTE}",
        [("3\n1\n2\n9\n", "NO\nYES\nNO\n"), ("2\n97\n100\n", "YES\nNO\n"), ("1\n0\n", "NO\n"),
         ("2\n7919\n7917\n", "YES\nNO\n")],
        "def prime(n):\n    return n > 1 and all(n % d for d in range(2, int(n ** 0.5) + 1))\n"
        "for _ in range(int(input())):\n    print('YES' if prime(int(input())) else 'NO')\n",
        "def prime(n):\n    return all(n % d for d in range(2, int(n ** 0.5) + 1))\n"
        "for _ in range(int(input())):\n    print('YES' if prime(int(input())) else 'NO')\n",
        "import sys\nsys.exit(0)\n",
    ),
    _calls(
        "is_even",
        "Write `is_even(n: int) -> bool`: True if n is even, else False.",
        "is_even",
        [((4,), True), ((7,), False), ((0,), True), ((-3,), False)],
        "def is_even(n):\n    return n % 2 == 0\n",
        "def is_even(n):\n    return 1 - n % 2\n",  # 1 and 0, not True and False
        "def is_even(n):\n    return n % 2 == 1\n",
    ),
    _calls(
        "pair_sum",
        "Write `pair_sum(nums: list[int], target: int) -> tuple[int, int]`: the indices (i, j), "
        "i < j, of the one pair with nums[i] + nums[j] == target.",
        "pair_sum",
        [(([2, 7, 11, 15], 9), (0, 1)), (([3, 2, 4], 6), (1, 2)), (([1, 5, 5, 2], 10), (1, 2)),
         (([-1, 4, 8], 7), (0, 2))],
        "def pair_sum(nums, target):\n    seen = {}\n    for j, x in enumerate(nums):\n"
        "        if target - x in seen:\n            return (seen[target - x], j)\n"
        "        seen[x] = j\n",
        "def pair_sum(nums, target):\n    for i in range(len(nums)):\n"
        "        for j in range(i + 1, len(nums)):\n"
        "            if nums[i] + nums[j] == target:\n                return [i, j]\n",
    ),
    _calls(
        "mean",
        "Write `mean(xs: list[float]) -> float`: the arithmetic mean of a non-empty list.",
        "mean",
        [(([1, 2, 3, 4],), 2.5), (([1, 1, 2],), 4 / 3), (([10],), 10.0), (([-1, 1],), 0.0)],
        "def mean(xs):\n    return sum(xs) / len(xs)\n",
        "def mean(xs):\n    return sum(xs) // len(xs)\n",
        rel_tol=1e-9,
    ),
    _calls(
        "word_freq",
        "Write `word_freq(text: str) -> dict[str, int]`: how often each whitespace-separated "
        "word occurs, words lower-cased.",
        "word_freq",
        [(("a b a",), {"a": 2, "b": 1}), (("Hi hi HI",), {"hi": 3}), (("",), {}),
         (("x Y y",), {"x": 1, "y": 2})],
        "def word_freq(text):\n    out = {}\n    for w in text.lower().split():\n"
        "        out[w] = out.get(w, 0) + 1\n    return out\n",
        "def word_freq(text):\n    out = {}\n    for w in text.split():\n"
        "        out[w] = out.get(w, 0) + 1\n    return out\n",
        _ALWAYS_EQUAL,
    ),
    _calls(
        "unique_sorted",
        "Write `unique_sorted(xs: list[int]) -> list[int]`: the distinct values, ascending.",
        "unique_sorted",
        [(([3, 1, 3, 2],), [1, 2, 3]), (([],), []), (([5, 5],), [5]), (([-1, 10, -1],), [-1, 10])],
        "def unique_sorted(xs):\n    return sorted(set(xs))\n",
        "def unique_sorted(xs):\n    return set(xs)\n",
        "def unique_sorted(xs):\n    return sorted(xs)\n",
    ),
    _calls(
        "fib",
        "Write `fib(n: int) -> int`: the n-th Fibonacci number, fib(0) = 0 and fib(1) = 1.",
        "fib",
        [((0,), 0), ((1,), 1), ((10,), 55), ((50,), 12586269025)],
        "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n"
        "    return a\n",
        "def fib(n):\n    a, b = 1, 1\n    for _ in range(n):\n        a, b = b, a + b\n"
        "    return a\n",
        "import sys\nsys.exit(0)\ndef fib(n):\n    return 0\n",
        "import os\ndef fib(n):\n    os._exit(0)\n",
    ),
    _calls(
        "flatten",
        "Write `flatten(nested: list) -> list`: the non-list items of an arbitrarily nested list, "
        "in order.",
        "flatten",
        [(([1, [2, [3, [4]]]],), [1, 2, 3, 4]), (([],), []), (([[[]]],), []),
         (([[1, 2], [3]],), [1, 2, 3])],
        "def flatten(nested):\n    out = []\n    for x in nested:\n"
        "        out.extend(flatten(x) if isinstance(x, list) else [x])\n    return out\n",
        "def flatten(nested):\n    out = []\n    for x in nested:\n"
        "        out.extend(x if isinstance(x, list) else [x])\n    return out\n",
    ),
    _calls(
        "is_palindrome",
        "Write `is_palindrome(s: str) -> bool`: whether s reads the same both ways, looking only "
        "at letters and digits and ignoring case.",
        "is_palindrome",
        [(("A man, a plan, a canal: Panama",), True), (("race a car",), False), (("",), True),
         (("ab",), False)],
        "def is_palindrome(s):\n    t = [c.lower() for c in s if c.isalnum()]\n"
        "    return t == t[::-1]\n",
        "def is_palindrome(s):\n    return s == s[::-1]\n",
    ),
)  # fmt: skip


def embedded_tasks() -> list[CodeTask]:
    """The embedded code tasks (6 stdin/stdout, 8 function-call)."""
    return list(EMBEDDED_TASKS)
