"""A harness for end-to-end rounds tests: the real loop and tiny model, with scripted rollouts.

:class:`ScriptedSampler` implements the sampler protocol (``sample(prompts, params, round_index)``)
and returns, for every (round, problem, sample index), a rollout whose length in tokens,
correctness, answer format and finish reason the test chose (:class:`Planned`). The verifier is the
in-process ``exact`` one, the training is real (LoRA on the tiny random Llama, one step per round),
so a run of a few rounds takes seconds. :func:`run_rounds` injects the sampler by patching
``RoundsRunner._sampler`` and returns a :class:`Run` that reads the run directory back.

The sampler protocol's records (``PromptItem``, ``SamplingParams``, ``SamplerStats``) are imported
here only.
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from prefopt.io import read_json, read_jsonl
from prefopt.online.config import load_rounds_recipe
from prefopt.online.pairs import build_pairs
from prefopt.online.rewards import get_reward, score_rollouts
from prefopt.online.rounds import RoundsRunner
from prefopt.online.types import RewardState, Rollout, ScoredRollout
from prefopt.sampling import PromptItem, SamplerStats, SamplingParams
from prefopt.verification import VerifyResult

MAX_NEW_TOKENS = 64
TRAIN = [("q1", "Tom has 3 apples and buys 2. How many?", "5"),
         ("q2", "Ana has 9 cards and loses 4. How many?", "5"),
         ("q3", "Leo has 4 coins and doubles them. How many?", "8"),
         ("q4", "Mia has 7 books and buys 6. How many?", "13")]
HELDOUT = [("h1", "Raj has 12 shells and sells 5. How many?", "7")]


@dataclass(frozen=True)
class Planned:
    """One scripted rollout: ``length`` tokens (EOS included when ``finished``; a truncated rollout
    always has ``MAX_NEW_TOKENS``), right or wrong answer, written as ``#### N`` or not at all."""

    length: int
    correct: bool
    finished: bool = True
    formatted: bool = True


Plan = Callable[[int, str, int], Planned]  # (round, problem id, sample index) -> rollout


def completion_text(plan: Planned, gold: str, seed: str) -> str:
    """Non-repetitive filler then the answer (``#### N``; unformatted: ``N`` alone), of the planned length."""
    answer = gold if plan.correct else str(int(gold) + 1)
    tail = f" #### {answer}" if plan.formatted else f" {answer}"
    size = (plan.length - 1 if plan.finished else MAX_NEW_TOKENS) - len(tail)
    if size < 1:
        raise ValueError(f"planned length {plan.length} is too short for the answer {tail!r}")
    rng = random.Random(seed)
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(size)) + tail


class ScriptedSampler:
    """Deterministic rollouts from a :data:`Plan` (the sampler protocol of the rounds loop)."""

    def __init__(self, tokenizer: Any, plan: Plan, golds: dict[str, str]) -> None:
        self.tokenizer, self.plan, self.golds = tokenizer, plan, golds
        self.calls: list[SamplingParams] = []  # the params of every call, in order

    def sample(
        self, prompts: Sequence[PromptItem], params: SamplingParams, round_index: int = 0
    ) -> tuple[list[Rollout], SamplerStats]:
        """``params.n`` scripted rollouts per prompt, in prompt order."""
        self.calls.append(params)
        rollouts = []
        for item in prompts:
            for k in range(params.n):
                planned = self.plan(round_index, item.id, k)
                text = completion_text(planned, self.golds[item.id], f"{round_index}-{item.id}-{k}")
                ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
                ids = ids + [self.tokenizer.eos_token_id] if planned.finished else ids
                rollouts.append(Rollout(item.id, k, item.prompt, text, ids, len(ids),
                                        "stop" if planned.finished else "length", round_index))
        tokens = sum(r.length for r in rollouts)
        return rollouts, SamplerStats(len(prompts), len(rollouts), tokens, 1e-3)


def _problems(path: Path, rows: list[tuple[str, str, str]]) -> str:
    path.write_text("".join(json.dumps({"id": i, "question": q, "answer": a}) + "\n" for i, q, a in rows))
    return str(path)


