"""``PreferenceTrainer``: a ``transformers.Trainer`` whose loss is any registered prefopt loss.

``compute_loss`` runs :func:`prefopt.logps.pair_logps` (one concatenated forward for chosen and
rejected) and the bound loss, and returns the mean of the per-example losses. The logged metrics
are the loss's own ``LossOutput.metrics`` (TRL's names plus length metrics, computed once by the
loss from the quantities it compares); they are stored per step and averaged over the logging interval in
:meth:`PreferenceTrainer.log` (the pattern TRL's trainers use), with an ``eval_`` prefix during
evaluation.

Reference log-probs, for losses that need them (``loss.requires_reference``):

- ``"precomputed"`` (default): computed once before training by :mod:`prefopt.reference` and
  cached on disk; no reference model stays in memory. The reference is ``ref_model`` if given,
  else the initial policy (with PEFT adapters disabled for a PEFT model).
- ``"live"``: ``ref_model`` (or a frozen copy of the initial policy) runs under ``no_grad`` every step.
- ``"adapter_disabled"``: the PEFT policy with its adapters switched off, every step.

Reference-free losses (SimPO) skip all of it.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase, Trainer, TrainingArguments
from transformers.trainer import TRAINING_ARGS_NAME
from trl.trainer.utils import disable_dropout_in_model

from prefopt.config import REFERENCE_MODES, ReferenceMode
from prefopt.data import PairCollator, load_pairs, tokenize_pairs
from prefopt.data.tokenize import Truncation
from prefopt.logps import ADAPTER_DISABLED, pair_logps, reference_pair_logps
from prefopt.losses import LossFn, LossOutput, PairLogps
from prefopt.reference import Processes, add_reference_logps


@dataclass
class PreferenceConfig(TrainingArguments):
    """``TrainingArguments`` plus the preference-specific settings.

    ``remove_unused_columns`` defaults to ``False``: the pair collator needs the token columns.
    ``max_length`` / ``max_prompt_length`` / ``truncation`` apply only when raw (untokenized) pairs
    are passed to :class:`PreferenceTrainer`.
    """

    remove_unused_columns: bool = False
    max_length: int | None = field(default=1024, metadata={"help": "prompt + completion token budget (raw pairs)"})
    max_prompt_length: int | None = field(default=512, metadata={"help": "prompt token budget (raw pairs)"})
    truncation: str = field(default="error", metadata={"help": "error | drop | keep_start (raw pairs)"})
    reference_batch_size: int = field(default=8, metadata={"help": "pairs per forward when precomputing the reference"})
    reference_cache_dir: str | None = field(default=None, metadata={"help": "reference cache (default ~/.cache/prefopt)"})
    logps_chunk_size: int | None = field(default=None, metadata={"help": "tokens per output-head chunk (None: automatic)"})
    disable_dropout: bool = field(default=True, metadata={"help": "set every dropout probability to 0"})


def _setting(args: TrainingArguments, name: str) -> Any:
    """A :class:`PreferenceConfig` field of ``args``, or its default when ``args`` is plain ``TrainingArguments``."""
    return getattr(args, name, PreferenceConfig.__dataclass_fields__[name].default)


def _is_peft(model: nn.Module) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


def resolve_reference(loss: LossFn, model: nn.Module, reference: str | None, ref_model: nn.Module | None) -> str | None:
    """Validate the reference settings for ``loss`` and return the mode (``None``: reference-free)."""
    if not loss.requires_reference:
        if reference is not None or ref_model is not None:
            raise ValueError(f"{loss!r} is reference-free; do not pass reference= or ref_model=")
        return None
    reference = reference or "precomputed"
    if reference not in REFERENCE_MODES:
        raise ValueError(f"reference must be one of {REFERENCE_MODES}, got {reference!r}")
    if reference == "adapter_disabled":
        if not _is_peft(model):
            raise ValueError("reference='adapter_disabled' needs a PEFT model (peft.get_peft_model); "
                             "use 'precomputed' or 'live' for full fine-tuning")
        if ref_model is not None:
            raise ValueError("reference='adapter_disabled' uses the policy's base model; do not pass ref_model")
    return reference


class PreferenceTrainer(Trainer):
    """Preference optimization with any prefopt loss, on top of ``transformers.Trainer``.

    Args:
        model: the policy (a causal LM, optionally a ``peft.PeftModel``).
        args: :class:`PreferenceConfig` (or plain ``TrainingArguments``; then the raw-pair
            tokenization and reference defaults of ``PreferenceConfig`` apply).
        loss: a bound loss from :func:`prefopt.losses.get_loss`.
        train_dataset, eval_dataset: tokenized pairs (``prompt_ids``/``chosen_ids``/``rejected_ids``)
            or raw pairs (``prompt``/``chosen``/``rejected``; validated and tokenized here).
        processing_class: the tokenizer (pad id for batching; tokenization of raw pairs).
        ref_model: a reference model for ``"precomputed"`` or ``"live"`` (default: the initial policy).
        reference: ``"precomputed"`` (default), ``"live"`` or ``"adapter_disabled"``; must be left
            ``None`` for reference-free losses.
        data_collator: defaults to :class:`prefopt.data.PairCollator`.
        **kwargs: passed to ``transformers.Trainer`` (``callbacks``, ``optimizers``, ...).
    """

    # compute_loss returns a per-micro-batch mean; Trainer divides it by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        model: nn.Module,
        args: TrainingArguments | None = None,
        *,
        loss: LossFn,
        train_dataset: datasets.Dataset | None = None,
        eval_dataset: datasets.Dataset | dict[str, datasets.Dataset] | None = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        ref_model: nn.Module | None = None,
        reference: ReferenceMode | None = None,
        data_collator: Any = None,
        **kwargs: Any,
    ) -> None:
        args = args if args is not None else PreferenceConfig(output_dir="prefopt-output")
        if args.remove_unused_columns:
            raise ValueError("PreferenceTrainer needs remove_unused_columns=False (the collator reads token columns)")
        if processing_class is None and data_collator is None:
            raise ValueError("pass processing_class=<tokenizer> (or a data_collator)")
        self.loss = loss
        self.reference = resolve_reference(loss, model, reference, ref_model)
        if _setting(args, "disable_dropout"):
            disable_dropout_in_model(model)
        train_dataset = self._prepare_pairs(train_dataset, processing_class, args, "train")
        if isinstance(eval_dataset, dict):
            eval_dataset = {k: self._prepare_pairs(v, processing_class, args, k) for k, v in eval_dataset.items()}
        else:
            eval_dataset = self._prepare_pairs(eval_dataset, processing_class, args, "eval")
        if data_collator is None:
            pad = processing_class.pad_token_id if processing_class.pad_token_id is not None else processing_class.eos_token_id
            data_collator = PairCollator(pad)
        super().__init__(model=model, args=args, data_collator=data_collator, train_dataset=train_dataset,
                         eval_dataset=eval_dataset, processing_class=processing_class, **kwargs)
        self.model_accepts_loss_kwargs = False
        self._metrics: dict[str, dict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        self.ref_model = self._setup_reference(ref_model)

    @staticmethod
    def _prepare_pairs(
        dataset: datasets.Dataset | None, tokenizer: PreTrainedTokenizerBase | None, args: TrainingArguments, split: str
    ) -> datasets.Dataset | None:
        """Tokenized pairs pass through; raw pairs are validated (row-level errors) and tokenized."""
        if dataset is None or "prompt_ids" in dataset.column_names:
            return dataset
        if tokenizer is None:
            raise ValueError(f"{split} dataset is not tokenized (no 'prompt_ids'); pass processing_class=<tokenizer>")
        truncation: Truncation = _setting(args, "truncation")
        tokenized, _ = tokenize_pairs(
            load_pairs(dataset), tokenizer, max_length=_setting(args, "max_length"),
            max_prompt_length=_setting(args, "max_prompt_length"), truncation=truncation,
        )
        return tokenized

    def _setup_reference(self, ref_model: nn.Module | None) -> nn.Module | None:
        """Precompute the cached reference columns, or prepare the live reference model."""
        if self.reference == "precomputed":
            source = ref_model if ref_model is not None else self.model
            disable = ref_model is None and _is_peft(self.model)
            source.to(self.args.device)
            self.train_dataset = self._add_reference(self.train_dataset, source, disable)
            if isinstance(self.eval_dataset, dict):
                self.eval_dataset = {k: self._add_reference(v, source, disable) for k, v in self.eval_dataset.items()}
            else:
                self.eval_dataset = self._add_reference(self.eval_dataset, source, disable)
            return None
        if self.reference == "live":
            if ref_model is None:
                if _is_peft(self.model):
                    raise ValueError("reference='live' with a PEFT policy: pass ref_model, or use 'adapter_disabled'")
                ref_model = copy.deepcopy(self.model)
            ref_model.eval().requires_grad_(False)
            if _setting(self.args, "disable_dropout"):
                disable_dropout_in_model(ref_model)
            return self.accelerator.prepare_model(ref_model, evaluation_mode=True)
        return None

    def _add_reference(self, dataset: datasets.Dataset | None, model: nn.Module, disable_adapter: bool) -> datasets.Dataset | None:
        """Precompute ``dataset``'s reference columns: shared across the processes, in the policy's autocast dtype."""
        if dataset is None:
            return None
        return add_reference_logps(
            dataset, model, collator=self.data_collator, batch_size=_setting(self.args, "reference_batch_size"),
            cache_dir=_setting(self.args, "reference_cache_dir"), disable_adapter=disable_adapter,
            chunk_size=_setting(self.args, "logps_chunk_size"), progress=self.is_world_process_zero(),
            autocast_dtype=self._autocast_dtype(),
            processes=Processes(self.accelerator.process_index, self.accelerator.num_processes),
        )

    def _autocast_dtype(self) -> torch.dtype | None:
        """The dtype accelerate autocasts the policy's forward to (``None`` without native mixed precision)."""
        if not self.accelerator.native_amp:
            return None
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(str(self.accelerator.mixed_precision))

    def _with_reference(self, model: nn.Module, inputs: dict[str, Any]) -> dict[str, Any]:
        """``inputs`` plus ``ref_chosen``/``ref_rejected`` from the live model or the adapter-disabled policy.

        The adapter-disabled reference runs on the unwrapped PEFT model: a DDP wrapper has no
        ``disable_adapter``, and a ``no_grad`` forward needs no gradient synchronization.
        """
        if self.reference not in ("live", "adapter_disabled"):
            return inputs  # precomputed: already in the batch; reference-free: none
        chunk_size = _setting(self.args, "logps_chunk_size")
        if self.reference == "live":
            ref_chosen, ref_rejected = reference_pair_logps(self.ref_model, inputs, chunk_size=chunk_size)
        else:
            policy = self.accelerator.unwrap_model(model)
            ref_chosen, ref_rejected = reference_pair_logps(ADAPTER_DISABLED, inputs, policy=policy, chunk_size=chunk_size)
        return {**inputs, "ref_chosen": ref_chosen, "ref_rejected": ref_rejected}

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mean per-example loss of the batch; stores the batch's metrics for :meth:`log`."""
        inputs = self._with_reference(model, inputs)
        logps = pair_logps(
            model, inputs, chunk_size=_setting(self.args, "logps_chunk_size"),
            log_sum_sq=getattr(self.loss, "needs_log_sum_sq", False),
        )
        output = self.loss(logps)
        loss = output.loss.mean()
        self._store_metrics(logps, output, "train" if model.training else "eval")
        if return_outputs:
            return loss, {"chosen_rewards": output.chosen_rewards, "rejected_rewards": output.rejected_rewards}
        return loss

    def _store_metrics(self, logps: PairLogps, output: LossOutput, mode: str) -> None:
        """Store this step's loss metrics, averaged over all processes' pairs.

        The metrics are the loss's own (:func:`prefopt.losses.common.finish` computes the standard
        ones once, from the quantities the loss compares); nothing is recomputed here. Each
        process's batch means are weighted by its number of pairs, so an uneven last batch
        averages exactly.
        """
        if not output.metrics:
            return
        pairs = float(logps.chosen.shape[0])
        row = torch.tensor([pairs, *(pairs * float(v) for v in output.metrics.values())], device=logps.chosen.device)
        totals = self.accelerator.gather(row[None]).reshape(-1, len(row)).sum(0)
        for name, value in zip(output.metrics, (totals[1:] / totals[0]).tolist()):
            self._metrics[mode][name].append(value)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Save as ``Trainer`` does, but the training arguments as JSON instead of a pickled ``training_args.bin``."""
        super()._save(output_dir, state_dict)
        directory = Path(output_dir or self.args.output_dir)
        if self.args.should_save and (directory / TRAINING_ARGS_NAME).is_file():
            (directory / TRAINING_ARGS_NAME).unlink()
            (directory / "training_args.json").write_text(self.args.to_json_string())

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the stored metrics, averaged over the steps since the last log, then clear them.

        Evaluation logs are recognised by their ``<prefix>_runtime`` key (``eval_runtime`` by
        default); their metrics get the same prefix (``eval_rewards/margins``). ``logs`` is updated
        in place, so :meth:`evaluate` returns these metrics too (as TRL's trainers do).
        """
        prefix = next((k.removesuffix("_runtime") for k in logs if k.endswith("_runtime") and k != "train_runtime"), None)
        mode = "train" if prefix is None else "eval"
        metrics = {name: sum(values) / len(values) for name, values in self._metrics[mode].items() if values}
        if prefix is not None:
            metrics = {f"{prefix}_{name}": value for name, value in metrics.items()}
        logs.update(metrics)
        super().log(logs, start_time)
        self._metrics[mode].clear()

    def prediction_step(
        self, model: nn.Module, inputs: dict[str, Any], prediction_loss_only: bool, ignore_keys: list[str] | None = None
    ) -> tuple[torch.Tensor, None, None]:
        """Evaluation step: the preference loss only (there are no labels, and logits are never built)."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None
