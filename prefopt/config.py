"""Typed recipes: the YAML schema of ``prefopt train``, loaded with unknown keys rejected.

A recipe has the sections ``model -> data -> loss -> optim -> train -> logging`` (see
docs/recipes.md for every key). :func:`load_recipe` reads YAML, applies ``key.sub=value``
overrides (values parsed as YAML scalars) and validates everything that can be checked before a
model is loaded: unknown keys, loss names and hyperparameters (names, and values against the
constraints the loss declares: :mod:`prefopt.losses.hparams`), optimizer and scheduler names
(:mod:`prefopt.optim_names`), and incompatible combinations (a reference-free loss with reference
options, ``adapter_disabled`` without LoRA, QLoRA without CUDA). Problems raise
:class:`RecipeError` naming the file and the key. None of it imports torch or transformers (a
non-default ``model.device`` and ``model.qlora`` ask torch).

The sections are plain pydantic models so other recipe kinds (the online ``RoundsRecipe`` in
``prefopt/online/config.py``) can reuse them; :func:`load_yaml` and :func:`apply_overrides` are
shared too. A YAML file with a top-level ``rounds:`` key is a rounds recipe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from prefopt.data.formats import FORMATS
from prefopt.data.tokenize import Truncation
from prefopt.errors import UserError
from prefopt.losses import available_losses, get_loss
from prefopt.losses.hparams import HyperparameterError
from prefopt.optim_names import OPTIMIZERS, SCHEDULERS

#: How a loss that needs one gets its reference log-probs (``loss.reference``; the trainer's ``reference``).
ReferenceMode = Literal["precomputed", "live", "adapter_disabled"]
REFERENCE_MODES: tuple[str, ...] = get_args(ReferenceMode)
ROUNDS_KEY = "rounds"


class RecipeError(UserError):
    """A recipe that cannot be used; the message names the file, the key and what to do (exit status 2)."""

    exit_status = 2


class Section(BaseModel):
    """Base of every recipe section: unknown keys are errors, assignments are re-validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def to_yaml(self) -> str:
        """The section (a whole recipe: fully resolved, defaults filled in) as YAML, loss hyperparameters included."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


class LoraConfig(Section):
    """LoRA adapter settings, passed to ``peft.LoraConfig`` (task type causal LM)."""

    r: int = Field(16, gt=0)
    alpha: int = Field(32, gt=0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: str | list[str] = "all-linear"
    modules_to_save: list[str] | None = None


class ModelConfig(Section):
    """The policy model: a built-in name (``smollm2-135m-instruct``), a local path or a Hub id."""

    name_or_path: str
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    trust_remote_code: bool = False
    attn_implementation: str | None = None
    lora: LoraConfig | None = None
    qlora: bool = False
    # Where models that prefopt places itself go (rounds' policies, the HF engine): "auto" = the accelerator
    # when there is one; "cpu", "cuda:1", ... override. `prefopt train` accepts "auto" or "cpu" (use_cpu).
    device: str = "auto"

    @model_validator(mode="after")
    def _check_qlora(self) -> ModelConfig:
        if self.device != "auto":
            import torch  # only for a non-default device: --help and --dry-run stay free of torch

            try:
                torch.device(self.device)
            except (RuntimeError, TypeError):
                raise ValueError(f"model.device={self.device!r} is not a torch device ('auto', 'cpu', 'cuda:1', ...)") from None
        if self.qlora and self.lora is None:
            raise ValueError("model.qlora trains LoRA adapters on a 4-bit base; add a model.lora section")
        if self.qlora and not _cuda_available():
            raise ValueError(
                "model.qlora needs a CUDA GPU: bitsandbytes 4-bit layers have no CPU kernels. "
                "Set model.qlora=false (plain LoRA) to train on this machine"
            )
        return self


class DataConfig(Section):
    """Preference pairs: files (jsonl/json/parquet), saved datasets or Hub names; see docs/data.md."""

    train: str
    eval: str | None = None
    format: Literal[("auto", *FORMATS)] = "auto"  # type: ignore[valid-type]
    split: str | None = None
    eval_split: str | None = None
    max_length: int | None = Field(1024, gt=0)
    max_prompt_length: int | None = Field(512, gt=0)
    truncation: Truncation = "error"
    drop_invalid: bool = False
    num_proc: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _check_lengths(self) -> DataConfig:
        if self.max_length and self.max_prompt_length and self.max_prompt_length >= self.max_length:
            raise ValueError(
                f"data.max_prompt_length={self.max_prompt_length} leaves no room for the completion within "
                f"data.max_length={self.max_length}; lower it or raise max_length"
            )
        return self


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


class LossConfig(Section):
    """The loss (``name``), how its reference is obtained, and its hyperparameters as extra keys.

    ``reference``: ``precomputed`` (default for losses that need one: computed once before training
    and cached on disk), ``live`` (a frozen reference model runs every step) or
    ``adapter_disabled`` (the LoRA policy with adapters off; no second model). ``reference_model``
    names a different reference model (default: the initial policy). ``name: mix`` with a
    ``terms`` list combines registered losses with weights, ``name: wpo`` with a ``base`` loss
    WPO-weights it (``prefopt/losses/mix.py``, ``wpo.py``).
    """

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    name: str
    reference: ReferenceMode | None = None
    reference_model: str | None = None
    reference_batch_size: int = Field(8, gt=0)
    reference_cache_dir: str | None = None

    @property
    def hparams(self) -> dict[str, Any]:
        """The loss hyperparameters: every key that is not a declared field."""
        return dict(self.model_extra or {})

    @property
    def requires_reference(self) -> bool:
        """Whether the registered loss, with these hyperparameters, needs reference log-probs."""
        return get_loss(self.name, **self.hparams).requires_reference

    @model_validator(mode="after")
    def _check_loss(self) -> LossConfig:
        if self.name not in available_losses():
            raise ValueError(f"unknown loss {self.name!r}; registered losses: {', '.join(available_losses())}")
        try:
            loss_fn = get_loss(self.name, **self.hparams)  # checks every value; computes nothing
        except TypeError as err:
            raise ValueError(str(err)) from None
        except HyperparameterError as err:
            raise ValueError(f"loss.{err.key}: {err.name} {err.problem}") from None
        except ValueError as err:  # a loss's own check (mix terms, wpo's base): name the key it is about
            key = next((k for k in self.hparams if k in str(err)), None)
            raise ValueError(f"loss.{key}: {err}" if key else str(err)) from None
        if not loss_fn.requires_reference:
            given = [k for k in ("reference", "reference_model", "reference_cache_dir") if getattr(self, k)]
            if given:
                raise ValueError(
                    f"loss {self.name!r} is reference-free, so loss.{given[0]} does nothing; remove it "
                    f"(losses that use a reference: {', '.join(available_losses(requires_reference=True))})"
                )
        elif self.reference is None:
            self.reference = "precomputed"
        return self


class OptimConfig(Section):
    """Optimizer and schedule (names are ``transformers`` ``optim`` / ``lr_scheduler_type`` values).

    Names are checked at load against :mod:`prefopt.optim_names` (names transformers accepts; a
    test checks each against the installed release), without importing transformers.
    """

    lr: float = Field(1e-6, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    scheduler: str = "cosine"
    optimizer: str = "adamw_torch"
    max_grad_norm: float = Field(1.0, gt=0)

    @field_validator("scheduler", "optimizer")
    @classmethod
    def _check_name(cls, value: str, info: Any) -> str:
        names = SCHEDULERS if info.field_name == "scheduler" else OPTIMIZERS
        if value not in names:
            raise ValueError(f"must be one of {', '.join(repr(n) for n in names)}; got {value!r}")
        return value


class LoopConfig(Section):
    """The training loop shared by ``prefopt train`` and each round of ``prefopt rounds``.

    ``batch_size`` is per device; the global batch is ``batch_size * grad_accum * processes``.
    ``max_steps`` (when set) overrides ``epochs``. ``save_steps``: checkpoint every N steps (a killed
    run resumes from the last complete checkpoint). ``ddp_timeout``: the process group's collective
    timeout in seconds (TrainingArguments.ddp_timeout); the sharded reference precomputation must
    finish within it.
    """

    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, gt=0)
    batch_size: int = Field(2, gt=0)
    grad_accum: int = Field(1, gt=0)
    seed: int = 42
    save_steps: int | None = Field(None, gt=0)
    gradient_checkpointing: bool = False
    bf16: bool = False
    logps_chunk_size: int | None = Field(None, gt=0)
    dataloader_num_workers: int = Field(0, ge=0)
    ddp_timeout: int = Field(1800, gt=0)


class TrainConfig(LoopConfig):
    """``prefopt train``'s loop: :class:`LoopConfig` plus the output directory, evaluation, checkpoint limit and resume."""

    output_dir: str
    eval_batch_size: int | None = Field(None, gt=0)
    save_total_limit: int | None = Field(None, gt=0)
    eval_steps: int | None = Field(None, gt=0)
    resume: bool | str = False


