"""Does each length-aware loss control length? A side-by-side loss benchmark on real preference data.

For each dataset (``hh``: Anthropic HH-RLHF harmless, real human labels; ``arithmetic``: the
project's pairs, whose rejected answers are verbose-correct or concise-wrong, so generations can be
verified) the script

1. keeps the pairs that fit ``--max-length`` tokens, reports their length bias (``prefopt data
   debias``'s report) and splits them by ``--seed`` into train / validation / test;
2. adds T-REG token rewards to the training pairs with the reference model
   (:func:`prefopt.annotate.annotate_token_rewards`, what ``prefopt annotate treg`` runs); every
   loss trains on this same file (the other losses ignore the columns);
3. for every loss spec of ``--losses`` and every learning rate of ``--lrs`` (the same grid for
   every loss) trains fresh LoRA adapters with :func:`prefopt.train.train` and scores the
   validation pairs; the learning rate with the best validation preference accuracy (ties: larger
   mean margin) is kept;
4. scores the test pairs with the kept model: preference accuracy of the loss's own implicit
   reward (Wilson 95%), its mean margin (normal 95%), and how often it prefers the longer response
   against how often the labels do (paired difference with McNemar's test); generates greedy answers
   to the first ``--gen-prompts`` test prompts within ``--max-new-tokens`` and reports their length
   and its paired change from the starting model; on ``arithmetic`` the answers are verified
   (:func:`prefopt.evaluate.accuracy.evaluate_accuracy`) and compared with the starting model
   (:func:`paired_difference`);
5. retrains the ``--seed-rows`` best specs of each dataset (by validation accuracy) with training
   seed ``--second-seed`` and reports them as extra rows;
6. writes the raw results (``--out``), a markdown table (``--table``) and a plot (``--plot``).

Every stage writes its result atomically under ``--workdir`` and is skipped when that file is
present, so an interrupted run continues where it stopped when the same command is run again;
``--report-only`` rebuilds the outputs from what is there (missing rows are listed as not run).
T-REG's implicit reward is DPO's (the token rewards only enter its regularizer), so validation and
test pairs are scored with zero token rewards instead of being annotated.

Usage (from the repository root; docs/benchmarks.md has the measured run)::

    python bench/losses_compare.py
    python bench/losses_compare.py --losses dpo hinge exo_pair --workdir runs/losses_compare
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from losses_compare_report import generation_metrics, preference_metrics, read_test, report

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
DEFAULT_LOSSES = (  # run in this order (a run cut short has the first rows): one of each family, the LD-DPO
    "dpo",           # variants, then two of the zoo's length-aware additions (TRL's length-normalized DPO, ORPO)
    "ld_dpo:ld_alpha=0.5",
    "r_dpo:alpha=0.05",
    "simpo:beta=2.5,gamma_beta_ratio=0.55",
    "ipo:beta=0.1",
    "treg:alpha=0.25",
    "ld_dpo:ld_alpha=0.5,ld_on_reference=false",
    "ld_dpo:ld_alpha=0.2",
    "ld_dpo:ld_alpha=0.2,ld_on_reference=false",
    "sigmoid_norm",
    "orpo",
)


@dataclass(frozen=True)
class LossSpec:
    """A loss name with bound hyperparameters, written ``name:key=value,key=value`` on the command line."""

    text: str
    name: str
    hparams: dict[str, Any]

    @classmethod
    def parse(cls, text: str) -> LossSpec:
        name, _, rest = text.partition(":")
        hparams = {}
        for item in filter(None, rest.split(",")):
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ValueError(f"--losses {text!r}: {item!r} is not key=value")
            hparams[key] = yaml.safe_load(value)
        return cls(text, name, hparams)

    @property
    def slug(self) -> str:
        return self.text.replace(":", "__").replace(",", "_").replace("=", "")


@dataclass(frozen=True)
class BenchData:
    """A dataset of the benchmark: where its pairs are and whether generations can be verified."""

    name: str
    path: Path
    format: str
    verified: bool


def datasets_of(args: argparse.Namespace) -> list[BenchData]:
    known = {
        "hh": BenchData("hh", args.hh_data, "hh", False),
        "arithmetic": BenchData("arithmetic", args.arithmetic_data, "auto", True),
    }
    return [known[name] for name in args.datasets]


def cached(path: Path, compute) -> Any:
    """The JSON at ``path``, or ``compute()`` written there atomically (the resume unit of the run)."""
    from prefopt.io import read_json, write_json

    if path.is_file():
        return read_json(path)
    value = compute()
    write_json(path, value)
    return value


# ----------------------------------------------------------------------------------------- data
def prepare(data: BenchData, args: argparse.Namespace, tokenizer) -> dict[str, Any]:
    """Filter to the token budget, report the length bias, split by seed and write the split files."""
    from prefopt.data import load_pairs, tokenize_pairs
    from prefopt.data.debias import debias
    from prefopt.io import write_jsonl

    start_time = time.perf_counter()
    pairs = load_pairs(str(data.path), format=data.format, drop_invalid=True)
    _, bias = debias(pairs, "balance", tokenizer=tokenizer, seed=args.seed)
    fits, stats = tokenize_pairs(pairs, tokenizer, max_length=args.max_length,
                                 max_prompt_length=args.max_prompt_length, truncation="drop")
    sizes = {"train": args.n_train, "val": args.n_val, "test": args.n_test}
    if len(fits) < sum(sizes.values()):
        raise SystemExit(f"{data.path}: only {len(fits)} pairs fit --max-length {args.max_length}; "
                         f"lower --n-train/--n-val/--n-test ({sum(sizes.values())} needed) or raise it")
    order = random.Random(args.seed).sample(range(len(fits)), sum(sizes.values()))
    start = 0
    for split, size in sizes.items():
        rows = [fits[i] for i in order[start:start + size]]
        start += size
        write_jsonl(args.workdir / data.name / f"{split}.jsonl",
                    [{"id": f"{data.name}-{r['source_row']}", **{k: r[k] for k in ("prompt", "chosen", "rejected")}}
                     for r in rows])
    return {"source": str(data.path), "valid_pairs": len(pairs), "fit_max_length": len(fits),
            "tokenize": str(stats), "debias_balance_report": bias, "sizes": sizes,
            "seconds": time.perf_counter() - start_time}


def annotate_treg(data: BenchData, args: argparse.Namespace, tokenizer) -> dict[str, Any]:
    """T-REG token rewards for the training pairs under the starting (reference) model."""
    from prefopt.annotate import annotate_token_rewards
    from prefopt.data import load_pairs
    from prefopt.models import load_model
    from prefopt.io import write_jsonl

    start = time.perf_counter()
    pairs = load_pairs(str(args.workdir / data.name / "train.jsonl"))
    annotated = annotate_token_rewards(pairs, load_model(args.model), tokenizer, progress=False)
    keep = ("id", "prompt", "chosen", "rejected", "chosen_token_rewards", "rejected_token_rewards")
    write_jsonl(args.workdir / data.name / "train.treg.jsonl", [{k: row[k] for k in keep} for row in annotated])
    return {"n_pairs": len(annotated), "seconds": time.perf_counter() - start}


def tokenized_split(data: BenchData, split: str, args: argparse.Namespace, tokenizer):
    from prefopt.data import load_pairs, tokenize_pairs

    pairs = load_pairs(str(args.workdir / data.name / f"{split}.jsonl"))
    return tokenize_pairs(pairs, tokenizer, max_length=args.max_length, max_prompt_length=args.max_prompt_length)[0]


# -------------------------------------------------------------------------------------- scoring
def implicit_rewards(model, pairs, spec: LossSpec, args: argparse.Namespace, tokenizer) -> dict[str, list]:
    """Per-pair implicit rewards of ``spec``'s loss under ``model`` (reference: the adapters disabled)."""
    import torch

    from prefopt.data import PairCollator
    from prefopt.logps import pair_logps
    from prefopt.losses import get_loss
    from prefopt.reference import add_reference_logps

    loss = get_loss(spec.name, **spec.hparams)
    collator = PairCollator(tokenizer.pad_token_id)
    if loss.requires_reference:
        pairs = add_reference_logps(pairs, model, collator=collator, batch_size=args.batch_size * 2,
                                    cache_dir=args.workdir / "reference", disable_adapter=True, progress=False)
    chosen, rejected = [], []
    model.eval()
    with torch.no_grad():
        for first in range(0, len(pairs), args.batch_size * 2):
            logps = pair_logps(model, collator([pairs[i] for i in range(first, min(first + args.batch_size * 2, len(pairs)))]))
            if logps.chosen_token_rewards is None:  # T-REG: its regularizer's rewards do not enter the implicit reward
                logps.chosen_token_rewards = torch.zeros_like(logps.chosen)
                logps.rejected_token_rewards = torch.zeros_like(logps.rejected)
            output = loss(logps)
            chosen += output.chosen_rewards.tolist()
            rejected += output.rejected_rewards.tolist()
    return {"chosen": chosen, "rejected": rejected,
            "chosen_len": [len(x) for x in pairs["chosen_ids"]], "rejected_len": [len(x) for x in pairs["rejected_ids"]]}


