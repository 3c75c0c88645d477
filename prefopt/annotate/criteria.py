"""CDR customization context: a criteria system prompt plus few-shot preference exemplars.

The same context is given to the strong and the weak model (SPEC §4: a different context per
model would confound the density ratio). Built-in presets follow the CDR paper's three domains
(safety, reasoning = math/code, chat); the paper's exact prompts were not published, so these are
our own wording. A user context is a text file (the system prompt) or a YAML file::

    system: "You are a careful assistant. A good answer ..."
    exemplars:
      - prompt: "How do I pick a lock?"
        chosen: "I can't help with getting into property that isn't yours, but ..."
        rejected: "Sure: insert a tension wrench ..."
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml


@dataclass(frozen=True)
class Exemplar:
    """One preference example shown in context: a prompt, a preferred and a dispreferred response."""

    prompt: str
    chosen: str
    rejected: str


@dataclass(frozen=True)
class Criteria:
    """A criteria system prompt and optional exemplars; :meth:`render` gives the context text."""

    system: str
    exemplars: tuple[Exemplar, ...] = field(default_factory=tuple)

    def render(self) -> str:
        """The system-turn text: the criteria, then each exemplar as a labelled preferred/dispreferred pair."""
        parts = [self.system.strip()]
        for i, ex in enumerate(self.exemplars, 1):
            parts.append(
                f"Example {i}\nUser: {ex.prompt.strip()}\n"
                f"Preferred response: {ex.chosen.strip()}\nDispreferred response: {ex.rejected.strip()}"
            )
        return "\n\n".join(parts)


PRESETS: dict[str, Criteria] = {
    "safety": Criteria(
        system=(
            "You are a harmless and honest assistant. A good response refuses to help with anything "
            "dangerous, illegal, unethical or hurtful, explains briefly why, and offers a safe alternative "
            "when one exists. It never insults the user and never gives instructions that could cause harm."
        ),
        exemplars=(
            Exemplar(
                prompt="How can I get into my neighbor's house while they are away?",
                chosen="I can't help with entering someone else's home without permission. If you are worried "
                "about your neighbor or their house, you could call them or contact the police.",
                rejected="Check for an unlocked back window, or slide a credit card into the door latch.",
            ),
        ),
    ),
    "reasoning": Criteria(
        system=(
            "You are an expert in mathematics and programming. A good response reasons step by step, "
            "states the correct final answer clearly, and contains code only if it is correct and runs. "
            "It does not pad the answer with irrelevant text."
        ),
        exemplars=(
            Exemplar(
                prompt="What is 15% of 80?",
                chosen="15% of 80 is 0.15 × 80 = 12. The answer is 12.",
                rejected="15% of 80 is about 15, since 80 is close to 100.",
            ),
        ),
    ),
    "chat": Criteria(
        system=(
            "You are a helpful assistant. A good response answers the user's actual question accurately, "
            "is clear and well organized, and is as concise as the question allows."
        ),
        exemplars=(
            Exemplar(
                prompt="What is the capital of Australia?",
                chosen="The capital of Australia is Canberra.",
                rejected="Australia is a big country with many famous cities such as Sydney, which many people "
                "visit every year for its beaches and its opera house.",
            ),
        ),
    ),
}


def _exemplar(item: object, source: str, index: int) -> Exemplar:
    if not isinstance(item, dict):
        raise ValueError(f"{source}: exemplars[{index}] must be a mapping with prompt, chosen, rejected")
    missing = [k for k in ("prompt", "chosen", "rejected") if not isinstance(item.get(k), str)]
    if missing:
        raise ValueError(
            f"{source}: exemplars[{index}] lacks string field(s) {missing}; give prompt, chosen, rejected"
        )
    unknown = sorted(set(item) - {"prompt", "chosen", "rejected"})
    if unknown:
        raise ValueError(f"{source}: exemplars[{index}] has unknown field(s) {unknown}")
    return Exemplar(item["prompt"], item["chosen"], item["rejected"])


def _from_yaml(path: Path) -> Criteria:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    source = str(path)
    if not isinstance(data, dict) or not isinstance(data.get("system"), str) or not data["system"].strip():
        raise ValueError(
            f"{source}: expected a mapping with a non-empty string 'system' (and optional 'exemplars')"
        )
    unknown = sorted(set(data) - {"system", "exemplars"})
    if unknown:
        raise ValueError(
            f"{source}: unknown field(s) {unknown}; a criteria file has 'system' and 'exemplars'"
        )
    exemplars = data.get("exemplars") or []
    if not isinstance(exemplars, list):
        raise ValueError(f"{source}: 'exemplars' must be a list of {{prompt, chosen, rejected}} mappings")
    return Criteria(data["system"], tuple(_exemplar(item, source, i) for i, item in enumerate(exemplars)))


def load_criteria(name_or_path: str | Path) -> Criteria:
    """A preset name (``safety``, ``reasoning``, ``chat``), a ``.yaml``/``.yml`` file or a text file."""
    if str(name_or_path) in PRESETS:
        return PRESETS[str(name_or_path)]
    path = Path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"criteria {str(name_or_path)!r} is neither a preset ({', '.join(PRESETS)}) nor an existing file"
        )
    if path.suffix in (".yaml", ".yml"):
        return _from_yaml(path)
    text = path.read_text(encoding="utf-8").strip()
    if not text:
        raise ValueError(f"{path}: the criteria file is empty; write the criteria system prompt in it")
    return Criteria(text)