class LoggingConfig(Section):
    """Where metrics go (``report_to``: ``none``, ``tensorboard``, ``wandb``, ... as in ``transformers``)."""

    report_to: str | list[str] = "none"
    logging_steps: int = Field(10, gt=0)
    run_name: str | None = None


class Recipe(Section):
    """A complete ``prefopt train`` recipe."""

    model: ModelConfig
    data: DataConfig
    loss: LossConfig
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @model_validator(mode="after")
    def _check_combinations(self) -> Recipe:
        check_reference(self.model, self.loss)
        if self.train.eval_steps and not self.data.eval:
            raise ValueError("train.eval_steps is set but data.eval is not; add data.eval or drop eval_steps")
        return self


def check_reference(model: ModelConfig, loss: LossConfig) -> None:
    """Reject reference settings the model cannot provide (shared with other recipe kinds)."""
    if loss.reference == "adapter_disabled":
        if model.lora is None:
            raise ValueError(
                "loss.reference=adapter_disabled uses the policy with its LoRA adapters switched off, but "
                "model.lora is not set; add model.lora or use reference: precomputed | live"
            )
        if loss.reference_model:
            raise ValueError("loss.reference_model cannot be used with reference=adapter_disabled (the base model is the reference)")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or bad YAML raises :class:`RecipeError`."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: no such recipe file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise RecipeError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe must be a YAML mapping of sections, got {type(raw).__name__}")
    return raw


