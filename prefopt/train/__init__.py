"""Training: :class:`PreferenceTrainer` (a ``transformers.Trainer``) and the recipe runner :func:`train`.

Plain Python::

    trainer = PreferenceTrainer(model, PreferenceConfig(output_dir="out"), loss=get_loss("dpo", beta=0.1),
                                train_dataset=pairs, processing_class=tokenizer)
    trainer.train()

From a recipe: ``train(load_recipe("recipes/cpu/dpo.yaml"))``. See docs/trainer.md.
"""

from prefopt.train.run import (
    TrainResult,
    add_lora,
    build_dataset,
    build_model,
    loop_arguments,
    optim_arguments,
    train,
    training_arguments,
)
from prefopt.train.trainer import REFERENCE_MODES, PreferenceConfig, PreferenceTrainer

__all__ = [
    "REFERENCE_MODES",
    "PreferenceConfig",
    "PreferenceTrainer",
    "TrainResult",
    "add_lora",
    "build_dataset",
    "build_model",
    "loop_arguments",
    "optim_arguments",
    "train",
    "training_arguments",
]
