"""Generate the *out-of-template* arithmetic problems: the training arithmetic, phrased differently.

The problems of ``make_arithmetic.py`` all follow one story ("<name> has N <items>. <name> buys N
more <items>. How many <items> does <name> have now?"). A model trained on them can learn the story
instead of the arithmetic. This generator asks the *same* arithmetic — the same difficulty levels,
number ranges and operations, drawn by the training generator's own step function — in scenes and
sentence structures the training templates never use: money, lengths, volumes, passengers, rates,
temperatures, comparisons of ages and prices, over several sentences, with other names and objects.
``tests/test_arithmetic_data.py`` checks that no fixed word sequence of a training template (and no
training name or item) appears in any of these questions, and that every gold equals the arithmetic
of its question's numbers.

Writes ``arithmetic/validation_oot.jsonl`` (ids ``validation_oot-NNNNN``, for choosing recipes) and
``arithmetic/test_oot.jsonl`` (ids ``test_oot-NNNNN``, reported only), with the fields of the
in-template files (``id``, ``question``, ``answer``, ``difficulty``). Deterministic: the defaults
regenerate the committed files byte for byte.

Usage: ``python data/make_arithmetic_oot.py [--seed 0] [--validation 200] [--test 200]
[--mix 1:0.6,2:0.3,3:0.1]``.
"""

from __future__ import annotations

import argparse
import random
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_arithmetic as base  # noqa: E402  (the sibling generator: its steps, mix and writers)

NAMES = ("Priya", "Kofi", "Elena", "Mateo", "Aiko", "Dmitri", "Fatima", "Jonas", "Chloe", "Tariq", "Ingrid", "Wei")
OPS = {"+": "add", "-": "sub", "*": "mul"}


@dataclass(frozen=True)
class Scene:
    """A story for one quantity: how it starts, how each operation changes it, and the question.

    Templates use ``{name}``, ``{n}`` (the start), ``{k}`` (the step's operand) and, for
    comparisons, ``{a}`` / ``{b}`` (the entity before / after the step) and ``{last}`` (the
    entity asked about). ``ops`` are the operations the scene can phrase; ``mul_first`` scenes
    state their start and first step (a multiplication) in one sentence.
    """

    setup: tuple[str, ...]
    add: tuple[str, ...] = ()
    sub: tuple[str, ...] = ()
    mul: tuple[str, ...] = ()
    question: tuple[str, ...] = ()
    entities: tuple[tuple[str, ...], ...] = ()
    mul_first: bool = False

    def supports(self, ops: list[str]) -> bool:
        """Whether the scene can phrase this operation sequence."""
        if self.mul_first and ops[0] != "mul":
            return False
        return all(getattr(self, op) for op in (ops[1:] if self.mul_first else ops))


SCENES: tuple[Scene, ...] = (
    Scene(  # money
        setup=("{name} empties a piggy bank and counts ${n}.", "There is ${n} in {name}'s wallet."),
        add=("Then {name} earns ${k} for mowing a lawn.", "A relative mails {name} a gift of ${k}."),
        sub=("{name} spends ${k} on a kite.", "A ${k} bus fare comes out of that money."),
        mul=("A savings scheme multiplies the money by {k}.",),
        question=("What is the final amount in dollars?", "How much money, in dollars, is there at the end?"),
    ),
    Scene(  # lengths
        setup=("{name} is holding a rope {n} meters long.", "A roll of ribbon measures {n} meters."),
        add=("A further piece of {k} meters is knotted onto its end.", "{name} splices on another {k} meters."),
        sub=("A {k}-meter section is cut away.", "{name} trims off {k} meters for a kite string."),
        mul=("{name} then lays {k} pieces of exactly this length end to end.",),
        question=("What length, in meters, is there at the end?", "Find the total length in meters."),
    ),
    Scene(  # passengers
        setup=("A city bus pulls away from the depot carrying {n} passengers.",
               "{n} riders are aboard the early tram as it leaves the station."),
        add=("At the market stop, {k} people climb aboard.", "Another {k} riders board at the park."),
        sub=("At the museum, {k} passengers step off.", "At the bridge, {k} riders get off."),
        mul=("For the parade the city runs {k} such vehicles, each carrying exactly that load.",),
        question=("Counting everyone aboard, what is the number of riders at the end?",
                  "What is the final passenger count?"),
    ),
    Scene(  # volumes
        setup=("A rain barrel contains {n} liters of water.", "{name}'s fish tank holds {n} liters."),
        add=("A storm adds {k} liters.", "{name} pours in another {k} liters."),
        sub=("A leak lets {k} liters escape.", "{name} draws off {k} liters for the roses."),
        mul=("{name} fills {k} containers of this size to the same level.",),
        question=("What volume of water, in liters, is there at the end?", "Find the total volume in liters."),
    ),
    Scene(  # temperatures (no multiplication)
        setup=("At dawn the thermometer on {name}'s porch shows {n} degrees.",),
        add=("By noon it has climbed {k} degrees.", "The afternoon sun warms it by {k} degrees."),
        sub=("A cold wind then brings it down {k} degrees.", "After sunset it drops {k} degrees."),
        question=("What does the thermometer show at the end, in degrees?",),
    ),
    Scene(  # rates: start x first factor in one sentence
        setup=("{name} reads {n} pages every evening for {k} evenings.",
               "A machine fills {n} bottles per minute and runs for {k} minutes."),
        add=("Later another {k} are added to the count.", "The count then grows by {k}."),
        sub=("Of those, {k} are later struck from the count.",),
        mul=("That whole effort is then repeated until it is {k}-fold.",),
        question=("What is the final count?", "Give the total that counts."),
        mul_first=True,
    ),
    Scene(  # comparisons of ages
        setup=("{name} is {n} years old.",),
        add=("{b} is {k} years older than {a}.",),
        sub=("{b} is {k} years younger than {a}.",),
        mul=("{b}'s age equals {a}'s age multiplied by {k}.",),
        question=("How old is {last}?", "What is the age of {last}, in years?"),
        entities=(("{name}", "the neighbour", "the coach"), ("{name}", "the cousin", "the piano teacher"),
                  ("{name}", "the babysitter", "the gardener")),
    ),
    Scene(  # comparisons of prices
        setup=("A {a} costs ${n}.",),
        add=("A {b} is ${k} dearer than the {a}.",),
        sub=("A {b} is ${k} cheaper than the {a}.",),
        mul=("A {b} costs as much as {k} {a}s.",),
        question=("What does the {last} cost, in dollars?", "How much is the {last}, in dollars?"),
        entities=(("notebook", "lamp", "kettle"), ("teapot", "blanket", "bicycle"), ("mug", "scarf", "backpack")),
    ),
)


