"""``RoundsRecipe``: the YAML schema of ``prefopt rounds`` (semi-on-policy preference rounds).

Sections, top to bottom: ``run`` (name and output root) → ``model`` → ``problems`` (the training
problems and the instruction) → ``rounds`` (count, prompts per round, reference choice) → ``sampler`` →
``verifier`` → ``reward`` → ``pairs`` → ``loss`` → ``optim`` → ``train`` → ``eval`` (the evaluation
sets) → ``logging``.
``model``, ``loss``, ``optim`` and ``logging`` are the ``prefopt train`` sections
(:mod:`prefopt.config`); the others are defined here. Unknown keys are errors; the reward, pair
strategy and verifier names and hyperparameters are checked when the recipe loads, before any model.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field, ValidationError, model_validator

from prefopt.config import (
    LoggingConfig,
    LoopConfig,
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
from prefopt.online.answers import AnswerFormat, check_answer_format
from prefopt.online.pairs import available_pair_strategies, check_pair_options
from prefopt.online.recipe_checks import check_reward_fits
from prefopt.online.rewards import available_rewards, get_reward
from prefopt.online.trackers import check_trackers
from prefopt.online.verifier import available_verifiers, check_verifier
from prefopt.sampling import SamplingParams
from prefopt.verification import Truncated


class RunConfig(Section):
    """Where the run lives: ``<output_root>/<name>/``."""

    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    output_root: str = "runs"

    @property
    def directory(self) -> Path:
        """The run directory."""
        return Path(self.output_root) / self.name


class ProblemsConfig(Section):
    """The training problems: a local file (jsonl/json/parquet) or a Hub dataset name.

    ``instruction`` is appended to every question, in training and evaluation (the answer format
    the verifier expects). ``id_field: null`` numbers rows. The field names and ``config_name`` are
    also the defaults of every evaluation set (``eval.sets``).
    """

    train: str
    train_split: str = "train"
    config_name: str | None = None
    question_field: str = "question"
    answer_field: str = "answer"
    id_field: str | None = "id"
    instruction: str = ""

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        moved = sorted(k for k in ("heldout", "heldout_split", "heldout_limit") if isinstance(data, dict) and k in data)
        if moved:
            raise ValueError(f"{', '.join(moved)} moved to eval.sets: a mapping of evaluation sets, e.g. "
                             "eval.sets: {test: {path: data/arithmetic/test.jsonl, split: test, limit: 100}}")
        return data


class RoundsConfig(Section):
    """The loop: ``count`` rounds, ``prompts_per_round`` training prompts each.

    ``partition: disjoint`` gives every round its own slice of the (seed-shuffled) training
    problems (DNO); ``epochs`` takes each round's slice from a cycle of reshuffled passes over the
    training set, so problems come back once it is exhausted (HAPO's several epochs);
    ``resample`` draws each round's prompts independently. ``reference``:
    ``initial`` (the starting model throughout) or ``previous`` (the policy the round starts from,
    i.e. the previous round's result; DNO's reference reset).
    """

    count: int = Field(3, gt=0)
    prompts_per_round: int = Field(64, gt=0)
    partition: Literal["disjoint", "epochs", "resample"] = "disjoint"
    reference: Literal["initial", "previous"] = "initial"
    seed: int = 0


class SamplerConfig(Section):
    """Rollout sampling: ``engine`` ``auto`` (vLLM on CUDA if installed, else HF), ``hf`` or ``vllm``.

    ``tensor_parallel_size`` (vLLM only): GPUs per engine, for a policy that does not fit one GPU.
    Under ``accelerate launch`` every group of that many processes runs one engine and the prompts
    are sharded over the groups; the number of processes must be a multiple of it.
    """

    engine: Literal["auto", "hf", "vllm"] = "auto"
    n: int = Field(4, gt=0)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(256, gt=0)
    batch_size: int = Field(16, gt=0)
    gpu_memory_utilization: float = Field(0.5, gt=0, le=1)
    tensor_parallel_size: int = Field(1, gt=0)

    @model_validator(mode="after")
    def _check_tensor_parallel(self) -> SamplerConfig:
        if self.tensor_parallel_size > 1 and self.engine == "hf":
            raise ValueError("sampler.tensor_parallel_size > 1 needs the vLLM engine; set sampler.engine=vllm "
                             "(or auto on a GPU machine) or tensor_parallel_size=1")
        return self

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
    """The answer checker (``math``, ``exact`` or a registered name); ``timeout`` seconds per answer.

    ``truncated``: ``incorrect`` (default) counts a rollout cut at the generation limit as wrong
    without checking it (status ``truncated``); ``verify`` checks it like a finished one.
    ``format`` / ``format_pattern``: the answer form the instruction asks for (``any`` = ``\\boxed{}``
    or ``#### N``, ``boxed``, ``hash``, or ``pattern`` with a regular expression); with "finished,
    not truncated" it is the format score of every reward that uses well-formedness.
    """

    name: str = "math"
    timeout: float = Field(5.0, gt=0)
    truncated: Truncated = "incorrect"
    format: AnswerFormat = "any"
    format_pattern: str | None = None

    @model_validator(mode="after")
    def _check_name(self) -> VerifierConfig:
        try:
            check_answer_format(self.format, self.format_pattern)
        except ValueError as err:
            raise ValueError(f"verifier.{err}") from None
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
    """The pair strategy (a registered name) and its options as extra keys (see :mod:`prefopt.online.pairs`).

    Options the chosen strategy does not use are rejected at load, naming them.
    """

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    strategy: str = "best_vs_worst"

    @property
    def options(self) -> dict[str, Any]:
        """Every key except ``strategy``."""
        return dict(self.model_extra or {})

    @model_validator(mode="after")
    def _check_options(self) -> PairsConfig:
        if self.strategy not in available_pair_strategies():
            raise ValueError(
                f"unknown pair strategy {self.strategy!r}; registered: {', '.join(available_pair_strategies())}"
            )
        check_pair_options(self.strategy, self.options)
        return self


class RoundTrainConfig(LoopConfig):
    """Per-round training: ``prefopt train``'s loop (:class:`~prefopt.config.LoopConfig`: bf16, gradient
    checkpointing, the log-prob chunk size, ...) plus the pairs' token limits; the output directory
    is the round's. ``save_steps`` lets a run killed during training resume from the last checkpoint
    instead of redoing the round's training.
    """

    batch_size: int = Field(4, gt=0)
    max_length: int = Field(512, gt=0)
    max_prompt_length: int = Field(256, gt=0)


class EvalSetConfig(Section):
    """One evaluation set: a local file or Hub dataset (``split``, ``limit``: its first N problems).

    ``question_field``, ``answer_field``, ``id_field`` and ``config_name`` default to the
    ``problems`` section's (filled in when the recipe loads, so ``--dry-run`` shows them); set them
    here when this set's format differs from the training problems'.
    """

    FORMAT_KEYS: ClassVar[tuple[str, ...]] = ("config_name", "question_field", "answer_field", "id_field")

    path: str
    split: str = "test"
    limit: int | None = Field(None, gt=0)
    config_name: str | None = None
    question_field: str | None = None
    answer_field: str | None = None
    id_field: str | None = None

    def inherit(self, problems: ProblemsConfig) -> None:
        """Take the format fields this set does not set from ``problems``."""
        for key in self.FORMAT_KEYS:
            if key not in self.model_fields_set:
                setattr(self, key, getattr(problems, key))

    def source(self) -> dict[str, Any]:
        """The :func:`~prefopt.online.problems.load_problems` arguments of this set."""
        return {"source": self.path, "split": self.split, "limit": self.limit,
                **{key: getattr(self, key) for key in self.FORMAT_KEYS}}


class EvalConfig(Section):
    """Greedy evaluation after every round (and of the initial model) on each set of ``sets``.

    ``sets`` maps a name (its row group in ``summary.md``, its line in the plot, its tracker group)
    to an :class:`EvalSetConfig`. The protocol (docs/quickstart.md): report *test* sets; choose
    recipes on *validation* sets (run with ``eval.sets`` overridden), never on the test sets.
    """

    sets: dict[str, EvalSetConfig] = Field(min_length=1)
    max_new_tokens: int = Field(256, gt=0)
    batch_size: int = Field(16, gt=0)

    @model_validator(mode="after")
    def _check_names(self) -> EvalConfig:
        bad = [name for name in self.sets if not re.fullmatch(r"[A-Za-z0-9._-]+", name)]
        if bad:
            raise ValueError(f"eval.sets: set names must be letters, digits, '.', '_' or '-'; got {bad}")
        return self

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
    eval: EvalConfig
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @model_validator(mode="after")
    def _check_combinations(self) -> RoundsRecipe:
        for eval_set in self.eval.sets.values():
            eval_set.inherit(self.problems)
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
        if self.model.qlora:
            raise ValueError(
                "model.qlora is not supported by rounds (the policy is rebuilt from an unquantized base each "
                "round); set model.qlora=false and train LoRA adapters (model.lora)"
            )
        check_reward_fits(self)
        check_trackers(self.logging.report_to)
        return self


def load_rounds_recipe(path: str | Path, overrides: list[str] | None = None) -> RoundsRecipe:
    """Load a rounds recipe from YAML with ``section.key=value`` overrides applied."""
    raw = apply_overrides(load_yaml(path), list(overrides or []), source=str(path))
    try:
        return RoundsRecipe.model_validate(raw)
    except ValidationError as err:
        raise RecipeError(format_validation_error(err, str(path), RoundsRecipe, "rounds recipe")) from None
