"""One decode step with Hugging Face's ``DynamicCache`` against the sampler's in-place cache.

SmolLM2-135M-Instruct (fp32, CPU), a batch of ``--rows`` rows with ``--cached`` positions already in
the cache (random token ids: the cost does not depend on them): the median wall time of a decode
step over ``--repeats`` steps, and the share of the step's CPU time in ``aten::cat`` from a
torch-profiler trace of ``--profiled`` steps. The in-place cache must give bit-identical logits.

    python bench/decode_step.py [--rows 100] [--cached 120]
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import time
from pathlib import Path

import torch
from torch.profiler import profile
from transformers import DynamicCache

from prefopt.models import load_model
from prefopt.online.kv_cache import preallocated_cache

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--cached", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--profiled", type=int, default=4)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "decode_step.json")
    args = parser.parse_args()

    model = load_model(args.model).eval()
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    prompt = torch.randint(0, 1000, (args.rows, args.cached), generator=torch.Generator().manual_seed(0))
    step = torch.randint(0, 1000, (args.rows, 1), generator=torch.Generator().manual_seed(1))
    capacity = args.cached + args.repeats + args.profiled + 1
    caches = {"dynamic": lambda: DynamicCache(config=model.config),
              "in_place": lambda: preallocated_cache(model.config, capacity)}
    results, logits = {}, {}
    for label, make in caches.items():
        cache = make()
        with torch.inference_mode():
            model(input_ids=prompt, use_cache=True, logits_to_keep=1, **{name: cache})
            logits[label] = model(input_ids=step, use_cache=True, **{name: cache}).logits
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                model(input_ids=step, use_cache=True, **{name: cache})
                times.append(time.perf_counter() - start)
            with profile() as trace:
                for _ in range(args.profiled):
                    model(input_ids=step, use_cache=True, **{name: cache})
        self_times = {e.key: e.self_cpu_time_total for e in trace.key_averages()}
        total = sum(self_times.values())
        results[label] = {"median_step_seconds": statistics.median(times), "step_seconds": times,
                          "cat_share_of_cpu_time": self_times.get("aten::cat", 0.0) / total,
                          "top_ops": {k: v / total for k, v in sorted(self_times.items(), key=lambda kv: -kv[1])[:6]}}
        print(f"{label:>9}: median step {results[label]['median_step_seconds'] * 1e3:.0f} ms, "
              f"aten::cat {results[label]['cat_share_of_cpu_time']:.0%} of CPU time", flush=True)
    identical = torch.equal(logits["dynamic"], logits["in_place"])
    print(f"logits bit-identical: {identical}")
    report = {"model": args.model, "rows": args.rows, "cached_positions": args.cached, "torch": torch.__version__,
              "threads": torch.get_num_threads(), "load_average": os.getloadavg(), "logits_identical": identical,
              "results": results}
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
