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

from prefopt.config import (
    DataConfig,
    LoggingConfig,
    LoopConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    Recipe,
    RecipeError,
)
from prefopt.data import load_pairs, tokenize_pairs
from prefopt.losses import get_loss
from prefopt.models import load_model, load_tokenizer
from prefopt.train.checkpoints import last_complete_checkpoint
from prefopt.train.compat import checkpointing_arguments
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
    """Load the policy; wrap it with LoRA adapters (on a 4-bit base for QLoRA) when configured.

    The model stays on the CPU (``device=None``): the trainer places it, and under DeepSpeed ZeRO-3
    or FSDP's CPU-RAM-efficient loading ``from_pretrained`` has already partitioned it — which only
    happens when the ``TrainingArguments`` exist before this call (:func:`train` builds them first).
    """
    quantization = device_map = None
    if config.qlora:
        from transformers import BitsAndBytesConfig  # needs bitsandbytes: pip install 'prefopt[gpu]'

        # the 4-bit matmuls compute in the recipe's 16-bit dtype (bfloat16 for float32/auto recipes)
        compute = config.dtype if config.dtype in ("bfloat16", "float16") else "bfloat16"
        quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                          bnb_4bit_compute_dtype=compute)
        # 4-bit weights cannot be moved after loading: put each process's copy on its own GPU (DDP)
        device_map = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    model = load_model(config.name_or_path, dtype=config.dtype, trust_remote_code=config.trust_remote_code,
                       attn_implementation=config.attn_implementation, quantization=quantization, device_map=device_map,
                       device=None)
    return add_lora(model, config)


def add_lora(model: PreTrainedModel, config: ModelConfig) -> PreTrainedModel | nn.Module:
    """Wrap ``model`` with fresh LoRA adapters as ``config.lora`` says (unchanged when it is ``None``).

    A 4-bit (QLoRA) base does not go through ``peft.prepare_model_for_kbit_training``, whose side
    effects break the recipe: it upcasts every non-quantized parameter to float32 (the recipe's
    ``model.dtype`` is kept instead) and always turns on *reentrant* activation checkpointing, which
    under DDP with ``find_unused_parameters`` (the Trainer's choice for a PEFT model) fails with
    "marked ready twice". ``get_peft_model`` freezes the base; checkpointing follows
    ``train.gradient_checkpointing``, non-reentrant (:mod:`prefopt.train.compat`), switched on by the
    trainer, and non-reentrant checkpointing needs no ``enable_input_require_grads``.
    """
    if config.lora is None:
        return model
    import peft

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


def runs_on_cpu(model: ModelConfig) -> bool:
    """Whether training runs on the CPU: ``model.device: cpu``, or no accelerator at all.

    ``TrainingArguments`` must then be told ``use_cpu``: several launched processes
    (``accelerate launch``/``torchrun``) would otherwise find no device backend and silently train
    as independent single-process jobs (with it they join one gloo group: CPU data parallelism, as
    in docs/distributed.md), and ``bf16`` autocast on the CPU is refused without it.
    """
    return model.device == "cpu" or not torch.accelerator.is_available()


def optim_arguments(optim: OptimConfig) -> dict[str, Any]:
    """The ``TrainingArguments`` keywords of a recipe's ``optim`` section (``warmup_steps`` < 1 is a ratio)."""
    return dict(learning_rate=optim.lr, weight_decay=optim.weight_decay, warmup_steps=optim.warmup_ratio,
                lr_scheduler_type=optim.scheduler, optim=optim.optimizer, max_grad_norm=optim.max_grad_norm)