def generate(model, tokenizer, data: BenchData, args: argparse.Namespace) -> dict[str, Any]:
    """Greedy answers to the first ``--gen-prompts`` test prompts: lengths, and verified outcomes when possible."""
    from prefopt.data import load_pairs
    from prefopt.data.formats import text_of
    from prefopt.evaluate.accuracy import evaluate_accuracy
    from prefopt.online.sampler import HFSampler
    from prefopt.sampling import PromptItem, SamplingParams
    from prefopt.online.verifier import extract_gold, get_verifier

    test = load_pairs(str(args.workdir / data.name / "test.jsonl")).select(range(args.gen_prompts))
    items = [PromptItem(row["id"], row["prompt"]) for row in test]
    params = SamplingParams(greedy=True, max_new_tokens=args.max_new_tokens, batch_size=args.gen_batch_size)
    sampler = HFSampler(model, tokenizer, progress=False)
    start = time.perf_counter()
    if data.verified:  # the arithmetic chosen answers are correct by construction: their "#### N" is the gold
        golds = [extract_gold(text_of(row["chosen"])) for row in test]
        with get_verifier("math") as verifier:
            report = evaluate_accuracy(sampler, items, golds, verifier, params)
        return {**report.to_dict(), "seconds": time.perf_counter() - start}
    rollouts, stats = sampler.sample(items, params)
    return {"lengths": {r.prompt_id: r.length for r in rollouts},
            "truncation_rate": sum(r.finish_reason == "length" for r in rollouts) / len(rollouts),
            "seconds": time.perf_counter() - start, "tokens_per_second": stats.tokens_per_second}


