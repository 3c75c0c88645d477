"""``RoundsRecipe``: the YAML schema of ``prefopt rounds`` (semi-on-policy preference rounds).

Sections, top to bottom: ``run`` (name and output root) → ``model`` → ``problems`` (training and
held-out problem sources) → ``rounds`` (count, prompts per round, reference choice) → ``sampler`` →
``verifier`` → ``reward`` → ``pairs`` → ``loss`` → ``optim`` → ``train`` → ``eval`` → ``logging``.
``model``, ``loss``, ``optim`` and ``logging`` are the ``prefopt train`` sections
(:mod:`prefopt.config`); the others are defined here. Unknown keys are errors; the reward, pair
strategy and verifier names and hyperparameters are checked when the recipe loads, before any model.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError, model_validator

from prefopt.config import (
    LoggingConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    RecipeError,
    Section,
    apply_overrides,
    check_reference,
    format_validation_error,
    load_yaml,
)
from prefopt.online.pairs import STRATEGIES, build_pairs
from prefopt.online.rewards import available_rewards, get_reward
from prefopt.online.verifier import available_verifiers, check_verifier
from prefopt.sampling import SamplingParams


class RunConfig(Section):
    """Where the run lives: ``<output_root>/<name>/``."""

    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    output_root: str = "runs"

    @property
    def directory(self) -> Path:
        """The run directory."""
        return Path(self.output_root) / self.name


class ProblemsConfig(Section):
    """Training and held-out problems: local files (jsonl/json/parquet) or Hub dataset names.

    ``instruction`` is appended to every question (the answer format the verifier expects).
    ``id_field: null`` numbers rows. ``heldout_limit`` evaluates only the first N held-out problems.
    """

    train: str
    heldout: str
    train_split: str = "train"
    heldout_split: str = "test"
    config_name: str | None = None
    question_field: str = "question"
    answer_field: str = "answer"
    id_field: str | None = "id"
    instruction: str = ""
    heldout_limit: int | None = Field(None, gt=0)


class RoundsConfig(Section):
    """The loop: ``count`` rounds, ``prompts_per_round`` training prompts each.

    ``partition: disjoint`` gives every round its own slice of the (seed-shuffled) training
    problems (DNO); ``resample`` draws each round's prompts independently. ``reference``:
    ``initial`` (the starting model throughout) or ``previous`` (the policy the round starts from,
    i.e. the previous round's result; DNO's reference reset).
    """

    count: int = Field(3, gt=0)
    prompts_per_round: int = Field(64, gt=0)
    partition: Literal["disjoint", "resample"] = "disjoint"
    reference: Literal["initial", "previous"] = "initial"
    seed: int = 0


class SamplerConfig(Section):
    """Rollout sampling: ``engine`` ``auto`` (vLLM on CUDA if installed, else HF), ``hf`` or ``vllm``."""

    engine: Literal["auto", "hf", "vllm"] = "auto"
    n: int = Field(4, gt=0)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(256, gt=0)
    batch_size: int = Field(16, gt=0)
    gpu_memory_utilization: float = Field(0.5, gt=0, le=1)

    def params(self, seed: int) -> SamplingParams:
        """The :class:`SamplingParams` for one round."""
        return SamplingParams(n=self.n, temperature=self.temperature, top_p=self.top_p,
                              max_new_tokens=self.max_new_tokens, seed=seed, batch_size=self.batch_size)


class NamedConfig(Section):
    """A registry entry: ``name`` plus its hyperparameters as extra keys."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    name: str

    @property
    def hparams(self) -> dict[str, Any]:
        """Every key except ``name``."""
        return dict(self.model_extra or {})


class VerifierConfig(NamedConfig):
    """The answer checker (``math``, ``exact`` or a registered name); ``timeout`` seconds per answer."""

    name: str = "math"
    timeout: float = Field(5.0, gt=0)

    @model_validator(mode="after")
    def _check_name(self) -> VerifierConfig:
        if self.name not in available_verifiers():
            raise ValueError(f"unknown verifier {self.name!r}; registered: {', '.join(available_verifiers())}")
        try:
            check_verifier(self.name, **self.hparams)
        except TypeError as err:
            raise ValueError(str(err)) from None
        return self