def _capitalize(sentence: str) -> str:
    return sentence[0].upper() + sentence[1:]


def make_problem(rng: random.Random, difficulty: int) -> tuple[str, int, list[base.Step]]:
    """An out-of-template problem of ``difficulty`` (1-3): ``(question, answer, steps)``.

    The numbers and operations come from :func:`make_arithmetic._step` (the training generator's),
    so both generators ask the same arithmetic; only the words differ. ``steps[i].sentence`` is
    this generator's sentence for the step.
    """
    limit = 10 if difficulty == 1 else 20
    start = rng.randint(2, limit)
    arithmetic: list[base.Step] = []
    total = start
    for _ in range(2 if difficulty == 3 else 1):
        step = base._step(rng, total, "", "", limit, only_add=difficulty == 1)
        arithmetic.append(step)
        total = step.value
    ops = [OPS[s.expression.split()[1]] for s in arithmetic]
    operands = [int(s.expression.split()[2]) for s in arithmetic]
    scene = rng.choice([s for s in SCENES if s.supports(ops)])
    name = rng.choice(NAMES)
    entities = [e.format(name=name) for e in rng.choice(scene.entities)] if scene.entities else [name] * 3
    fields = dict(name=name, n=start, a=entities[0], b=entities[1], k=operands[0])
    sentences = [rng.choice(scene.setup).format(**fields)]
    steps: list[base.Step] = []
    for i, (op, k, step) in enumerate(zip(ops, operands, arithmetic)):
        fields.update(a=entities[i], b=entities[i + 1], k=k)
        if i == 0 and scene.mul_first:
            sentence = sentences[0]
        else:
            sentence = _capitalize(rng.choice(getattr(scene, op)).format(**fields))
            sentences.append(sentence)
        steps.append(base.Step(sentence, step.expression, step.value))
    sentences.append(_capitalize(rng.choice(scene.question).format(name=name, last=entities[len(ops)])))
    return " ".join(sentences), total, steps


def generate(seed: int, n_validation: int, n_test: int, mix: dict[int, float]) -> tuple[list[dict], list[dict]]:
    """Build ``(validation_oot, test_oot)`` rows: unique questions, disjoint, deterministic."""
    problems = base.draw_problems(random.Random(f"{seed}-oot"), n_validation + n_test, mix, set(), make_problem)
    return (base.problem_rows("validation_oot", problems[:n_validation]),
            base.problem_rows("test_oot", problems[n_validation:]))


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--validation", type=int, default=200, help="out-of-template validation problems")
    parser.add_argument("--test", type=int, default=200, help="out-of-template test problems")
    parser.add_argument("--mix", default="1:0.6,2:0.3,3:0.1", help="difficulty weights LEVEL:WEIGHT,...")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="output directory")
    args = parser.parse_args(argv)
    validation, test = generate(args.seed, args.validation, args.test, base.parse_mix(args.mix))
    base.write_jsonl(args.out / "arithmetic" / "validation_oot.jsonl", validation)
    base.write_jsonl(args.out / "arithmetic" / "test_oot.jsonl", test)
    print(f"wrote {len(validation)} validation and {len(test)} test out-of-template problems under {args.out}")


if __name__ == "__main__":
    main()
