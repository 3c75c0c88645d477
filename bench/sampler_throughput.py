"""Sampler throughput: batched Hugging Face ``generate`` vs one prompt at a time.

Greedy decoding of the same held-out arithmetic prompts with the embedded SmolLM2-135M-Instruct
(the quickstart's setting), at several batch sizes; prints generated tokens/s and writes JSON.

    python bench/sampler_throughput.py --prompts 32 --max-new-tokens 128 --batch-sizes 1 8 32
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from prefopt.models import load_model, load_tokenizer
from prefopt.online.problems import load_problems
from prefopt.online.sampler import HFSampler, SamplingParams

REPO = Path(__file__).resolve().parents[1]
INSTRUCTION = "Answer with the final number only."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "sampler_throughput.json")
    args = parser.parse_args()

    tokenizer, model = load_tokenizer(args.model), load_model(args.model)
    problems = load_problems(REPO / "data" / "arithmetic" / "validation.jsonl", limit=args.prompts)
    items = [p.prompt_item(INSTRUCTION) for p in problems]
    sampler = HFSampler(model, tokenizer, progress=False)
    results = []
    for batch_size in args.batch_sizes:
        params = SamplingParams(greedy=True, max_new_tokens=args.max_new_tokens, batch_size=batch_size)
        rollouts, stats = sampler.sample(items, params)
        results.append({"batch_size": batch_size, "seconds": stats.seconds, "generated_tokens": stats.generated_tokens,
                        "tokens_per_second": stats.tokens_per_second})
        print(f"batch {batch_size:>3}: {stats.generated_tokens} tokens in {stats.seconds:.1f} s = "
              f"{stats.tokens_per_second:.1f} tokens/s", flush=True)
    report = {"model": args.model, "prompts": args.prompts, "max_new_tokens": args.max_new_tokens,
              "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
              "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
