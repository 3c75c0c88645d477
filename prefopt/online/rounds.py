"""``prefopt rounds``: iterated semi-on-policy preference rounds, resumable at every step.

Round 0 evaluates the initial model on every evaluation set (``eval.sets``). Each round ``r = 1..count`` then runs
five steps, each writing its files atomically into ``round_NNN/`` and then recording itself in
``manifest.json`` (see :mod:`prefopt.online.run_dir`):

1. ``sample``: the round's prompts (its slice of the shuffled training problems — disjoint, or from
   a cycle of reshuffled epochs — or a fresh draw) → ``n`` rollouts each from the policy of round
   ``r − 1`` → ``rollouts.jsonl``;
2. ``score``: verify every rollout (truncated ones count as wrong unless ``verifier.truncated:
   verify``), check its format, advance the reward clock (rounds and optimizer steps completed) and
   score each prompt's group with the length reward given the reward state of round ``r − 1``; the
   reward updates its state (HAPO history, LASER-D coverage) → ``scored.jsonl``, ``reward_state.json``;
3. ``pairs``: scored groups → preference pairs → ``pairs.jsonl`` (with provenance and weights);
4. ``train``: the loss on the pairs, starting from the policy of round ``r − 1`` (fresh LoRA adapters
   or all weights), reference = the initial model or that starting policy → ``policy/``;
5. ``eval``: the new policy on every evaluation set (greedy) → ``eval.json`` (every completion),
   ``metrics.json`` (per set: accuracy, lengths, the paired difference to round 0), and the
   trackers of ``logging.report_to`` (:mod:`prefopt.online.trackers`).

Running the same command again skips every recorded step, so a killed run continues where it
stopped and redoes at most the step it was in (training resumes from its last checkpoint when
``train.save_steps`` is set). The recipe is stored in the manifest; resuming with a different recipe
is an error, except ``rounds.count`` (extend a finished run) and the ``logging`` section.

Under ``accelerate launch --num_processes N`` the same loop runs on N processes
(:mod:`prefopt.processes`, :mod:`prefopt.online.sharding`): ``sample``, ``train`` and ``eval`` run on all of them (sampling and
evaluation on each process's shard of the prompts, training data parallel), ``score`` and ``pairs`` on
the main process only; only the main process writes, and every process waits for the others after
each step.
"""

from __future__ import annotations

import logging
import random
import shutil
import statistics
import time
from typing import Any

from transformers import TrainerCallback, set_seed

from prefopt.config import RecipeError
from prefopt.data import load_pairs, tokenize_pairs
from prefopt.evaluate.accuracy import AccuracyReport, evaluate_accuracy, paired_difference
from prefopt.io import fault_point, read_json, read_jsonl, write_json, write_jsonl
from prefopt.losses import get_loss
from prefopt.models import load_tokenizer
from prefopt.online.answers import format_score
from prefopt.online.config import RoundsRecipe
from prefopt.online.pairs import build_pairs
from prefopt.online.policy import load_initial, load_policy, merged_policy_dir, release_memory, save_policy
from prefopt.online.problems import Problem, load_problems
from prefopt.online.rewards import get_reward, score_rollouts
from prefopt.online.run_dir import RunDir
from prefopt.online.sampler import HFSampler, VLLMSampler, resolve_engine
from prefopt.online.sharding import ShardedSampler, vllm_parallelism
from prefopt.online.trackers import log_round
from prefopt.online.types import RewardState, Rollout, ScoredRollout
from prefopt.online.verifier import get_verifier
from prefopt.processes import Processes
from prefopt.sampling import Sampler
from prefopt.train import PreferenceTrainer, add_lora, loop_arguments
from prefopt.train.checkpoints import last_complete_checkpoint
from prefopt.verification import Verifier, verify_rollouts

logger = logging.getLogger(__name__)

STEPS: tuple[str, ...] = ("sample", "score", "pairs", "train", "eval")
ALL_PROCESSES: tuple[str, ...] = ("sample", "train", "eval")  # the steps every process takes part in
RESUMABLE_CHANGES = ("rounds.count", "logging")