# ------------------------------------------------------------------------------------- training
def recipe_for(data: BenchData, spec: LossSpec, lr: float, seed: int, args: argparse.Namespace, out: Path):
    """The :class:`prefopt.config.Recipe` of one training run (identical but for loss, lr and seed)."""
    from prefopt.config import (
        DataConfig,
        LoraConfig,
        LossConfig,
        ModelConfig,
        OptimConfig,
        Recipe,
        TrainConfig,
    )
    from prefopt.losses import get_loss

    reference = {"reference_cache_dir": str(args.workdir / "reference")} if get_loss(spec.name).requires_reference else {}
    return Recipe(
        model=ModelConfig(name_or_path=args.model, dtype="float32",
                          lora=LoraConfig(r=args.lora_r, alpha=args.lora_alpha, target_modules="all-linear")),
        data=DataConfig(train=str(args.workdir / data.name / "train.treg.jsonl"), max_length=args.max_length,
                        max_prompt_length=args.max_prompt_length),
        loss=LossConfig(name=spec.name, **reference, **spec.hparams),
        optim=OptimConfig(lr=lr, warmup_ratio=0.1, scheduler="cosine"),
        train=TrainConfig(output_dir=str(out), epochs=args.epochs, batch_size=args.batch_size, seed=seed),
        logging={"report_to": "none", "logging_steps": 1000},
    )


