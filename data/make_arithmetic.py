"""Generate prefopt's synthetic arithmetic word problems and a small offline preference set.

Deterministic (seeded ``random.Random``), no third-party data. Writes, next to this file:

- ``arithmetic/train.jsonl``, ``arithmetic/validation.jsonl`` and ``arithmetic/test.jsonl``: one
  problem per line with fields ``id`` (stable, e.g. ``"train-00042"``), ``question`` (the word
  problem, without any answer-format instruction), ``answer`` (the gold: the integer as a plain
  string, e.g. ``"18"``; the GSM8K-style ``#### N`` marker belongs to the *model's* output, not to the
  gold) and ``difficulty`` (1-3). No question appears in two splits. The three roles (see
  docs/quickstart.md): rounds sample from *train*; recipes, instructions and difficulty levels are
  chosen on *validation*; *test* is reported and never used for a choice. The test split is drawn
  from its own seeded stream after the others, so train and validation are unchanged by its size.
  ``make_arithmetic_oot.py`` writes the out-of-template validation and test sets.
- ``arithmetic_pairs.jsonl``: TRL *conversational* preference pairs (``prompt`` = one user message
  holding the question plus :data:`INSTRUCTION`, ``chosen`` / ``rejected`` = one assistant message).
  ``chosen`` is a concise correct solution; ``rejected`` is either a verbose correct solution (the
  length bias the length-aware losses should undo) or a concise wrong one.

Difficulty levels (calibrated on the embedded SmolLM2-135M-Instruct; greedy, with the quickstart's
instruction, it is right on 29%, 21% and 0% of them, 23% of the first 100 validation problems —
the quickstart's round 0 before the test splits existed; this model is weak):

1. one addition, numbers <= 10;
2. one operation (``+``, ``-``, ``*``), numbers <= 20 (products <= 100);
3. two operations, numbers <= 20.

Usage: ``python data/make_arithmetic.py [--seed 0] [--train 2000] [--validation 200] [--test 200]
[--pairs 500] [--mix 1:0.6,2:0.3,3:0.1]``. The defaults regenerate the committed files byte for byte.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

INSTRUCTION = "Solve the problem. Give the final answer as a number after ####."
"""Answer-format instruction appended to each question in prompts (recipes use the same text)."""

NAMES = ("Tom", "Ana", "Lena", "Omar", "Mia", "Raj", "Sara", "Ben", "Yuki", "Leo", "Nora", "Ivan")
ITEMS = ("apples", "pencils", "stickers", "marbles", "books", "cookies", "cards", "shells", "coins", "stamps")
DEFAULT_MIX = {1: 0.6, 2: 0.3, 3: 0.1}


@dataclass(frozen=True)
class Step:
    """One operation applied to the running total: its sentence and its effect."""

    sentence: str
    expression: str
    value: int


def _step(rng: random.Random, total: int, name: str, item: str, limit: int, only_add: bool = False) -> Step:
    """Pick an operation valid for ``total`` (results stay positive integers) and phrase it."""
    ops: list[Callable[[], Step]] = []

    def add() -> Step:
        n = rng.randint(2, limit)
        verb = rng.choice(("buys", "finds", "gets", "is given"))
        return Step(f"{name} {verb} {n} more {item}.", f"{total} + {n}", total + n)

    def sub() -> Step:
        n = rng.randint(1, total - 1)
        verb = rng.choice(("gives away", "loses", "uses", "sells"))
        return Step(f"{name} {verb} {n} {item}.", f"{total} - {n}", total - n)

    def mul() -> Step:
        n = rng.randint(2, max(2, min(5, 100 // total)))
        word = {2: "doubles", 3: "triples"}.get(n)
        sentence = f"{name} {word} the {item}." if word else f"{name} ends up with {n} times as many {item}."
        return Step(sentence, f"{total} * {n}", total * n)

    ops.append(add)
    if total > 2 and not only_add:
        ops.append(sub)
    if total <= 50 and not only_add:
        ops.append(mul)
    return rng.choice(ops)()


def make_problem(rng: random.Random, difficulty: int) -> tuple[str, int, list[Step]]:
    """A word problem of ``difficulty`` (1-3): ``(question, answer, steps)``."""
    limit = 10 if difficulty == 1 else 20
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    start = rng.randint(2, limit)
    steps: list[Step] = []
    total = start
    for _ in range(2 if difficulty == 3 else 1):
        step = _step(rng, total, name, item, limit, only_add=difficulty == 1)
        steps.append(step)
        total = step.value
    sentences = " ".join(s.sentence for s in steps)
    question = f"{name} has {start} {item}. {sentences} How many {item} does {name} have now?"
    return question, total, steps


def concise_solution(steps: list[Step], answer: int) -> str:
    """The short correct answer: the arithmetic, then ``#### N``."""
    work = " ".join(f"{s.expression} = {s.value}." for s in steps)
    return f"{work}\n#### {answer}"