def apply_overrides(raw: dict[str, Any], overrides: list[str], source: str = "<overrides>") -> dict[str, Any]:
    """Apply ``section.key=value`` overrides in place; values are parsed as YAML scalars/lists.

    ``train.max_steps=2``, ``loss.beta=0.2``, ``model.lora=null``, ``logging.report_to=[tensorboard]``.
    Intermediate mappings are created when missing (``model.lora.r=8`` on a recipe without LoRA).
    """
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise RecipeError(f"{source}: override {item!r} is not of the form section.key=value")
        try:
            value = yaml.safe_load(text) if text else ""
        except yaml.YAMLError as err:
            raise RecipeError(f"{source}: override {item!r}: the value is not valid YAML ({err})") from None
        *parents, leaf = key.split(".")
        node = raw
        for depth, part in enumerate(parents):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(parents[: depth + 1])
                raise RecipeError(f"{source}: override {item!r}: {where} is a value, not a section")
            node = child
        node[leaf] = value
    return raw


def format_validation_error(
    err: ValidationError, source: str, root: type[BaseModel] | None = None, kind: str = "recipe"
) -> str:
    """One line per problem: ``file: section.key: message`` (pydantic's noise trimmed).

    ``root`` is the validated model (default :class:`Recipe`); unknown keys list its valid keys.
    """
    root = root or Recipe
    lines = [f"{source}: invalid {kind}:"]
    for problem in err.errors():
        where = ".".join(str(p) for p in problem["loc"]) or "(top level)"
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            section = problem["loc"][:-1]
            message = f"unknown key; valid keys here: {', '.join(_valid_keys(root, section))}"
        elif problem["type"] == "literal_error":
            message = message.replace("Input should be", "must be one of")
        if message.startswith(tuple(f"{section}." for section in root.model_fields)):
            lines.append(f"  {message}")  # the message already names its key (cross-field checks)
        else:
            lines.append(f"  {where}: {message}")
    return "\n".join(lines)


def _valid_keys(root: type[BaseModel], section: tuple) -> list[str]:
    model = root
    for part in section:
        annotation = model.model_fields[str(part)].annotation
        model = next((a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type)
                      and issubclass(a, BaseModel)), model)
    return list(model.model_fields)


def validate_recipe(raw: dict[str, Any], source: str = "<recipe>") -> Recipe:
    """Validate a recipe mapping; problems raise :class:`RecipeError` naming ``source`` and the keys."""
    if ROUNDS_KEY in raw:
        raise RecipeError(f"{source}: has a '{ROUNDS_KEY}:' section, so it is a rounds recipe; run it with 'prefopt rounds'")
    try:
        return Recipe.model_validate(raw)
    except ValidationError as err:
        raise RecipeError(format_validation_error(err, source)) from None


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Load a ``prefopt train`` recipe from YAML with ``key.sub=value`` overrides applied."""
    raw = apply_overrides(load_yaml(path), list(overrides or []), source=str(path))
    return validate_recipe(raw, source=str(path))