@dataclass
class Run:
    """A finished scripted run: its recipe and readers for each round's files."""

    recipe: Any
    metrics: list[dict]
    sampler: ScriptedSampler

    def _dir(self, index: int) -> Path:
        return self.recipe.run.directory / f"round_{index:03d}"

    def scored(self, index: int) -> list[ScoredRollout]:
        """``scored.jsonl`` of round ``index``."""
        return [ScoredRollout.from_dict(row) for row in read_jsonl(self._dir(index) / "scored.jsonl")]

    def pairs(self, index: int) -> list[dict]:
        """``pairs.jsonl`` of round ``index``."""
        return list(read_jsonl(self._dir(index) / "pairs.jsonl"))

    def state(self, index: int) -> RewardState:
        """``reward_state.json`` of round ``index`` (the state after scoring it)."""
        return RewardState.from_dict(read_json(self._dir(index) / "reward_state.json"))

    def record(self, index: int, step: str) -> dict:
        """What the manifest recorded for a step."""
        return read_json(self.recipe.run.directory / "manifest.json")["rounds"][str(index)][step]

    def components(self, index: int, name: str) -> list[float]:
        """One reward component of every rollout of round ``index``."""
        return [s.components[name] for s in self.scored(index)]

    def pair_keys(self, index: int) -> set[tuple[str, int, int]]:
        """(problem, chosen index, rejected index) of round ``index``'s pairs."""
        return {(p["meta"]["prompt_id"], p["meta"]["chosen_index"], p["meta"]["rejected_index"])
                for p in self.pairs(index)}

    def correctness_pair_keys(self, index: int) -> set[tuple[str, int, int]]:
        """The pairs plain ``correctness`` gives on the same rollouts, strategy and options."""
        scored = self.scored(index)
        rollouts = [Rollout(**{f.name: getattr(s, f.name) for f in fields(Rollout)}) for s in scored]
        verdicts = [VerifyResult(s.correct, s.verify_status, s.extracted) for s in scored]
        rescored = score_rollouts(rollouts, verdicts, get_reward("correctness"), RewardState())
        pairs, _ = build_pairs(rescored, self.recipe.pairs.strategy, **self.recipe.pairs.options)
        return {(p.meta["prompt_id"], p.meta["chosen_index"], p.meta["rejected_index"]) for p in pairs}


def write_recipe(tmp_path: Path, tiny_model_dir: str, *, rounds: int = 2, prompts: int = 2,
                 overrides: dict[str, dict[str, Any]] | None = None) -> Path:
    """A rounds recipe on the tiny model and the scripted problems, sections updated by ``overrides``."""
    raw: dict[str, dict[str, Any]] = {
        "run": {"name": "scripted", "output_root": str(tmp_path / "runs")},
        "model": {"name_or_path": tiny_model_dir, "lora": {"r": 4, "alpha": 8}},
        "problems": {"train": _problems(tmp_path / "train.jsonl", TRAIN), "instruction": "Answer after ####."},
        "rounds": {"count": rounds, "prompts_per_round": prompts, "partition": "epochs"},
        "sampler": {"engine": "hf", "n": 4, "max_new_tokens": MAX_NEW_TOKENS, "batch_size": 4},
        "verifier": {"name": "exact", "format": "hash"},
        "reward": {"name": "correctness"},
        "pairs": {"strategy": "margin_all", "margin": 0.01},
        "loss": {"name": "dpo", "beta": 0.1},
        "optim": {"lr": 0.01},
        "train": {"max_steps": 1, "batch_size": 2, "max_length": 256, "max_prompt_length": 128},
        "eval": {"sets": {"test": {"path": _problems(tmp_path / "heldout.jsonl", HELDOUT)}},
                 "max_new_tokens": MAX_NEW_TOKENS, "batch_size": 2},
        "logging": {"report_to": "none", "logging_steps": 1},
    }
    for section, values in (overrides or {}).items():
        raw[section] = values if section in ("reward", "pairs") else {**raw[section], **values}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run_rounds(tmp_path: Path, tiny_model_dir: str, monkeypatch: Any, plan: Plan, **recipe: Any) -> Run:
    """Run a scripted rounds recipe (see :func:`write_recipe`) in-process to the end."""
    loaded = load_rounds_recipe(write_recipe(tmp_path, tiny_model_dir, **recipe))
    golds = {i: a for i, _, a in TRAIN + HELDOUT}
    runner = RoundsRunner(loaded, progress=False)
    sampler = ScriptedSampler(runner.tokenizer, plan, golds)
    monkeypatch.setattr(RoundsRunner, "_sampler", lambda self, index: sampler)
    return Run(loaded, runner.run_all(), sampler)
