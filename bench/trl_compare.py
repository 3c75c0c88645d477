"""prefopt's PreferenceTrainer vs TRL's DPOTrainer: same model, pairs, hyperparameters and steps, on CPU.

Configurations (each runs in its own subprocess, so peak memory is per configuration):

- ``prefopt``: :class:`prefopt.train.PreferenceTrainer` at its defaults (reference log-probs
  precomputed once and cached, chunked log-prob head over completion tokens only).
- ``prefopt-ckpt``: ``prefopt`` plus ``gradient_checkpointing=True`` (TRL's default), to compare
  memory at equal activation policy.
- ``trl-defaults``: ``DPOTrainer`` with ``DPOConfig`` defaults (live reference model, gradient
  checkpointing) except what the comparison needs: ``max_length``, batch size, steps,
  ``report_to="none"``, ``logging_steps=1`` (per-step losses), sequential sampling and
  ``bf16=False`` (DPOConfig defaults to bf16 autocast; the comparison is fp32 so that losses can
  be compared to 1e-5).
- ``trl-best``: ``trl-defaults`` plus ``precompute_ref_log_probs=True`` (batch 8, as prefopt) and
  ``gradient_checkpointing=False``.

Both trainers get the same token ids: pairs are tokenized once by :func:`prefopt.data.tokenize_pairs`
(HH transcripts -> chat-templated prompt, completion ending at ``<|im_end|>``); TRL gets the decoded
prompt / chosen / rejected strings in its standard (non-conversational) format, and the worker
asserts that TRL's tokenization of them reproduces prefopt's ids row by row. Data order is
sequential in both, the seed is the same, and training is one epoch: ``steps * batch_size`` pairs.

Measured per run: non-padding policy tokens (prompt+chosen plus prompt+rejected) per second of
the training loop (first step begin -> last step end), and per second of trainer construction +
training (which includes the reference precomputation); peak RSS of the process (``ru_maxrss``,
includes model loading) and the peak RSS sampled every 10 ms from trainer construction to the end
of training; per-step losses and the step-1 ``logps/chosen``. On a shared machine wall time is noisy,
so the process CPU time (all threads) of construction + training is recorded too, and the rounds
alternate the order of the configurations.

Usage::

    python bench/trl_compare.py --steps 4 --batch-size 2 --repeats 2 --out bench/results/trl_compare.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datasets
    from torch import nn
    from transformers import PreTrainedTokenizerBase, Trainer, TrainerCallback

CONFIGS = ("prefopt", "prefopt-ckpt", "trl-defaults", "trl-best")
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh_rlhf_harmless" / "test.jsonl.gz"
MODEL = "smollm2-135m-instruct"


def build_pairs(
    data: str, tokenizer: PreTrainedTokenizerBase, n_pairs: int, max_length: int
) -> datasets.Dataset:
    """The first ``n_pairs`` HH pairs that fit ``max_length``, tokenized by prefopt (token columns only)."""
    from prefopt.data import load_pairs, tokenize_pairs

    pairs = load_pairs(data, format="hh", drop_invalid=True)
    pairs = pairs.select(range(min(len(pairs), 2 * n_pairs)))
    tokenized, _ = tokenize_pairs(pairs, tokenizer, max_length=max_length, truncation="drop")
    if len(tokenized) < n_pairs:
        raise ValueError(f"{data}: only {len(tokenized)} of the first {len(pairs)} pairs fit "
                         f"max_length={max_length}; raise --max-length or lower --steps/--batch-size")
    return tokenized.select(range(n_pairs)).select_columns(["prompt_ids", "chosen_ids", "rejected_ids"])


def trl_text_pairs(tokenized: datasets.Dataset, tokenizer: PreTrainedTokenizerBase) -> datasets.Dataset:
    """The same pairs as TRL standard-format strings (prompt / chosen / rejected), decoded from the ids."""
    import datasets

    def decode(ids: list[int]) -> str:
        return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    columns = ("prompt", "chosen", "rejected")
    return datasets.Dataset.from_dict({c: [decode(ids) for ids in tokenized[f"{c}_ids"]] for c in columns})


def check_same_tokens(trl_dataset: datasets.Dataset, tokenized: datasets.Dataset) -> None:
    """Raise unless TRL's ``prompt_ids``/``chosen_ids``/``rejected_ids`` equal prefopt's, row by row."""
    for column in ("prompt_ids", "chosen_ids", "rejected_ids"):
        for row, (ours, theirs) in enumerate(zip(tokenized[column], trl_dataset[column], strict=True)):
            if ours != theirs:
                same = min(len(ours), len(theirs))
                first = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), same)
                raise AssertionError(f"row {row}, {column}: TRL has {len(theirs)} ids, prefopt {len(ours)}; "
                                     f"first difference at index {first}")


def policy_tokens(tokenized: datasets.Dataset) -> int:
    """Non-padding tokens the policy processes in one epoch: prompt twice, chosen and rejected once."""
    rows = zip(tokenized["prompt_ids"], tokenized["chosen_ids"], tokenized["rejected_ids"])
    return sum(2 * len(p) + len(c) + len(r) for p, c, r in rows)


class RssSampler(threading.Thread):
    """Peak resident set size of this process, sampled every ``interval`` seconds until :meth:`stop`."""

    def __init__(self, interval: float = 0.01) -> None:
        import psutil

        super().__init__(daemon=True)
        self.process, self.interval, self.peak = psutil.Process(), interval, 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self._done.wait(self.interval)

    def stop(self) -> int:
        self._done.set()
        self.join()
        return max(self.peak, self.process.memory_info().rss)


def _clock_callback() -> TrainerCallback:
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        """Wall time of each optimizer step and every log record."""

        def __init__(self) -> None:
            self.begins: list[float] = []
            self.ends: list[float] = []
            self.logs: list[dict] = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.begins.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.logs.append({"step": state.global_step, **(logs or {})})

    return StepClock()


def _common_args(args: argparse.Namespace, output_dir: str) -> dict[str, Any]:
    return dict(output_dir=output_dir, max_steps=args.steps, per_device_train_batch_size=args.batch_size,
                learning_rate=args.lr, logging_steps=1, report_to="none", save_strategy="no", seed=args.seed,
                train_sampling_strategy="sequential", bf16=False, disable_tqdm=True)


def build_trainer(
    config: str,
    args: argparse.Namespace,
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    tokenized: datasets.Dataset,
    workdir: str,
    callback: TrainerCallback,
) -> Trainer:
    """The trainer for ``config``; constructing it runs the reference precomputation where there is one."""
    if config.startswith("prefopt"):
        from prefopt.losses import get_loss
        from prefopt.train import PreferenceConfig, PreferenceTrainer

        checkpointing = config == "prefopt-ckpt"
        training = PreferenceConfig(**_common_args(args, workdir), gradient_checkpointing=checkpointing,
                                    reference_cache_dir=os.path.join(workdir, "ref"))
        loss = get_loss("dpo", beta=args.beta)
        return PreferenceTrainer(model, training, loss=loss, train_dataset=tokenized,
                                 processing_class=tokenizer, callbacks=[callback])
    from trl import DPOConfig, DPOTrainer

    best = dict(precompute_ref_log_probs=True, precompute_ref_batch_size=8, gradient_checkpointing=False)
    training = DPOConfig(**_common_args(args, workdir), max_length=args.max_length, beta=args.beta,
                         **(best if config == "trl-best" else {}))
    return DPOTrainer(model, args=training, train_dataset=trl_text_pairs(tokenized, tokenizer),
                      processing_class=tokenizer, callbacks=[callback])


def run_worker(config: str, args: argparse.Namespace) -> dict:
    """Measure one configuration in this process."""
    import psutil
    import torch
    from transformers import set_seed

    from prefopt.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(MODEL)
    tokenized = build_pairs(args.data, tokenizer, args.steps * args.batch_size, args.max_length)
    set_seed(args.seed)
    model = load_model(MODEL, dtype="float32")
    rss_loaded = psutil.Process().memory_info().rss
    callback = _clock_callback()
    with tempfile.TemporaryDirectory(prefix="trl-compare-") as workdir:
        sampler = RssSampler()
        sampler.start()
        start, cpu_start = time.perf_counter(), time.process_time()
        trainer = build_trainer(config, args, model, tokenizer, tokenized, workdir, callback)
        built = time.perf_counter()
        trainer.train()
        end, cpu_end = time.perf_counter(), time.process_time()
        rss_training = sampler.stop()
        if config.startswith("trl"):
            check_same_tokens(trainer.train_dataset, tokenized)
    steps = [log for log in callback.logs if "loss" in log and "train_runtime" not in log]
    tokens = policy_tokens(tokenized)
    first_step_tokens = policy_tokens(tokenized.select(range(args.batch_size)))
    loop = callback.ends[-1] - callback.begins[0]
    return {
        "config": config,
        "torch_threads": torch.get_num_threads(),
        "pairs": len(tokenized),
        "policy_tokens": tokens,
        "setup_s": built - start,
        "train_loop_s": loop,
        "total_s": end - start,
        "step_s": [e - b for b, e in zip(callback.begins, callback.ends)],
        "later_steps_tokens_per_s": (tokens - first_step_tokens) / (callback.ends[-1] - callback.ends[0]),
        "cpu_s": cpu_end - cpu_start,
        "tokens_per_cpu_s": tokens / (cpu_end - cpu_start),
        "tokens_per_s_loop": tokens / loop,
        "tokens_per_s_total": tokens / (end - start),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_after_load_mib": rss_loaded / 2**20,
        "peak_rss_training_mib": rss_training / 2**20,
        "losses": [log["loss"] for log in steps],
        "step1_logps_chosen": steps[0].get("logps/chosen"),
        "step1_logps_rejected": steps[0].get("logps/rejected"),
    }


def _median(runs: list[dict], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def summarize(runs: list[dict]) -> dict:
    """Medians per configuration; each prefopt configuration's ratios to each TRL one and loss differences."""
    by_config = {c: [r for r in runs if r["config"] == c] for c in CONFIGS}
    by_config = {c: rs for c, rs in by_config.items() if rs}
    keys = ("tokens_per_s_loop", "later_steps_tokens_per_s", "tokens_per_s_total", "tokens_per_cpu_s",
            "train_loop_s", "total_s", "setup_s", "cpu_s", "peak_rss_mib", "peak_rss_training_mib",
            "rss_after_load_mib")
    medians = {c: {k: _median(rs, k) for k in keys} for c, rs in by_config.items()}
    summary: dict = {"medians": medians}
    for ours in (c for c in by_config if c.startswith("prefopt")):
        for theirs in (c for c in by_config if c.startswith("trl")):
            a, b = medians[ours], medians[theirs]
            run_a, run_b = by_config[ours][0], by_config[theirs][0]
            summary[f"{ours}_vs_{theirs}"] = {
                "throughput_ratio_loop": a["tokens_per_s_loop"] / b["tokens_per_s_loop"],
                "throughput_ratio_later_steps": a["later_steps_tokens_per_s"] / b["later_steps_tokens_per_s"],
                "throughput_ratio_total": a["tokens_per_s_total"] / b["tokens_per_s_total"],
                "throughput_ratio_cpu": a["tokens_per_cpu_s"] / b["tokens_per_cpu_s"],
                "peak_rss_ratio": a["peak_rss_mib"] / b["peak_rss_mib"],
                "peak_rss_training_ratio": a["peak_rss_training_mib"] / b["peak_rss_training_mib"],
                "step1_abs_loss_diff": abs(run_a["losses"][0] - run_b["losses"][0]),
                "max_abs_loss_diff": max(abs(x - y) for x, y in zip(run_a["losses"], run_b["losses"])),
                "step1_abs_logps_chosen_diff": abs(run_a["step1_logps_chosen"] - run_b["step1_logps_chosen"]),
            }
    return summary


