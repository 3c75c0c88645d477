"""GPU smoke test of prefopt's GPU paths on a randomly initialised model (no network, no vLLM).

Each check runs in turn; a failure is recorded (with the end of its traceback) and the next check
runs. Results go to ``OUT/smoke.json`` (one record per check: status, seconds, details) and a
summary line per check to stdout. Checks:

- ``chunked_head``: the chunked head against full bf16 logits on the GPU (values, gradients);
- ``train_*``: ``prefopt.train.train`` a few bf16 steps: full fine-tuning with the precomputed and
  the live reference, LoRA with precomputed and adapter-disabled (with non-reentrant activation
  checkpointing), each checking that step 0 is DPO's ln 2 (reference and policy in one precision);
- ``qlora``: LoRA on a 4-bit base (needs bitsandbytes; "skipped" without it);
- ``hf_engine``: the rounds' policy loaded onto the GPU and sampled with the HF engine;
- ``rounds``: a two-round ``prefopt rounds`` run (HF engine, LoRA), checking that the trainer's GPU
  memory was handed back after each round.

Usage: ``python bench/gpu/smoke.py OUT`` (``bench/gpu/smoke.sh`` runs it on the lent GPU machine).
``--cpu`` runs the same checks on the CPU (expecting CPU placement, no memory figures): a dry run of
the script itself on a machine without a GPU.
"""

from __future__ import annotations

import json
import math
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))  # the tiny byte-level tokenizer the unit tests use (no hub)
from conftest import make_tiny_tokenizer  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from prefopt.config import load_recipe  # noqa: E402
from prefopt.logps import completion_logps  # noqa: E402

CHECKS: dict[str, Callable[[Path], dict[str, Any]]] = {}
PAIRS, STEPS = 32, 4
DEVICE = "cuda"  # where every check expects the models to run ("cpu" with --cpu)
# hidden size, layers: ~20M parameters on the GPU; a toy size for the CPU dry run
SIZES = {"cuda": (512, 6), "cpu": (64, 2)}


def cuda_mib(stat: Callable[[], int]) -> float | None:
    return stat() / 2**20 if DEVICE == "cuda" else None


def check(name: str):
    def register(fn):
        CHECKS[name] = fn
        return fn
    return register