def round_problems(problems: list[Problem], recipe: RoundsRecipe, index: int) -> list[Problem]:
    """The training problems of round ``index`` (1-based).

    ``disjoint``: slice ``index`` of one seeded shuffle; ``epochs``: slice ``index`` of the stream of
    seeded reshuffles (epoch ``e`` shuffled with seed ``(seed, e)``), so every problem is seen once per
    epoch and comes back in the next; ``resample``: an independent draw.
    """
    cfg = recipe.rounds
    if cfg.partition == "resample":
        return random.Random(cfg.seed * 1_000_003 + index).sample(problems, cfg.prompts_per_round)
    start, stop = (index - 1) * cfg.prompts_per_round, index * cfg.prompts_per_round
    epochs = 1 if cfg.partition == "disjoint" else -(-stop // len(problems))
    stream: list[Problem] = []
    for epoch in range(epochs):
        order = list(problems)
        random.Random(cfg.seed if epoch == 0 else f"{cfg.seed}-epoch{epoch}").shuffle(order)
        stream.extend(order)
    return stream[start:stop]


def _comparable(recipe: dict[str, Any]) -> dict[str, Any]:
    data = {k: v for k, v in recipe.items() if k != "logging"}
    data["rounds"] = {k: v for k, v in data["rounds"].items() if k != "count"}
    return data


class _FaultCallback(TrainerCallback):
    """Fault points inside training (``<round>:train:step<N>``), for the kill-and-resume tests."""

    def __init__(self, index: int) -> None:
        self.index = index

    def on_save(self, args, state, control, **kwargs):
        fault_point(f"{self.index}:train:saved{state.global_step}")

    def on_step_end(self, args, state, control, **kwargs):
        fault_point(f"{self.index}:train:step{state.global_step}")


class RoundsRunner:
    """Runs (or resumes) a :class:`RoundsRecipe` in ``run.output_root/run.name``."""

    def __init__(self, recipe: RoundsRecipe, progress: bool = True) -> None:
        self.recipe = recipe
        self.processes = Processes.launched()
        self.progress = progress and self.processes.is_main
        self.run = RunDir(recipe.run.directory, writer=self.processes.is_main)
        self._check_manifest()
        cfg = recipe.problems
        fields = dict(question_field=cfg.question_field, answer_field=cfg.answer_field, id_field=cfg.id_field,
                      config_name=cfg.config_name)
        self.train_problems = load_problems(cfg.train, split=cfg.train_split, **fields)
        self.eval_sets = load_eval_sets(recipe)
        self._check_problem_count()
        self._check_processes()
        self.gold = {p.id: p.gold for p in self.train_problems}
        self.tokenizer = load_tokenizer(recipe.model.name_or_path, trust_remote_code=recipe.model.trust_remote_code)
        self._policy: tuple[int, Any] | None = None
        self._vllm: tuple[int, VLLMSampler] | None = None
        self.verifier: Verifier | None = None

    def _check_manifest(self) -> None:
        current = self.recipe.model_dump(mode="json")
        stored = self.run.manifest.get("recipe")
        if stored is not None and _comparable(stored) != _comparable(current):
            changed = sorted(k for k in current if current.get(k) != stored.get(k))
            raise RecipeError(
                f"{self.run.root} was started with a different recipe (sections differing: {', '.join(changed)}); "
                f"resume with the original recipe (only {' and '.join(RESUMABLE_CHANGES)} may change) "
                "or choose a new run.name"
            )

    def _check_processes(self) -> None:
        tp = self.recipe.sampler.tensor_parallel_size
        if resolve_engine(self.recipe.sampler.engine) == "vllm" and self.processes.world > 1 and self.processes.world % tp:
            raise RecipeError(
                f"sampler.tensor_parallel_size={tp} does not divide the {self.processes.world} launched processes; "
                "launch a multiple of it (accelerate launch --num_processes)"
            )

    def _check_problem_count(self) -> None:
        cfg, have = self.recipe.rounds, len(self.train_problems)
        need = cfg.prompts_per_round * (cfg.count if cfg.partition == "disjoint" else 1)
        if need > have:
            raise RecipeError(
                f"rounds: {cfg.count} rounds x {cfg.prompts_per_round} prompts ({cfg.partition}) need {need} training "
                f"problems but {self.recipe.problems.train} has {have}; lower "
                "rounds.prompts_per_round or rounds.count, or use rounds.partition=epochs or resample"
            )
        reward = get_reward(self.recipe.reward.name, **self.recipe.reward.hparams)
        if reward.per_problem_history and cfg.partition == "epochs" and cfg.count * cfg.prompts_per_round <= have:
            raise RecipeError(
                f"rounds: reward {self.recipe.reward.name!r} keeps a per-problem history, but {cfg.count} rounds x "
                f"{cfg.prompts_per_round} prompts never exhaust the {have} problems of {self.recipe.problems.train}, so "
                "no problem recurs (plain correctness); raise rounds.count or rounds.prompts_per_round, or train on "
                "fewer problems"
            )

    # ----------------------------------------------------------------- driver
    def run_all(self) -> list[dict[str, Any]]:
        """Run every step not yet recorded; returns the per-round metrics (round 0 first)."""
        if self.processes.is_main:
            self.run.root.mkdir(parents=True, exist_ok=True)
            self.run.clean_temporaries()
            self.run.manifest["recipe"] = self.recipe.model_dump(mode="json")
            self.run.save()
        self.processes.wait()
        with get_verifier(self.recipe.verifier.name, timeout=self.recipe.verifier.timeout,
                          **self.recipe.verifier.hparams) as verifier:
            self.verifier = verifier
            self._step(0, "eval")
            for index in range(1, self.recipe.rounds.count + 1):
                for step in STEPS:
                    self._step(index, step)
        return [read_json(self.run.round_dir(i) / "metrics.json") for i in range(self.recipe.rounds.count + 1)]

    def _step(self, index: int, step: str) -> None:
        """Run ``step`` of round ``index`` unless it is recorded; then every process re-reads the manifest."""
        if self.run.done(index, step):
            return
        if step in ALL_PROCESSES or self.processes.is_main:
            if index > 0:
                logger.info("round %d/%d: %s", index, self.recipe.rounds.count, step)
            fault_point(f"{index}:{step}:start")
            getattr(self, f"_{step}")(index)
        self.processes.wait()
        self.run.reload()

    # ----------------------------------------------------------------- policy and sampler
    def _policy_model(self, index: int):
        if self._policy is None or self._policy[0] != index:
            self._policy = None  # free the previous policy before loading the next
            self._policy = (index, load_policy(self.recipe.model, self.run, index))
        return self._policy[1]

    def _sampler(self, index: int) -> Sampler:
        """A sampler on the policy after round ``index`` (one vLLM engine at a time, reused while the policy is)."""
        cfg = self.recipe.sampler
        if resolve_engine(cfg.engine) != "vllm":
            return HFSampler(self._policy_model(index), self.tokenizer, progress=self.progress)
        if self._vllm is None or self._vllm[0] != index:
            self._release_vllm()
            path = merged_policy_dir(self.recipe.model, self.run, index, self.tokenizer)
            model = self.recipe.model
            self._vllm = (index, VLLMSampler(path, self.tokenizer, dtype=model.dtype,
                                             trust_remote_code=model.trust_remote_code,
                                             gpu_memory_utilization=cfg.gpu_memory_utilization,
                                             **vllm_parallelism(self.processes, cfg.tensor_parallel_size)))
        return self._vllm[1]

    def _sharded(self, sampler: Sampler) -> ShardedSampler:
        """``sampler`` over this process's shard (vLLM tensor-parallel groups share one shard)."""
        vllm = resolve_engine(self.recipe.sampler.engine) == "vllm" and self.processes.world > 1
        return ShardedSampler(sampler, self.processes, self.recipe.sampler.tensor_parallel_size if vllm else 1)

    def _release_vllm(self) -> None:
        """Drop the vLLM engine and return its GPU memory (before training, or before the next policy's engine)."""
        if self._vllm is not None:
            self._vllm = None
            release_memory()

    # ----------------------------------------------------------------- steps
    def _sample(self, index: int) -> None:
        problems = round_problems(self.train_problems, self.recipe, index)
        items = [p.prompt_item(self.recipe.problems.instruction) for p in problems]
        params = self.recipe.sampler.params(seed=self.recipe.rounds.seed * 1000 + index)
        rollouts, stats = self._sharded(self._sampler(index - 1)).sample(items, params, index)
        if not self.processes.is_main:
            return
        write_jsonl(self.run.round_dir(index) / "rollouts.jsonl", [r.to_dict() for r in rollouts])
        self.run.complete(index, "sample", {"seconds": stats.seconds, "prompts": stats.prompts,
                                            "rollouts": stats.rollouts, "generated_tokens": stats.generated_tokens,
                                            "tokens_per_second": stats.tokens_per_second})

    def _reward_state(self, index: int) -> RewardState:
        """The reward state after round ``index``, with the clock advanced to the start of round ``index + 1``.

        ``round`` counts the rounds completed, ``step`` the optimizer steps they trained (TLTS's clocks).
        """
        if index == 0:
            return RewardState()
        path = self.run.round_dir(index) / "reward_state.json"
        state = RewardState.from_dict(read_json(path), where=str(path))
        state.round = index
        state.step += self.run.record(index, "train")["steps"]
        return state

    def _score(self, index: int) -> None:
        directory, cfg = self.run.round_dir(index), self.recipe.verifier
        path = directory / "rollouts.jsonl"
        rollouts = [Rollout.from_dict(row, where=f"{path} row {i}") for i, row in enumerate(read_jsonl(path), 1)]
        start = time.perf_counter()
        finish = [r.finish_reason for r in rollouts]
        verdicts = verify_rollouts(self.verifier, [r.completion for r in rollouts],
                                   [self.gold[r.prompt_id] for r in rollouts], finish, cfg.truncated)
        verify_seconds = time.perf_counter() - start
        formats = [format_score(r.completion, r.finish_reason, cfg.format, cfg.format_pattern) for r in rollouts]
        state = self._reward_state(index - 1)
        clock = {"round": state.round, "step": state.step}
        reward = get_reward(self.recipe.reward.name, **self.recipe.reward.hparams)
        scored = score_rollouts(rollouts, verdicts, reward, state, formats)
        write_jsonl(directory / "scored.jsonl", [s.to_dict() for s in scored])
        write_json(directory / "reward_state.json", state.to_dict())
        components = sorted({name for s in scored for name in s.components})
        self.run.complete(index, "score", {
            "verify_seconds": verify_seconds,
            "accuracy": statistics.fmean(s.correct for s in scored),
            "mean_length": statistics.fmean(r.length for r in rollouts),
            "truncation_rate": statistics.fmean(f == "length" for f in finish),
            "format_rate": statistics.fmean(formats),
            "mean_reward": statistics.fmean(s.reward for s in scored),
            "verify_errors": sum(s.verify_status not in ("ok", "truncated") for s in scored),
            "reward_clock": clock,
            "reward_components": {name: statistics.fmean(s.components.get(name, 0.0) for s in scored)
                                  for name in components},
        })

    def _pairs(self, index: int) -> None:
        directory = self.run.round_dir(index)
        path = directory / "scored.jsonl"
        scored = [ScoredRollout.from_dict(row, where=f"{path} row {i}") for i, row in enumerate(read_jsonl(path), 1)]
        pairs, stats = build_pairs(scored, self.recipe.pairs.strategy, **self.recipe.pairs.options)
        write_jsonl(directory / "pairs.jsonl", [p.to_dict() for p in pairs])
        self.run.complete(index, "pairs", stats.to_dict())

    def _train(self, index: int) -> None:
        directory = self.run.round_dir(index)
        if self.run.record(index, "pairs")["pairs"] == 0:
            logger.warning("round %d built no pairs; the policy is carried over unchanged", index)
            self.run.complete(index, "train", {"policy": None, "seconds": 0.0, "steps": 0})
            return
        start = time.perf_counter()
        recipe, cfg = self.recipe, self.recipe.train
        pairs, tstats = tokenize_pairs(load_pairs(directory / "pairs.jsonl"), self.tokenizer, max_length=cfg.max_length,
                                       max_prompt_length=cfg.max_prompt_length, truncation="keep_start")
        self._policy = None  # training holds its own copy
        self._release_vllm()
        policy = load_policy(recipe.model, self.run, index - 1)
        set_seed(cfg.seed + index)  # fresh adapters initialise identically in a resumed process
        policy = add_lora(policy, recipe.model)
        loss = get_loss(recipe.loss.name, **recipe.loss.hparams)
        ref_model, reference = None, recipe.loss.reference if loss.requires_reference else None
        if loss.requires_reference and recipe.rounds.reference == "initial" and index > 1:
            ref_model = load_initial(recipe.model)
        elif reference == "live" and recipe.model.lora is not None:
            ref_model = load_policy(recipe.model, self.run, index - 1)
        args = loop_arguments(
            cfg, recipe.optim, recipe.logging, recipe.loss, recipe.model, output_dir=str(directory / "train"),
            seed=cfg.seed + index, run_name=f"{recipe.logging.run_name or recipe.run.name}-round{index:03d}",
            disable_tqdm=not self.progress,
            reference_cache_dir=recipe.loss.reference_cache_dir or str(self.run.root / "reference_cache"),
        )
        trainer = PreferenceTrainer(policy, args, loss=loss, train_dataset=pairs, processing_class=self.tokenizer,
                                    ref_model=ref_model, reference=reference, callbacks=[_FaultCallback(index)])
        del ref_model
        checkpoint = last_complete_checkpoint(args.output_dir)
        output = trainer.train(resume_from_checkpoint=checkpoint)
        self.processes.wait()  # every process is done with the checkpoints before they are removed
        if self.processes.is_main:
            kind = save_policy(trainer.model, self.run, index)
            logs = [entry for entry in trainer.state.log_history if "rewards/margins" in entry]
            record = {"policy": kind, "seconds": time.perf_counter() - start, "steps": trainer.state.global_step,
                      "pairs": len(pairs), "truncated_pairs": tstats.n_truncated, "loss": output.training_loss,
                      "resumed_from": checkpoint}
            if logs:
                record.update({k: logs[-1][k] for k in ("rewards/margins", "rewards/accuracies")})
            self.run.complete(index, "train", record)
            shutil.rmtree(args.output_dir, ignore_errors=True)  # checkpoints are superseded by policy/
        del trainer, policy, output
        release_memory()  # the trainer's cached blocks, before the next engine starts

    def _eval(self, index: int) -> None:
        directory = self.run.round_dir(index)
        instruction = self.recipe.problems.instruction
        sampler = self._sharded(self._sampler(index))
        reports = {}
        for name, problems in self.eval_sets.items():
            logger.info("round %d: evaluating on %s (%d problems)", index, name, len(problems))
            reports[name] = evaluate_accuracy(sampler, [p.prompt_item(instruction) for p in problems],
                                              [p.gold for p in problems], self.verifier, self.recipe.eval.params(),
                                              truncated=self.recipe.verifier.truncated)
        if not self.processes.is_main:
            return
        write_json(directory / "eval.json", {"sets": {name: report.to_dict() for name, report in reports.items()}})
        metrics = self._metrics(index, reports)
        write_json(directory / "metrics.json", metrics)
        log_round(self.recipe.logging.report_to, self.run.root, self.recipe.run.name, metrics)
        self.run.complete(index, "eval", {"seconds": metrics["eval_seconds"]})

    def _metrics(self, index: int, reports: dict[str, AccuracyReport]) -> dict[str, Any]:
        """``metrics.json`` of a round: per evaluation set its results and paired difference to round 0,
        then the steps' records."""
        sets = {name: report.summary() for name, report in reports.items()}
        metrics: dict[str, Any] = {"round": index, "sets": sets,
                                   "eval_seconds": sum(report.seconds for report in reports.values())}
        if index == 0:
            return metrics
        baseline = read_json(self.run.round_dir(0) / "eval.json")["sets"]
        for name, report in reports.items():
            base = AccuracyReport.from_dict(baseline[name])
            diff = paired_difference(base.outcomes, report.outcomes)
            sets[name].update({
                "accuracy_diff_vs_round0": diff.diff, "diff_ci_low": diff.ci_low, "diff_ci_high": diff.ci_high,
                "diff_p_value": diff.p_value, "length_change_vs_round0": report.mean_length / base.mean_length - 1,
            })
        sample, score = self.run.record(index, "sample"), self.run.record(index, "score")
        pairs, train = self.run.record(index, "pairs"), self.run.record(index, "train")
        metrics.update({
            "train_accuracy": score["accuracy"], "train_mean_length": score["mean_length"],
            "train_truncation_rate": score["truncation_rate"], "reward": score["reward_components"],
            "reward_clock": score["reward_clock"], "pairs": pairs["pairs"],
            "skipped_groups": sum(pairs["skipped_groups"].values()), "sampling_seconds": sample["seconds"],
            "sampling_tokens_per_second": sample["tokens_per_second"], "verify_seconds": score["verify_seconds"],
            "training_seconds": train["seconds"],
        })
        return metrics


def load_eval_sets(recipe: RoundsRecipe) -> dict[str, list[Problem]]:
    """The problems of every evaluation set of ``eval.sets``, in the recipe's order."""
    return {name: load_problems(**cfg.source()) for name, cfg in recipe.eval.sets.items()}
