"""Sampler throughput on the quickstart's settings: the new HF sampler vs the old one vs plain ``generate``.

Two workloads with SmolLM2-135M-Instruct (fp32, CPU unless CUDA is present), the quickstart's
instruction and chat prompts:

- ``sampling``: 32 training prompts (a seeded draw from data/arithmetic/train.jsonl) x 6 samples,
  128 new tokens, temperature 0.8, top_p 0.95, all 32 prompts in one batch (``sampler.batch_size``);
- ``evaluation``: the first 100 held-out problems, greedy, 128 new tokens, one batch of 100.

Engines: ``new`` = :class:`prefopt.online.sampler.HFSampler` (drops finished rows, batch-invariant
streams); ``old`` = the previous HFSampler (a copy of its loop kept here only as the baseline:
``generate`` with ``num_return_sequences`` per batch); ``generate`` = one plain ``model.generate``
call per batch with the model's own generation defaults plus the workload's settings; optionally
``transformers_cb`` = transformers' continuous batching (``generate_batch``, paged attention).
Tokens count the completion up to and including the first EOS. The compute limit is the measured
2048x2048 fp32 matmul rate divided by ~0.27 GFLOP per generated token (2 x 135M parameters).
Each engine runs ``--repeats`` times; the JSON keeps every run, the median and the load (``uptime``),
and the token positions the model computed (prefill + decode rows, padding included): generated
tokens / positions is the useful share of the work, independent of how busy the machine is.

    python bench/sampler_throughput.py --repeats 3 [--baseline-repeats 1] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import GenerationConfig

from prefopt.models import load_model, load_tokenizer
from prefopt.online.completions import eos_ids, render_prompt, split_completion
from prefopt.online.problems import load_problems
from prefopt.online.sampler import HFSampler
from prefopt.sampling import PromptItem, SamplingParams

REPO = Path(__file__).resolve().parents[1]
INSTRUCTION = "Answer with the final number only."
GFLOP_PER_TOKEN = 0.27


def matmul_gflops(size: int = 2048, repeats: int = 10) -> float:
    """Median GFLOP/s of a ``size x size`` fp32 matmul on this machine, now."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times) / 1e9


def load() -> str:
    """The 1-minute load average and the machine's CPU count, as ``uptime`` reports them."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} CPUs"


class OldHFSampler:
    """The previous HFSampler's loop (baseline only): ``generate`` per batch until its longest row ends."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer

    @torch.inference_mode()
    def sample(self, prompts: list[PromptItem], params: SamplingParams) -> int:
        stop = eos_ids(self.model, self.tokenizer)
        common: dict[str, Any] = dict(max_new_tokens=params.max_new_tokens, num_return_sequences=params.n,
                                      pad_token_id=self.tokenizer.pad_token_id, eos_token_id=sorted(stop),
                                      use_cache=True)
        if params.greedy:
            config = GenerationConfig(do_sample=False, **common)
        else:
            config = GenerationConfig(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0,
                                      **common)
        tokens = 0
        for batch_index, first in enumerate(range(0, len(prompts), params.batch_size)):
            batch = prompts[first : first + params.batch_size]
            encoded = [render_prompt(self.tokenizer, item.prompt) for item in batch]
            width = max(len(ids) for ids in encoded)
            pad = self.tokenizer.pad_token_id
            input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in encoded])
            attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded])
            torch.manual_seed(params.seed + batch_index)
            output = self.model.generate(input_ids=input_ids, attention_mask=attention, generation_config=config)
            tokens += sum(len(split_completion(row, stop)[0]) for row in output[:, width:].tolist())
        return tokens


def plain_generate(model, tokenizer, prompts: list[PromptItem], params: SamplingParams) -> int:
    """One ``model.generate`` call per batch with the model's defaults plus the workload's settings."""
    stop = eos_ids(model, tokenizer)
    settings: dict[str, Any] = dict(max_new_tokens=params.max_new_tokens, pad_token_id=tokenizer.pad_token_id)
    if params.greedy:
        settings["do_sample"] = False
    else:
        settings.update(do_sample=True, temperature=params.temperature, top_p=params.top_p,
                        num_return_sequences=params.n)
    tokens = 0
    tokenizer.padding_side = "left"
    with torch.inference_mode():
        for first in range(0, len(prompts), params.batch_size):
            batch = prompts[first : first + params.batch_size]
            texts = [tokenizer.apply_chat_template(item.prompt, add_generation_prompt=True, tokenize=False)
                     for item in batch]
            encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            output = model.generate(**encoded, **settings)
            width = encoded["input_ids"].shape[1]
            tokens += sum(len(split_completion(row, stop)[0]) for row in output[:, width:].tolist())
    return tokens