def _environment() -> dict:
    import torch
    import transformers
    import trl

    return {"machine": f"{os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), no GPU",
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "trl": trl.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="HH-RLHF jsonl(.gz) (chosen/rejected)")
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps (steps*batch-size pairs)")
    parser.add_argument("--batch-size", type=int, default=2, help="pairs per step")
    parser.add_argument("--max-length", type=int, default=512, help="pairs longer than this are skipped")
    parser.add_argument("--lr", type=float, default=1e-6)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2, help="rounds; each round runs every config once")
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    parser.add_argument("--out", type=Path, help="write every run plus the summary as JSON here")
    parser.add_argument("--worker", choices=CONFIGS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the steps after the first are also timed on their own)")
    if args.worker:
        print(json.dumps(run_worker(args.worker, args)))
        return

    settings = {k: v for k, v in vars(args).items() if k not in ("worker", "out")}
    environment = _environment()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
    runs: list[dict] = []
    for round_ in range(args.repeats):
        # Alternate the order so that a slow spell on the shared machine does not always hit the same config.
        order = args.configs if round_ % 2 == 0 else args.configs[::-1]
        for config in order:
            cmd = [sys.executable, __file__, "--worker", config] + [
                f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                if k in ("data", "steps", "batch_size", "max_length", "lr", "beta", "seed")
            ]
            env = {**os.environ, "TQDM_DISABLE": "1"}
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if done.returncode:
                sys.exit(f"{config} (round {round_ + 1}) failed:\n{done.stderr[-4000:]}")
            run = json.loads(done.stdout.strip().splitlines()[-1])
            run["round"] = round_ + 1
            runs.append(run)
            print(f"round {round_ + 1} {config}: {run['tokens_per_s_loop']:.1f} tok/s loop, "
                  f"{run['tokens_per_s_total']:.1f} tok/s total, peak RSS {run['peak_rss_mib']:.0f} MiB, "
                  f"losses {[round(x, 6) for x in run['losses'][:3]]}...", flush=True)
            result = {"settings": settings, "environment": environment, "runs": runs,
                      "summary": summarize(runs)}
            if args.out:  # after every run, so that an interrupted benchmark keeps what it measured
                args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["summary"], indent=1))


if __name__ == "__main__":
    main()