def verbose_solution(question: str, steps: list[Step], answer: int) -> str:
    """A long-winded but correct answer (restates the problem, narrates every step)."""
    lines = [
        "Let's think about this problem carefully, step by step, to make sure we get it right.",
        f"The problem says: {question}",
        "First, let's identify what we know and what we need to find.",
    ]
    for i, s in enumerate(steps, 1):
        lines.append(f"Step {i}: {s.sentence} So we compute {s.expression}, which gives us {s.value}.")
        lines.append(f"Let me double-check that: {s.expression} is indeed {s.value}. Good.")
    lines.append(f"Therefore, after all the steps, the final number is {answer}.")
    lines.append(f"#### {answer}")
    return "\n".join(lines)


def wrong_solution(rng: random.Random, steps: list[Step], answer: int) -> str:
    """A concise answer with one arithmetic slip propagated to a wrong final number."""
    wrong = answer + rng.choice((-3, -2, -1, 1, 2, 3, 10))
    if wrong <= 0:
        wrong = answer + 1
    work = " ".join(f"{s.expression} = {s.value}." for s in steps[:-1])
    last = f"{steps[-1].expression} = {wrong}."
    return f"{work} {last}".strip() + f"\n#### {wrong}"


def parse_mix(text: str) -> dict[int, float]:
    """``"1:0.6,2:0.3,3:0.1"`` → ``{1: 0.6, 2: 0.3, 3: 0.1}`` (levels 1-3, non-negative weights)."""
    mix: dict[int, float] = {}
    for part in text.split(","):
        level, _, weight = part.partition(":")
        if int(level) not in (1, 2, 3) or float(weight) < 0:
            raise ValueError(f"--mix: bad entry {part!r}; use LEVEL:WEIGHT with LEVEL in 1-3, e.g. 1:0.6,2:0.4")
        mix[int(level)] = float(weight)
    return mix


Problems = list[tuple[str, int, int, list[Step]]]
"""``(question, answer, difficulty, steps)`` per problem."""


def draw_problems(
    rng: random.Random, n: int, mix: dict[int, float], seen: set[str], make: Callable = make_problem
) -> Problems:
    """``n`` problems with questions not in ``seen`` (which is updated), difficulty drawn from ``mix``."""
    levels, weights = zip(*sorted(mix.items()))
    problems: Problems = []
    while len(problems) < n:
        difficulty = rng.choices(levels, weights)[0]
        question, answer, steps = make(rng, difficulty)
        if question not in seen:
            seen.add(question)
            problems.append((question, answer, difficulty, steps))
    return problems


def problem_rows(prefix: str, problems: Problems) -> list[dict]:
    """The JSON rows of ``problems`` with ids ``<prefix>-00000``, ``<prefix>-00001``, ..."""
    return [{"id": f"{prefix}-{i:05d}", "question": q, "answer": str(a), "difficulty": d}
            for i, (q, a, d, _) in enumerate(problems)]


def generate(
    seed: int, n_train: int, n_validation: int, n_test: int, n_pairs: int, mix: dict[int, float]
) -> tuple[list[dict], list[dict], list[dict], list[dict]]:
    """Build ``(train, validation, test, pairs)`` rows; unique questions, disjoint splits, deterministic."""
    rng = random.Random(seed)
    seen: set[str] = set()
    problems = draw_problems(rng, n_train + n_validation, mix, seen)
    validation_rows = problem_rows("validation", problems[:n_validation])
    train_problems = problems[n_validation:]
    train_rows = problem_rows("train", train_problems)
    pairs = []
    for question, answer, _, steps in train_problems[:n_pairs]:
        rejected = verbose_solution(question, steps, answer) if rng.random() < 0.6 else wrong_solution(rng, steps, answer)
        pairs.append(
            {
                "prompt": [{"role": "user", "content": f"{question}\n{INSTRUCTION}"}],
                "chosen": [{"role": "assistant", "content": concise_solution(steps, answer)}],
                "rejected": [{"role": "assistant", "content": rejected}],
            }
        )
    test_rows = problem_rows("test", draw_problems(random.Random(f"{seed}-test"), n_test, mix, seen))
    return train_rows, validation_rows, test_rows, pairs


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """Write ``rows`` as JSON Lines (creating the parent directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=2000, help="training problems")
    parser.add_argument("--validation", type=int, default=200, help="validation problems (for choosing recipes)")
    parser.add_argument("--test", type=int, default=200, help="test problems (reported, never used for a choice)")
    parser.add_argument("--pairs", type=int, default=500, help="offline preference pairs (from train problems)")
    parser.add_argument("--mix", default="1:0.6,2:0.3,3:0.1", help="difficulty weights LEVEL:WEIGHT,...")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="output directory")
    args = parser.parse_args(argv)
    if args.pairs > args.train:
        parser.error("--pairs cannot exceed --train (pairs are built from training problems)")
    train, validation, test, pairs = generate(args.seed, args.train, args.validation, args.test, args.pairs,
                                              parse_mix(args.mix))
    for name, rows in (("train", train), ("validation", validation), ("test", test)):
        write_jsonl(args.out / "arithmetic" / f"{name}.jsonl", rows)
    write_jsonl(args.out / "arithmetic_pairs.jsonl", pairs)
    print(f"wrote {len(train)} train, {len(validation)} validation and {len(test)} test problems and "
          f"{len(pairs)} pairs under {args.out}")


if __name__ == "__main__":
    main()