def transformers_cb(model, tokenizer, prompts: list[PromptItem], params: SamplingParams) -> int:
    """transformers' continuous batching (``generate_batch``); ``n`` copies of each prompt when sampling."""
    stop = eos_ids(model, tokenizer)
    inputs = [render_prompt(tokenizer, item.prompt) for item in prompts for _ in range(params.n)]
    config = GenerationConfig(max_new_tokens=params.max_new_tokens, do_sample=not params.greedy,
                              temperature=None if params.greedy else params.temperature,
                              top_p=None if params.greedy else params.top_p, eos_token_id=sorted(stop),
                              pad_token_id=tokenizer.pad_token_id)
    outputs = model.generate_batch(inputs, generation_config=config)
    return sum(len(split_completion(list(out.generated_tokens), stop)[0]) for out in outputs.values())


class PositionCounter:
    """Counts the token positions the model's forward computes (prefill and decode rows, padding included)."""

    def __init__(self, model):
        self.positions = 0
        model.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.positions += ids.numel()


def timed(run: Callable[[], int], repeats: int, limit: float, counter: PositionCounter) -> dict[str, Any]:
    """``repeats`` runs of ``run`` (which returns generated tokens): every run, the median tokens/s, the load,
    and the positions the model computed (``useful_fraction`` = generated tokens / positions)."""
    runs = []
    for _ in range(repeats):
        before = load()
        counter.positions = 0
        start = time.perf_counter()
        tokens = run()
        seconds = time.perf_counter() - start
        runs.append({"seconds": seconds, "generated_tokens": tokens, "tokens_per_second": tokens / seconds,
                     "positions_computed": counter.positions, "useful_fraction": tokens / counter.positions,
                     "load_before": before, "load_after": load()})
    median = statistics.median(r["tokens_per_second"] for r in runs)
    return {"runs": runs, "median_tokens_per_second": median, "fraction_of_limit": median / limit,
            "median_seconds": statistics.median(r["seconds"] for r in runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline-repeats", type=int, default=None,
                        help="repeats of the engines other than new (default: --repeats); the old sampler takes minutes")
    parser.add_argument("--engines", nargs="+", default=["new", "old", "generate"],
                        choices=["new", "old", "generate", "transformers_cb"])
    parser.add_argument("--workloads", nargs="+", default=["sampling", "evaluation"], choices=["sampling", "evaluation"])
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's; 1 is much faster on an oversubscribed machine)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "sampler_throughput.json")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer, model = load_tokenizer(args.model), load_model(args.model)
    model.eval()
    counter = PositionCounter(model)
    train = load_problems(REPO / "data" / "arithmetic" / "train.jsonl")
    heldout = load_problems(REPO / "data" / "arithmetic" / "validation.jsonl", limit=100)
    workloads = {
        "sampling": ([p.prompt_item(INSTRUCTION) for p in random.Random(0).sample(train, 32)],
                     SamplingParams(n=6, temperature=0.8, top_p=0.95, max_new_tokens=128, batch_size=32, seed=1)),
        "evaluation": ([p.prompt_item(INSTRUCTION) for p in heldout],
                       SamplingParams(greedy=True, max_new_tokens=128, batch_size=100)),
    }
    new, old = HFSampler(model, tokenizer, progress=False), OldHFSampler(model, tokenizer)
    engines: dict[str, Callable[[list[PromptItem], SamplingParams], int]] = {
        "new": lambda items, params: new.sample(items, params)[1].generated_tokens,
        "old": old.sample,
        "generate": lambda items, params: plain_generate(model, tokenizer, items, params),
        "transformers_cb": lambda items, params: transformers_cb(model, tokenizer, items, params),
    }
    gflops = matmul_gflops()
    limit = gflops / GFLOP_PER_TOKEN
    print(f"matmul 2048x2048 fp32: {gflops:.0f} GFLOP/s -> compute limit {limit:.0f} tokens/s ({load()})", flush=True)
    results: dict[str, dict[str, Any]] = {}
    report = {"model": args.model, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "machine": platform.machine(), "cpus": os.cpu_count(), "matmul_2048_fp32_gflops": gflops,
              "gflop_per_token": GFLOP_PER_TOKEN, "compute_limit_tokens_per_second": limit,
              "settings": {k: {"prompts": len(v[0]), **vars(v[1])} for k, v in workloads.items()},
              "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for workload in args.workloads:
        items, params = workloads[workload]
        results[workload] = {}
        for engine in args.engines:
            repeats = args.repeats if engine == "new" or args.baseline_repeats is None else args.baseline_repeats
            result = timed(lambda: engines[engine](items, params), repeats, limit, counter)
            results[workload][engine] = result
            print(f"{workload:>10} {engine:>15}: {result['median_tokens_per_second']:6.1f} tokens/s "
                  f"({result['fraction_of_limit']:.0%} of the limit), {result['runs'][0]['generated_tokens']} tokens, "
                  f"{result['runs'][0]['useful_fraction']:.0%} of computed positions useful, "
                  f"median {result['median_seconds']:.1f} s", flush=True)
            base = results[workload].get("old")
            for name, done in results[workload].items():
                if base:
                    done["speedup_vs_old"] = done["median_tokens_per_second"] / base["median_tokens_per_second"]
            report["uptime_end"] = load()
            args.out.write_text(json.dumps(report, indent=1) + "\n")  # after every engine: partial runs survive
    report["matmul_gflops_after"] = matmul_gflops()
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