def save_random_model(directory: Path) -> str:
    """A randomly initialised Llama (:data:`SIZES`) and the byte tokenizer, saved for loading by path."""
    if (directory / "config.json").is_file():
        return str(directory)
    tokenizer = make_tiny_tokenizer()
    torch.manual_seed(0)
    hidden, layers = SIZES[DEVICE]
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 11 // 4,
                         num_hidden_layers=layers, num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=1024,
                         tie_word_embeddings=False, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def write_pairs(path: Path) -> str:
    rows = [{"prompt": f"What is {i} + {i}?", "chosen": f"{2 * i}.",
             "rejected": "Let me think step by step. " * (1 + i % 4) + f"It is {2 * i + 1}."} for i in range(PAIRS)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def train_check(work: Path, name: str, model: dict[str, Any], loss: dict[str, Any], **train: Any) -> dict[str, Any]:
    from transformers import TrainerCallback

    from prefopt.train import train as run_train

    class FirstLoss(TrainerCallback):
        first: float | None = None

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs and self.first is None:
                FirstLoss.first = logs["loss"]

    root = work / name
    root.mkdir(parents=True, exist_ok=True)
    placement = {"device": "cpu"} if DEVICE == "cpu" else {}  # bf16 on the CPU needs use_cpu
    raw = {"model": {"name_or_path": save_random_model(work / "model"), **placement, **model},
           "data": {"train": write_pairs(root / "pairs.jsonl"), "max_length": 256, "max_prompt_length": 64},
           "loss": {"name": "dpo", "beta": 0.1, "reference_cache_dir": str(root / "cache"), **loss},
           "optim": {"lr": 1e-4},
           "train": {"output_dir": str(root / "out"), "max_steps": STEPS, "batch_size": 4, "bf16": True, **train},
           "logging": {"logging_steps": 1}}
    (root / "recipe.yaml").write_text(yaml.safe_dump(raw))
    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()
    result = run_train(load_recipe(root / "recipe.yaml"), callbacks=[FirstLoss()])
    device = next(result.model.parameters()).device
    assert device.type == DEVICE, f"trained on {device}"
    assert FirstLoss.first is not None and abs(FirstLoss.first - math.log(2)) < 2e-3, f"step-0 loss {FirstLoss.first}"
    return {"steps": result.global_step, "step0_loss": FirstLoss.first, "train_loss": result.metrics.get("train_loss"),
            "peak_allocated_mib": cuda_mib(torch.cuda.max_memory_allocated)}


@check("chunked_head")
def chunked_head(work: Path) -> dict[str, Any]:
    model = LlamaForCausalLM.from_pretrained(save_random_model(work / "model"), dtype=torch.bfloat16).to(DEVICE)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 250, (8, 200), generator=gen).to(DEVICE)
    attention = torch.ones_like(ids)
    completion = torch.zeros_like(ids, dtype=torch.bool)
    completion[:, 50:] = True
    results = {}
    for method in ("naive", "chunked"):
        model.zero_grad()
        logps, mask = completion_logps(model, ids, attention, completion, method=method, chunk_size=64)
        (logps * mask).sum().backward()
        results[method] = (logps.detach().float(), model.lm_head.weight.grad.float().clone())
    value_error = (results["chunked"][0] - results["naive"][0]).abs().max().item()
    grad_error = ((results["chunked"][1] - results["naive"][1]).norm() / results["naive"][1].norm()).item()
    assert value_error < 5e-2 and grad_error < 2e-2, (value_error, grad_error)
    return {"max_logp_difference": value_error, "relative_head_grad_difference": grad_error}


@check("train_full_precomputed")
def train_full_precomputed(work: Path) -> dict[str, Any]:
    return train_check(work, "full_precomputed", {}, {"reference": "precomputed"})


@check("train_full_live")
def train_full_live(work: Path) -> dict[str, Any]:
    return train_check(work, "full_live", {}, {"reference": "live"})


LORA = {"lora": {"r": 16, "alpha": 32}}


@check("train_lora_precomputed")
def train_lora_precomputed(work: Path) -> dict[str, Any]:
    return train_check(work, "lora_precomputed", LORA, {"reference": "precomputed"})


@check("train_lora_adapter_disabled_checkpointed")
def train_lora_adapter_disabled(work: Path) -> dict[str, Any]:
    return train_check(work, "lora_adapter_disabled", LORA, {"reference": "adapter_disabled"}, gradient_checkpointing=True)


@check("qlora")
def qlora(work: Path) -> dict[str, Any]:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return {"status": "skipped", "reason": "bitsandbytes is not installed on this machine"}
    return train_check(work, "qlora", {**LORA, "qlora": True, "dtype": "bfloat16"}, {"reference": "adapter_disabled"},
                       gradient_checkpointing=True)


@check("hf_engine")
def hf_engine(work: Path) -> dict[str, Any]:
    from prefopt.config import ModelConfig
    from prefopt.models import load_tokenizer
    from prefopt.online.policy import load_policy
    from prefopt.online.run_dir import RunDir
    from prefopt.online.sampler import HFSampler
    from prefopt.sampling import PromptItem, SamplingParams

    path = save_random_model(work / "model")
    policy = load_policy(ModelConfig(name_or_path=path), RunDir(work / "engine-run"), 0)
    device = next(policy.parameters()).device
    assert device.type == DEVICE, f"the HF engine's policy is on {device}"
    items = [PromptItem(f"p{i}", f"What is {i} + 1?") for i in range(16)]
    rollouts, stats = HFSampler(policy, load_tokenizer(path), progress=False).sample(
        items, SamplingParams(n=4, max_new_tokens=32, batch_size=16, seed=1))
    assert len(rollouts) == 64
    return {"device": str(device), "rollouts": len(rollouts), "tokens_per_second": stats.tokens_per_second}