class RewardConfig(NamedConfig):
    """The reward (any registered name, e.g. ``correctness``, ``laser``, ``kimi``) and its hyperparameters."""

    name: str = "correctness"

    @model_validator(mode="after")
    def _check_reward(self) -> RewardConfig:
        if self.name not in available_rewards():
            raise ValueError(f"unknown reward {self.name!r}; registered rewards: {', '.join(available_rewards())}")
        try:
            get_reward(self.name, **self.hparams)
        except TypeError as err:
            raise ValueError(str(err)) from None
        return self


class PairsConfig(Section):
    """The pair strategy and its options as extra keys (see :func:`prefopt.online.pairs.build_pairs`)."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    strategy: Literal[STRATEGIES] = "best_vs_worst"  # type: ignore[valid-type]

    @property
    def options(self) -> dict[str, Any]:
        """Every key except ``strategy``."""
        return dict(self.model_extra or {})

    @model_validator(mode="after")
    def _check_options(self) -> PairsConfig:
        valid = [n for n, p in inspect.signature(build_pairs).parameters.items() if p.kind is p.KEYWORD_ONLY]
        unknown = sorted(set(self.options) - set(valid))
        if unknown:
            raise ValueError(f"unknown pair option(s) {unknown}; valid: strategy, {', '.join(valid)}")
        build_pairs([], self.strategy, **self.options)  # the options' own range checks
        return self


class RoundTrainConfig(Section):
    """Per-round training (the output directory is the round's; ``max_steps`` overrides ``epochs``).

    ``save_steps``: checkpoint every N steps, so a run killed during training resumes from the last
    checkpoint instead of redoing the round's training.
    """

    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, gt=0)
    save_steps: int | None = Field(None, gt=0)
    batch_size: int = Field(4, gt=0)
    grad_accum: int = Field(1, gt=0)
    seed: int = 42
    max_length: int = Field(512, gt=0)
    max_prompt_length: int = Field(256, gt=0)


class EvalConfig(Section):
    """Greedy held-out evaluation after every round (and of the initial model)."""

    max_new_tokens: int = Field(256, gt=0)
    batch_size: int = Field(16, gt=0)

    def params(self) -> SamplingParams:
        """Greedy :class:`SamplingParams`."""
        return SamplingParams(greedy=True, max_new_tokens=self.max_new_tokens, batch_size=self.batch_size)


class RoundsRecipe(Section):
    """A complete ``prefopt rounds`` recipe."""

    run: RunConfig
    model: ModelConfig
    problems: ProblemsConfig
    rounds: RoundsConfig = Field(default_factory=RoundsConfig)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    verifier: VerifierConfig = Field(default_factory=VerifierConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    pairs: PairsConfig = Field(default_factory=PairsConfig)
    loss: LossConfig
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: RoundTrainConfig = Field(default_factory=RoundTrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @model_validator(mode="after")
    def _check_combinations(self) -> RoundsRecipe:
        check_reference(self.model, self.loss)
        if self.loss.reference_model:
            raise ValueError("loss.reference_model is not used by rounds; choose rounds.reference: initial | previous")
        if self.rounds.reference == "initial" and self.loss.reference == "adapter_disabled":
            raise ValueError(
                "loss.reference=adapter_disabled is the policy the round starts from, i.e. rounds.reference=previous; "
                "set rounds.reference=previous or loss.reference=precomputed"
            )
        if self.train.max_prompt_length >= self.train.max_length:
            raise ValueError("train.max_prompt_length must be smaller than train.max_length")
        return self


def load_rounds_recipe(path: str | Path, overrides: list[str] | None = None) -> RoundsRecipe:
    """Load a rounds recipe from YAML with ``section.key=value`` overrides applied."""
    raw = apply_overrides(load_yaml(path), list(overrides or []), source=str(path))
    try:
        return RoundsRecipe.model_validate(raw)
    except ValidationError as err:
        raise RecipeError(format_validation_error(err, str(path), RoundsRecipe, "rounds recipe")) from None
