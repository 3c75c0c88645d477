"""``train(recipe)``: everything ``prefopt train`` does, as one function.

Load the tokenizer and model (LoRA/QLoRA through peft), load + validate + tokenize the pairs, build
a :class:`PreferenceTrainer`, train (resuming from the latest checkpoint when asked), and save the
final model or adapter (safetensors), the tokenizer, the resolved recipe and the train metrics to
``train.output_dir``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase, set_seed

from prefopt.config import DataConfig, ModelConfig, OptimConfig, Recipe
from prefopt.data import load_pairs, tokenize_pairs
from prefopt.losses import get_loss
from prefopt.models import load_model, load_tokenizer
from prefopt.train.checkpoints import last_complete_checkpoint
from prefopt.train.trainer import PreferenceConfig, PreferenceTrainer

logger = logging.getLogger(__name__)
RECIPE_FILE = "recipe.yaml"


@dataclass
class TrainResult:
    """What :func:`train` produced: where it saved, how far it got, the final metrics and the model."""

    output_dir: Path
    global_step: int
    metrics: dict[str, float]
    model: nn.Module
    tokenizer: PreTrainedTokenizerBase


def build_model(config: ModelConfig) -> PreTrainedModel | nn.Module:
    """Load the policy; wrap it with LoRA adapters (on a 4-bit base for QLoRA) when configured."""
    quantization = device_map = None
    if config.qlora:
        from transformers import BitsAndBytesConfig  # needs bitsandbytes: pip install 'prefopt[gpu]'

        quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                          bnb_4bit_compute_dtype="bfloat16")
        # 4-bit weights cannot be moved after loading: put each process's copy on its own GPU (DDP)
        device_map = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    model = load_model(config.name_or_path, dtype=config.dtype, trust_remote_code=config.trust_remote_code,
                       attn_implementation=config.attn_implementation, quantization=quantization, device_map=device_map)
    return add_lora(model, config)


def add_lora(model: PreTrainedModel, config: ModelConfig) -> PreTrainedModel | nn.Module:
    """Wrap ``model`` with fresh LoRA adapters as ``config.lora`` says (unchanged when it is ``None``)."""
    if config.lora is None:
        return model
    import peft

    if config.qlora:
        model = peft.prepare_model_for_kbit_training(model)
    lora = peft.LoraConfig(r=config.lora.r, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
                           target_modules=config.lora.target_modules, modules_to_save=config.lora.modules_to_save,
                           task_type="CAUSAL_LM")
    return peft.get_peft_model(model, lora)


def build_dataset(config: DataConfig, tokenizer: PreTrainedTokenizerBase, split: str) -> datasets.Dataset:
    """Load, validate and tokenize ``config.train`` (``split="train"``) or ``config.eval``."""
    source, source_split = (config.train, config.split) if split == "train" else (config.eval, config.eval_split)
    pairs = load_pairs(source, split=source_split, format=config.format, drop_invalid=config.drop_invalid)
    tokenized, stats = tokenize_pairs(pairs, tokenizer, max_length=config.max_length,
                                      max_prompt_length=config.max_prompt_length, truncation=config.truncation,
                                      num_proc=config.num_proc)
    logger.info("%s pairs (%s): %s", split, source, stats)
    return tokenized


def processes_without_accelerator() -> bool:
    """Whether this is one of several launched processes (``accelerate launch``/``torchrun``) with no accelerator.

    ``transformers`` then finds no device backend and, unless told ``use_cpu``, silently runs every
    process as an independent single-process job; with ``use_cpu`` the processes train together
    over gloo (CPU data parallelism, as in docs/distributed.md).
    """
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.accelerator.is_available()


def optim_arguments(optim: OptimConfig) -> dict[str, Any]:
    """The ``TrainingArguments`` keywords of a recipe's ``optim`` section (``warmup_steps`` < 1 is a ratio)."""
    return dict(learning_rate=optim.lr, weight_decay=optim.weight_decay, warmup_steps=optim.warmup_ratio,
                lr_scheduler_type=optim.scheduler, optim=optim.optimizer, max_grad_norm=optim.max_grad_norm)