@check("rounds")
def rounds(work: Path) -> dict[str, Any]:
    from prefopt.online import rounds as rounds_module
    from prefopt.online.config import load_rounds_recipe
    from prefopt.online.rewards import available_rewards, register_reward

    if "smoke_sample_index" not in available_rewards():
        @register_reward("smoke_sample_index")
        def smoke_sample_index(group, state):
            """Reward = the rollout's index in its group: never tied, so every group gives a pair."""
            return {"reward": [float(i) for i in range(len(group))]}

    reserved: list[float] = []
    real_release = rounds_module.release_memory

    def release() -> None:
        real_release()
        reserved.append(cuda_mib(torch.cuda.memory_reserved))

    rounds_module.release_memory = release
    root = work / "rounds"
    root.mkdir(parents=True, exist_ok=True)
    problems = [{"id": f"q{i}", "question": f"Tom has {i} apples and buys {i} more. How many?", "answer": str(2 * i)}
                for i in range(24)]
    for name, rows in (("train", problems[:16]), ("heldout", problems[16:])):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    raw = {"run": {"name": "smoke", "output_root": str(root / "runs")},
           "model": {"name_or_path": save_random_model(work / "model"), **LORA},
           "problems": {"train": str(root / "train.jsonl"), "instruction": "Answer after ####."},
           "rounds": {"count": 2, "prompts_per_round": 8, "reference": "initial"},
           "sampler": {"engine": "hf", "n": 4, "max_new_tokens": 32, "batch_size": 8},
           "verifier": {"name": "exact"}, "reward": {"name": "smoke_sample_index"},
           "pairs": {"strategy": "best_vs_worst"}, "loss": {"name": "dpo", "beta": 0.1}, "optim": {"lr": 1e-4},
           "train": {"max_steps": 2, "batch_size": 4, "max_length": 256, "max_prompt_length": 200},
           "eval": {"sets": {"heldout": {"path": str(root / "heldout.jsonl")}}, "max_new_tokens": 32, "batch_size": 8},
           "logging": {"report_to": "none", "logging_steps": 1}}
    (root / "recipe.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    try:
        rows = rounds_module.RoundsRunner(load_rounds_recipe(root / "recipe.yaml"), progress=False).run_all()
    finally:
        rounds_module.release_memory = real_release
    assert [row["round"] for row in rows] == [0, 1, 2]
    return {"rounds": len(rows) - 1, "reserved_mib_after_each_training": reserved,
            "pairs": [row.get("pairs") for row in rows[1:]]}


def main(out: Path, cpu: bool = False) -> int:
    global DEVICE
    DEVICE = "cpu" if cpu else "cuda"
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    if not cpu and not torch.cuda.is_available():
        print("no CUDA device: this smoke test is for the GPU machine (--cpu for a dry run)", file=sys.stderr)
        return 2
    import accelerate
    import peft
    import transformers

    name = torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu (dry run)"
    report: dict[str, Any] = {"device": name, "torch": torch.__version__,
                              "transformers": transformers.__version__, "peft": peft.__version__,
                              "accelerate": accelerate.__version__, "checks": {}}
    for name, fn in CHECKS.items():
        start = time.perf_counter()
        try:
            details = fn(work)
            status = details.pop("status", "ok")
        except Exception as err:  # a failed check is a result; the next check still runs
            status, details = "failed", {"error": f"{type(err).__name__}: {err}",
                                         "traceback": traceback.format_exc()[-3000:]}
        details["seconds"] = round(time.perf_counter() - start, 2)
        report["checks"][name] = {"status": status, **details}
        print(f"{name}: {status} ({details['seconds']} s)", flush=True)
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
        (out / "smoke.json").write_text(json.dumps(report, indent=1))
    return 0 if all(c["status"] != "failed" for c in report["checks"].values()) else 1


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--cpu"]
    sys.exit(main(Path(args[0] if args else "smoke-out"), cpu="--cpu" in sys.argv[1:]))