def loop_arguments(
    loop: LoopConfig, optim: OptimConfig, log: LoggingConfig, loss: LossConfig, model: ModelConfig, **overrides: Any
) -> PreferenceConfig:
    """The one mapping of recipe sections onto :class:`PreferenceConfig`, for ``prefopt train`` and every round.

    ``overrides`` (the output directory, and whatever the caller sets itself: ``prefopt train``'s
    evaluation and checkpoint limit, a round's seed and run name) are passed on as given.
    """
    arguments: dict[str, Any] = dict(
        num_train_epochs=loop.epochs,
        max_steps=loop.max_steps or -1,
        per_device_train_batch_size=loop.batch_size,
        gradient_accumulation_steps=loop.grad_accum,
        **optim_arguments(optim),
        seed=loop.seed,
        save_strategy="steps" if loop.save_steps else "no",
        save_steps=loop.save_steps or 500,
        **checkpointing_arguments(loop.gradient_checkpointing),
        bf16=loop.bf16,
        ddp_timeout=loop.ddp_timeout,
        dataloader_num_workers=loop.dataloader_num_workers,
        logging_steps=log.logging_steps,
        report_to=log.report_to,
        run_name=log.run_name,
        reference_batch_size=loss.reference_batch_size,
        reference_cache_dir=loss.reference_cache_dir,
        logps_chunk_size=loop.logps_chunk_size,
        use_cpu=runs_on_cpu(model),
    )
    return PreferenceConfig(**{**arguments, **overrides})


def training_arguments(recipe: Recipe) -> PreferenceConfig:
    """``prefopt train``'s :class:`PreferenceConfig`: :func:`loop_arguments` plus evaluation and the checkpoint limit."""
    run = recipe.train
    has_eval = recipe.data.eval is not None
    return loop_arguments(
        run, recipe.optim, recipe.logging, recipe.loss, recipe.model,
        output_dir=run.output_dir,
        per_device_eval_batch_size=run.eval_batch_size or run.batch_size,
        save_total_limit=run.save_total_limit,
        eval_strategy=("steps" if run.eval_steps else "epoch") if has_eval else "no",
        eval_steps=run.eval_steps,
    )


def low_precision_warning(recipe: Recipe) -> str | None:
    """Why full fine-tuning of 16-bit weights without fp32 master weights is unsafe, or ``None`` if it is not that.

    With ``model.dtype`` bfloat16/float16 and no LoRA, the optimizer adds each update to 16-bit
    weights: bf16 has 8 significant bits, so an update below ~0.4 % of a weight rounds away (at
    the recipes' learning rates of ~5e-7 most do). DeepSpeed keeps fp32 master weights itself, and
    accelerate's FSDP upcasts low-precision parameters when mixed precision is on; DDP/one GPU do not.
    """
    low = recipe.model.dtype in ("bfloat16", "float16")
    sharded = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true" or \
        os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if not low or recipe.model.lora is not None or sharded:
        return None
    return (f"model.dtype={recipe.model.dtype} with full fine-tuning: the optimizer updates {recipe.model.dtype} weights "
            f"directly (no fp32 master copy), so updates below ~0.4% of a weight are lost at optim.lr={recipe.optim.lr:g}. "
            "Use model.dtype=float32 with train.bf16=true (bf16 compute, fp32 weights), LoRA, or DeepSpeed/FSDP")


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
    if recipe.model.device not in ("auto", "cpu"):
        raise RecipeError(f"model.device={recipe.model.device!r}: prefopt train places the model itself; use 'auto' "
                          "or 'cpu' (pick GPUs with CUDA_VISIBLE_DEVICES or accelerate launch)")
    warning = low_precision_warning(recipe)
    if warning:
        logger.warning(warning)
    set_seed(recipe.train.seed)
    # The arguments first: they set up the distributed state (and the DeepSpeed/FSDP loading context
    # zero3_init_flag / fsdp_cpu_ram_efficient_loading rely on) before from_pretrained runs.
    args = training_arguments(recipe)
    args.device  # noqa: B018  (initialises the process group now, not lazily inside the Trainer)
    tokenizer = load_tokenizer(recipe.model.name_or_path, trust_remote_code=recipe.model.trust_remote_code)
    model = build_model(recipe.model)
    train_data = build_dataset(recipe.data, tokenizer, "train")
    eval_data = build_dataset(recipe.data, tokenizer, "eval") if recipe.data.eval else None
    loss = get_loss(recipe.loss.name, **recipe.loss.hparams)
    ref_model = None
    if recipe.loss.reference == "live" or recipe.loss.reference_model:
        ref_model = load_model(recipe.loss.reference_model or recipe.model.name_or_path, dtype=recipe.model.dtype,
                               trust_remote_code=recipe.model.trust_remote_code,
                               attn_implementation=recipe.model.attn_implementation, device=None)
    trainer = PreferenceTrainer(model, args, loss=loss, train_dataset=train_data,
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