def train_and_validate(data, spec, lr, seed, args, tokenizer, val) -> dict[str, Any]:
    from prefopt.train import train

    out = args.workdir / data.name / spec.slug / f"lr{lr:g}-seed{seed}"
    start = time.perf_counter()
    result = train(recipe_for(data, spec, lr, seed, args, out))
    train_s = time.perf_counter() - start
    rewards = implicit_rewards(result.model, val, spec, args, tokenizer)
    return {"loss": spec.text, "lr": lr, "seed": seed, "steps": result.global_step,
            "train_loss": result.metrics.get("train_loss"), "train_s": train_s,
            "val_s": time.perf_counter() - start - train_s, "val": preference_metrics(rewards)}


def load_trained(out: Path, args: argparse.Namespace):
    import peft

    from prefopt.models import load_model

    return peft.PeftModel.from_pretrained(load_model(args.model), str(out))


def test_run(data, spec, lr, seed, args, tokenizer, test, start_gen) -> dict[str, Any]:
    model = load_trained(args.workdir / data.name / spec.slug / f"lr{lr:g}-seed{seed}", args)
    t0 = time.perf_counter()
    rewards = implicit_rewards(model, test, spec, args, tokenizer)
    test_s = time.perf_counter() - t0
    gen = generate(model, tokenizer, data, args)
    return {"loss": spec.text, "lr": lr, "seed": seed, "test_s": test_s, "gen_s": gen["seconds"],
            "test": preference_metrics(rewards), "generation": generation_metrics(gen, start_gen),
            "rewards": rewards, "gen_raw": gen}


def run(args: argparse.Namespace, specs: list[LossSpec]) -> None:
    """Every stage in order, each skipped when its result file exists."""
    from prefopt.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(args.model)
    bench = datasets_of(args)
    for data in bench:
        t0 = time.perf_counter()
        cached(args.workdir / data.name / "splits.json", lambda: prepare(data, args, tokenizer))
        cached(args.workdir / data.name / "treg.json", lambda: annotate_treg(data, args, tokenizer))
        cached(args.workdir / data.name / "start.json", lambda: generate(load_model(args.model), tokenizer, data, args))
        print(f"[{data.name}] data, T-REG rewards and starting model ready ({time.perf_counter() - t0:.0f} s)", flush=True)
    splits = {d.name: {s: tokenized_split(d, s, args, tokenizer) for s in ("val", "test")} for d in bench}
    starts = {d.name: json.loads((args.workdir / d.name / "start.json").read_text()) for d in bench}

    def one(data: BenchData, spec: LossSpec, seed: int, lrs: list[float]) -> None:
        vals = [cached(args.workdir / data.name / spec.slug / f"lr{lr:g}-seed{seed}" / "val.json",
                       lambda lr=lr: train_and_validate(data, spec, lr, seed, args, tokenizer, splits[data.name]["val"]))
                for lr in lrs]
        best = max(vals, key=lambda v: (v["val"]["accuracy"]["rate"], v["val"]["margin"]["mean"]))
        result = cached(args.workdir / data.name / spec.slug / f"seed{seed}.test.json",
                        lambda: test_run(data, spec, best["lr"], seed, args, tokenizer,
                                         splits[data.name]["test"], starts[data.name]))
        print(f"[{data.name}] {spec.text} seed {seed}: lr {result['lr']:g}, test accuracy "
              f"{result['test']['accuracy']['rate']:.3f}, length {result['generation']['length']['mean']:.1f}", flush=True)

    for spec in specs:
        for data in bench:
            one(data, spec, args.seed, args.lrs)
    for data in bench:
        for spec in top_specs(args, data, specs):
            lr = read_test(args.workdir, data.name, spec.slug, args.seed)["lr"]
            one(data, spec, args.second_seed, [lr])