def training_arguments(recipe: Recipe) -> PreferenceConfig:
    """Map the recipe's optim/train/logging/loss settings onto :class:`PreferenceConfig`."""
    optim, run, log, loss = recipe.optim, recipe.train, recipe.logging, recipe.loss
    has_eval = recipe.data.eval is not None
    return PreferenceConfig(
        output_dir=run.output_dir,
        num_train_epochs=run.epochs,
        max_steps=run.max_steps or -1,
        per_device_train_batch_size=run.batch_size,
        per_device_eval_batch_size=run.eval_batch_size or run.batch_size,
        gradient_accumulation_steps=run.grad_accum,
        **optim_arguments(optim),
        seed=run.seed,
        save_strategy="steps" if run.save_steps else "no",
        save_steps=run.save_steps or 500,
        save_total_limit=run.save_total_limit,
        eval_strategy=("steps" if run.eval_steps else "epoch") if has_eval else "no",
        eval_steps=run.eval_steps,
        activation_checkpointing=run.gradient_checkpointing,
        bf16=run.bf16,
        dataloader_num_workers=run.dataloader_num_workers,
        logging_steps=log.logging_steps,
        report_to=log.report_to,
        run_name=log.run_name,
        reference_batch_size=loss.reference_batch_size,
        reference_cache_dir=loss.reference_cache_dir,
        logps_chunk_size=run.logps_chunk_size,
        use_cpu=processes_without_accelerator(),
    )


def resume_checkpoint(recipe: Recipe) -> str | None:
    """``train.resume``: a checkpoint path, or ``true`` for the latest one in ``output_dir`` (none yet: start fresh)."""
    resume = recipe.train.resume
    if isinstance(resume, str):
        if not Path(resume).is_dir():
            raise FileNotFoundError(f"train.resume={resume!r}: no such checkpoint directory")
        return resume
    if resume and Path(recipe.train.output_dir).is_dir():
        last = last_complete_checkpoint(recipe.train.output_dir)
        if last is None:
            logger.info("train.resume: no checkpoint in %s yet; starting from scratch", recipe.train.output_dir)
        return last
    return None


def train(recipe: Recipe, **trainer_kwargs: Any) -> TrainResult:
    """Run a recipe end to end; ``trainer_kwargs`` (e.g. ``callbacks=[...]``) go to the trainer."""
    set_seed(recipe.train.seed)
    tokenizer = load_tokenizer(recipe.model.name_or_path, trust_remote_code=recipe.model.trust_remote_code)
    model = build_model(recipe.model)
    train_data = build_dataset(recipe.data, tokenizer, "train")
    eval_data = build_dataset(recipe.data, tokenizer, "eval") if recipe.data.eval else None
    loss = get_loss(recipe.loss.name, **recipe.loss.hparams)
    ref_model = None
    if recipe.loss.reference == "live" or recipe.loss.reference_model:
        ref_model = load_model(recipe.loss.reference_model or recipe.model.name_or_path, dtype=recipe.model.dtype,
                               trust_remote_code=recipe.model.trust_remote_code,
                               attn_implementation=recipe.model.attn_implementation)
    trainer = PreferenceTrainer(model, training_arguments(recipe), loss=loss, train_dataset=train_data,
                                eval_dataset=eval_data, processing_class=tokenizer, ref_model=ref_model,
                                reference=recipe.loss.reference, **trainer_kwargs)
    del ref_model  # a precomputed reference is no longer needed; a live one is held by the trainer
    output = trainer.train(resume_from_checkpoint=resume_checkpoint(recipe))
    metrics = dict(output.metrics)
    if eval_data is not None:
        metrics.update(trainer.evaluate())
    out_dir = Path(recipe.train.output_dir)
    trainer.save_model(str(out_dir))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(out_dir)
        (out_dir / RECIPE_FILE).write_text(recipe.to_yaml())
        trainer.save_metrics("all", metrics)
        trainer.save_state()
    return TrainResult(out_dir, trainer.state.global_step, metrics, trainer.model, tokenizer)