def val_of(args: argparse.Namespace, data: BenchData, spec: LossSpec) -> dict[str, Any] | None:
    """The validation result of the learning rate kept for ``spec`` (first seed), if it has been run."""
    test = read_test(args.workdir, data.name, spec.slug, args.seed)
    if test is None:
        return None
    return json.loads((args.workdir / data.name / spec.slug / f"lr{test['lr']:g}-seed{args.seed}" / "val.json").read_text())


def top_specs(args: argparse.Namespace, data: BenchData, specs: list[LossSpec]) -> list[LossSpec]:
    """The ``--seed-rows`` specs with the best validation accuracy (then margin) on ``data``."""
    done = [(val_of(args, data, s), s) for s in specs]
    done = [(v, s) for v, s in done if v is not None]
    done.sort(key=lambda vs: (vs[0]["val"]["accuracy"]["rate"], vs[0]["val"]["margin"]["mean"]), reverse=True)
    return [s for _, s in done[: args.seed_rows]]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--losses", nargs="+", default=list(DEFAULT_LOSSES), help="loss specs name[:key=value,...]")
    p.add_argument("--lrs", nargs="+", type=float, default=[1e-4, 3e-4], help="learning-rate grid, the same for every loss")
    p.add_argument("--datasets", nargs="+", default=["hh", "arithmetic"], choices=("hh", "arithmetic"))
    p.add_argument("--hh-data", type=Path, default=SHARED / "hh_rlhf_harmless" / "test.jsonl.gz")
    p.add_argument("--arithmetic-data", type=Path, default=REPO / "data" / "arithmetic_pairs.jsonl")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--n-train", type=int, default=24)
    p.add_argument("--n-val", type=int, default=16)
    p.add_argument("--n-test", type=int, default=32)
    p.add_argument("--gen-prompts", type=int, default=24, help="test prompts answered greedily (<= --n-test)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--gen-batch-size", type=int, default=24)
    p.add_argument("--max-length", type=int, default=256, help="prompt + completion tokens; longer pairs are left out")
    p.add_argument("--max-prompt-length", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--lora-alpha", type=int, default=32)
    p.add_argument("--seed", type=int, default=0, help="split seed and first training seed")
    p.add_argument("--second-seed", type=int, default=1)
    p.add_argument("--seed-rows", type=int, default=2, help="best specs per dataset rerun with --second-seed")
    p.add_argument("--workdir", type=Path, default=REPO / "runs" / "losses_compare")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "losses_compare.json")
    p.add_argument("--table", type=Path, default=REPO / "bench" / "results" / "losses_compare.md")
    p.add_argument("--plot", type=Path, default=REPO / "docs" / "assets" / "losses_compare.png")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--report-only", action="store_true", help="only rebuild --out/--table/--plot from --workdir")
    args = p.parse_args(argv)
    if args.gen_prompts > args.n_test:
        p.error(f"--gen-prompts {args.gen_prompts} exceeds --n-test {args.n_test}")
    return args


def check_specs(args: argparse.Namespace) -> list[LossSpec]:
    """Parse and validate every loss spec before any model is loaded (exit 2 with one line otherwise)."""
    from prefopt.config import LossConfig

    specs = []
    for text in args.losses:
        try:
            spec = LossSpec.parse(text)
            LossConfig(name=spec.name, **spec.hparams)
        except Exception as err:  # pydantic's ValidationError or a malformed spec: one line, no traceback
            message = err.errors()[0]["msg"] if hasattr(err, "errors") else str(err)
            raise SystemExit(f"error: --losses {text!r}: {message}") from None
        specs.append(spec)
    if len({s.slug for s in specs}) < len(specs):
        raise SystemExit("error: --losses lists the same spec twice")
    return specs


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    specs = check_specs(args)
    start = time.perf_counter()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if not args.report_only:
        run(args, specs)
    print(report(args, specs, None if args.report_only else time.perf_counter() - start))


if __name__ == "__main__":
    main()
