"""The GRPO training loop, as the study runs it: one step = one rollout batch and its epochs.

Per step: draw B prompts; sample G completions each; score them; let the run's cold-start remedies
act (`guidance/`: inject demonstrations, draw again, plan supervised terms); group-normalise the
rewards into advantages; take rollout-time (and reference) log-probs once; then `num_iterations`
epochs of clipped-surrogate updates over minibatches; last, the rollout engine takes the new
weights. Step counts therefore compare with the study's tables. Accuracy and format metrics come
from sampled rows only. The loop names no remedy: it calls each phase's hook of every remedy the
config builds (`guidance/remedy.py`).

A step, file by file, calls out of this module and, but for one call, never back into it:
`EngineRollouts` (`engine.py`) samples, asking `PolicyOps.next_prompts` (`ops.py`: the stream and
the processor) for the prompts and entering the sampling context `ops.py` built; the `Scorer`
scores; each remedy's hooks act through `PolicyOps`, never through the trainer; the `StepBatch` is
built once, its log-probs from `ops.py`; the update steps through `OptimizerStep` (`ops.py`); the
engine takes the weights; `checkpoint.py` saves and resumes a `RunState` (`run_state.py`). Calls
back into this module during a step: only a remedy's `redraw` (this `draw`), once per extra draw
of dynamic sampling: none without it, at most `dynamic_sampling.max_batches - 1` (3 by default)
with it (`tests/training/test_train_e2e.py` walks a step call by call and checks this).
"""

from __future__ import annotations

import functools
import math
import random
import time
from pathlib import Path

import torch
import yaml
from tqdm.auto import tqdm

from ..config import TrainConfig, to_dict, validate
from ..core import algo, losses
from ..data import PromptStream, eval_samples, open_source, split_indices
from ..guidance import Remedy, RemedyKit, StepContext, build_remedies, check_written_demonstrations
from ..models import adapter_for, pick_device
from ..models.families.frames import frame_sampling
from ..rollout import Engine, EngineError, Rollout, StepBatch, padding_share
from ..rollout.batch import group_order
from ..rollout.turns import ToolEngine
from ..tasks import get_task
from ..tasks.rewards import Scorer
from ..tasks.styles import PromptStyle, get_style
from . import checkpoint, precision
from .distributed import strategies
from .distributed import world as distributed
from .distributed.strategies import Replicated
from .distributed.world import World
from .engine import Draw, EngineRollouts, build_engine
from .heldout import HeldOutSets
from .inputs import RunInputs
from .metrics import PhaseClock, completion_rows, frac_zero_std, rollout_metrics, run_summary, update_metrics
from .ops import (
    OptimizerStep,
    first_epoch_logprobs,
    policy_ops,
    reference_logprobs,
    rows_logprobs,
    sampling_context,
    training_passes,
)
from .run_state import Progress, RunState
from .setup import check_video_data, check_world, frozen_loader, load_policy, make_optimizer, sample_check
from .signals import StopRequest, stop_on_signal
from .tool_use import add_tool_rewards, tool_metrics, with_tools
from .tracking import Tracker


class Trainer:
    def __init__(self, cfg: TrainConfig, inputs: RunInputs | None = None):
        self.cfg, self.inputs = validate(cfg), inputs or RunInputs()
        given, self.out, self.task = self.inputs, Path(cfg.output_dir), get_task(cfg.task, cfg.task_options)
        self.out.mkdir(parents=True, exist_ok=True)
        self.world, self.device, self.precision, self.parallel = placement(cfg)
        self.local_minibatch = cfg.effective_minibatch_size // self.world.size
        self.policy = load_policy(cfg, self.device, self.parallel, self.precision, given.model, given.processor)
        self.model, self.processor = self.policy.model, self.policy.processor
        self.adapter = adapter_for(self.model)
        engine, self.style, turn_end = self._engine()
        self.rollouts, self.eval_engine = EngineRollouts(cfg, engine), engine.evaluator()
        cfg.logprob_sharing = self.adapter.logprob_sharing(cfg.logprob_sharing, cfg.gradient_checkpointing)
        self.scorer = Scorer(given.rewards or cfg.reward_funcs, cfg.reward_weights, self.style, self.task)
        source = given.train or open_source(
            cfg.data.train, cfg.data.images, self.task, cfg.data.columns, cfg.data.split
        )
        train_rows, _ = split_indices(len(source), cfg.data.eval_holdout)
        check_video_data(self.adapter, source, train_rows)
        self.stream = self._prompt_stream(source, train_rows)
        self.remedies = self._remedies(engine if cfg.tools.names else None, turn_end, source, train_rows)
        self.optimizer, self.scheduler = make_optimizer(
            cfg, self.model, self.parallel, self.local_minibatch, self.precision
        )
        self.run = self._run_state()
        self.optimizer_step, self.clock = OptimizerStep(self.run), PhaseClock()  # the clock: time/<phase>_s
        self.ops = policy_ops(
            self.run, self.rollouts, self.optimizer_step, self.style, self.precision, self.device, self.clock
        )
        main = self.world.is_main  # only the main process evaluates
        self.eval_sets = (given.eval_sets or HeldOutSets(cfg.data, self.task)) if main else HeldOutSets.none()
        self.last_eval: dict = {}  # the newest held-out results, for the model card

    def _engine(self) -> tuple[Engine, PromptStyle, int]:
        """The rollout engine around the policy (wrapped to run tools, with tools), the prompt style,
        and the family's turn-end token."""
        context = sampling_context(self.parallel, self.model, self.precision, self.device)
        # Reading ZeRO-3's partitioned weights needs its gather; FSDP2's are gathered tensor by tensor.
        gather = functools.partial(self.parallel.gathered, self.model) if self.world.zero_stage == 3 else None
        cfg, out = self.cfg, self.out
        engine = build_engine(cfg, self.model, self.processor, context, self.precision, out, self.world, gather)
        # With tools, every turn after the first samples the conversation so far (rollout/turns.py).
        turn_end = self.adapter.turn_end_id(self.processor)
        engine, style = with_tools(self.cfg, engine, get_style(self.cfg.prompt, self.task), turn_end)
        return engine, style, turn_end

    def _prompt_stream(self, source, train_rows) -> PromptStream:
        cfg = self.cfg
        return PromptStream(
            source,
            train_rows,
            cfg.seed,
            cfg.data.on_bad_sample,
            log=tqdm.write,
            check=sample_check(self.adapter, self.processor, self.style, cfg.max_prompt_length),
            # A tool looks at the image as it is: only runs without tools fit it to the model's size up front.
            prepare=None if cfg.tools.names else functools.partial(self.adapter.fit_image, processor=self.processor),
            frames=frame_sampling(self.processor) if self.adapter.supports_video else None,
            num_workers=cfg.data.num_workers,
        )

    def _remedies(self, tool_engine: ToolEngine | None, turn_end: int, source, train_rows) -> list[Remedy]:
        """The run's cold-start remedies; the demonstrations they would write are checked first."""
        cfg, tok = self.cfg, self.processor.tokenizer
        demonstrate = tool_engine.demonstration if tool_engine else None  # demonstrations that call the tools
        frozen = frozen_loader(cfg, self.device, self.precision)  # a teacher, on this run's device and precision
        kit = RemedyKit(self.style, self.scorer, tok, turn_end, tok.pad_token_id, cfg.seed, demonstrate, frozen)
        remedies = build_remedies(cfg, kit)
        if any(remedy.writes_demonstrations for remedy in remedies):
            # A demonstration that loses reward, or is cut where the policy samples, trains nothing useful.
            log = tqdm.write if self.world.is_main else lambda line: None
            firsts = eval_samples(source, train_rows, 3)
            check_written_demonstrations(kit, firsts, cfg.max_completion_length, log)
        return remedies

    def _run_state(self) -> RunState:
        """The run's stateful parts, as checkpoints, the optimizer step and the policy ops see them."""
        return RunState(
            self.cfg,
            self.out,
            self.world,
            self.parallel,
            self.model,
            self.processor,
            self.optimizer,
            self.scheduler,
            self.stream,
            self.remedies,
            self.inputs.reproduce,
        )

    # ---------------------------------------------------------------- the loop
    def train(self) -> dict:
        """Train to max_steps (or until a signal asks to stop: then save and return). The signal
        handlers installed for the run are the caller's again when it returns, however it ends."""
        with stop_on_signal() as stop:
            try:
                return self._train(stop)
            finally:
                self.rollouts.close()
                self.stream.close()

    def _train(self, stop: StopRequest) -> dict:
        cfg, main = self.cfg, self.world.is_main
        progress = checkpoint.resume_run(self.run) if cfg.resume else Progress(0)
        self.optimizer_step.resume(progress)
        tracker = self._open_tracker(progress.step) if main else None
        began = time.time()
        if progress.step == 0 and cfg.data.eval:
            baseline = self.evaluate()
            if main:
                tracker.log(0, {**baseline, "world_size": self.world.size})
        history = self._steps(progress.step, began, tracker, stop)
        if main:
            tracker.close()
        summary = run_summary(history, list(self.eval_sets), self.out) if main else {}
        self.parallel.close()
        self.world.close()
        return summary

    def _steps(self, start: int, began: float, tracker: Tracker | None, stop: StopRequest) -> list[dict]:
        """Steps `start` to max_steps, each evaluated, logged and saved as configured; their metrics."""
        cfg, history = self.cfg, []
        bar = tqdm(
            range(start, cfg.max_steps),
            initial=start,
            total=cfg.max_steps,
            desc="GRPO",
            disable=not (cfg.progress and self.world.is_main),
        )
        for step in bar:
            metrics, rollout, failure = self.step(step, began)
            done = step + 1
            if failure is not None:  # the step trained but the engine failed to take its weights: keep its record
                if tracker is not None:
                    self._log(tracker, done, metrics, rollout)
                raise self._engine_failed(failure, done) from None
            if cfg.data.eval_steps and cfg.data.eval and (done % cfg.data.eval_steps == 0 or done == cfg.max_steps):
                try:
                    metrics.update(self.evaluate())
                except EngineError as exc:  # the step trained: the engine failed to evaluate
                    raise self._engine_failed(exc, done) from None
            if tracker is not None:
                self._log(tracker, done, metrics, rollout)
            history.append({"step": done, **metrics})
            for callback in self.inputs.callbacks:
                callback(done, metrics)
            if rollout is not None:
                bar.set_postfix(
                    reward=f"{metrics['reward/mean']:.2f}",
                    acc=f"{metrics['rollout/accuracy']:.2f}",
                    answered=f"{metrics['rollout/answer_present_rate']:.2f}",
                )
            if done % cfg.save_steps == 0 or done == cfg.max_steps or stop.requested:
                self.save(done)
            if stop.requested:
                tqdm.write(f"stopped by signal; checkpoint-{done} saved, resume with resume=true")
                break
        return history

    def step(self, step: int, began: float) -> tuple[dict, Rollout | None, EngineError | None]:
        """One whole step, its weights pushed to the engine at its end; returns its metrics, averaged
        over processes, the rollout (None for a step a remedy trains itself, such as a supervised
        warm-up step) and the engine's failure to take the new weights, if it failed (the step trained:
        the caller logs it and saves it before stopping)."""
        t0 = time.time()
        owner = next((remedy for remedy in self.remedies if remedy.owns_step(step)), None)
        try:
            metrics, rollout = (owner.own_step(step, self.ops), None) if owner else self._grpo_step(step)
        except EngineError as exc:  # the engine failed while sampling: step `step` did not train
            raise self._engine_failed(exc, step) from None
        try:
            sync_s, failure = self.rollouts.sync(self.model), None
        except EngineError as exc:  # the update is done: the engine failed to take its weights
            sync_s, failure = math.nan, exc
        step_s = time.time() - t0  # the weight push is part of the step
        metrics.update(
            {
                "data/skipped": self.stream.skipped,
                "optim/lr": self.scheduler.get_last_lr()[0],
                "optim/skipped_steps": self.optimizer_step.skipped,
                "time/step_s": step_s,
                "time/elapsed_s": time.time() - began,
                "time/weight_sync_s": sync_s,
                **self.clock.take(),
            }
        )
        if rollout is not None:
            metrics["throughput/tokens_per_s"] = float(rollout.completion_mask[~rollout.injected].sum()) / step_s
        return {**self.world.mean_metrics(metrics), "world_size": self.world.size}, rollout, failure

    def _grpo_step(self, step: int) -> tuple[dict, Rollout]:
        """Phases 1-6 of a step the remedies leave to GRPO; the step's own metrics and its rollout."""
        # 1-2. Rollout (B prompts x G sampled completions, scored), changed by the remedies (guidance
        # injection makes some sampled rows demonstrations); the metrics describe the first draw's own samples.
        first = self.draw(step)
        rollout, regrouped = first.rollout, {}
        with self.clock.phase("remedies"):
            for remedy in self.remedies:  # remedies that draw again (dynamic sampling)
                rollout, more = remedy.regroup(rollout, lambda: self.draw(step, first=False).rollout, self.ops)
                regrouped.update(more)
            # 3. The remedies' plans (supervised terms), group-relative advantages and the loss mask: the step batch.
            for remedy in self.remedies:
                remedy.plan(rollout, first.context)
        batch = self.step_batch(rollout)
        engine_metrics = self.rollouts.metrics(rollout, batch.old_logp, first.drawn)
        # 5. num_iterations epochs of clipped updates over minibatches (the engine takes the weights in `step`).
        with self.clock.phase("update"):
            step_update, stats = self.update(batch)
        remedy_metrics = [remedy.metrics(rollout, batch.advantages, stats, self.ops) for remedy in self.remedies]
        return {
            **first.sampled_metrics,
            **regrouped,
            **step_update,
            **{k: v for metrics in remedy_metrics for k, v in metrics.items()},
            **engine_metrics,
            "groups/frac_zero_std": frac_zero_std(rollout),
        }, rollout

    def remedy(self, name: str) -> Remedy:
        """The run's remedy of that name (`injection` is in every run)."""
        found = [remedy for remedy in self.remedies if remedy.name == name]
        if not found:
            raise KeyError(f"this run has no remedy {name!r}: it has {', '.join(r.name for r in self.remedies)}")
        return found[0]

    def _engine_failed(self, exc: EngineError, done: int) -> EngineError:
        """An engine that dies, hangs or never serves stops the run with one line, after saving what
        the `done` finished steps trained: the error to raise."""
        self.rollouts.abandon()
        self.save(done)
        return EngineError(f"{exc}; checkpoint-{done} saved in {self.out}, resume with resume=true")

    def _open_tracker(self, start: int) -> Tracker:
        cfg = self.cfg
        tracker = Tracker(self.out, cfg.report_to, to_dict(cfg), resume_step=start if cfg.resume else None)
        (self.out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        return tracker

    def _log(self, tracker: Tracker, done: int, metrics: dict, rollout: Rollout | None) -> None:
        cfg = self.cfg
        if done % cfg.logging_steps == 0 or done == cfg.max_steps:
            tracker.log(done, metrics)
        if cfg.log_completions_steps and done % cfg.log_completions_steps == 0 and rollout is not None:
            tracker.log_completions(done, completion_rows(rollout, self.task))

    # ---------------------------------------------------------------- phases
    def draw(self, step: int, first: bool = True) -> Draw:
        """Phases 1-2 for the next B prompts. The step's first draw may start sampling the next step's
        prompts (overlap_rollout); the draws dynamic sampling adds never do."""
        cfg = self.cfg
        with self.clock.phase("sampling"):  # an engine failure seen by one process stops every process here
            ahead = first and step + 1 < cfg.max_steps
            drawn = self.world.agreed(functools.partial(self.rollouts.draw, self.ops.next_prompts, ahead), EngineError)
        with self.clock.phase("scoring"):
            rollout = self.scored(drawn)
        sampled_metrics = {**rollout_metrics(rollout, self.task), **tool_metrics(rollout, cfg.tools)}
        rate = self.world.sum(sampled_metrics["rollout/answer_present_rate"]) / self.world.size
        context = StepContext(step, cfg.max_steps, rate, first)
        with self.clock.phase("remedies"):  # e.g. guidance injection
            for remedy in self.remedies:
                rollout = remedy.after_draw(rollout, context, self.ops)
        return Draw(rollout, sampled_metrics, context, drawn)

    def step_batch(self, rollout: Rollout) -> StepBatch:
        """Phases 3-4, the step batch built once, whole: advantages, the loss mask and the first epoch's
        row order, then the rollout-time and reference log-probs (once per step; the old ones over the
        first epoch's passes) and the engine's importance weights; last, the remedies' per-token terms."""
        cfg = self.cfg
        advantages, loss_mask, order = self.advantages(rollout), self.loss_mask(rollout), group_order(rollout)
        # One update per step needs no old log-probs (its own, detached, are exact) unless an engine's
        # own log-probs are compared with the trainer's, or a remedy reads them (a teacher's signal).
        single_update = cfg.num_iterations == 1 and cfg.effective_minibatch_size == cfg.rows_per_step
        wanted = rollout.engine_logp is not None or any(r.needs_rollout_logprobs for r in self.remedies)
        with self.clock.phase("rollout_logprobs"):
            old = None
            if not single_update or wanted:
                old = first_epoch_logprobs(self.ops, rollout, advantages, list(order.split(self.local_minibatch)), cfg)
            ref = reference_logprobs(self.policy, rollout, cfg, self.precision, self.device)
        is_weights = self.rollouts.is_weights(rollout, old)
        batch = StepBatch(rollout, advantages, loss_mask, old, ref, is_weights, first_epoch_order=order)
        for remedy in self.remedies:  # per-token terms (on-policy distillation's teacher signal)
            batch = remedy.after_batch(batch, self.ops)
        return batch

    def scored(self, drawn) -> Rollout:
        G, done, prompts = self.cfg.num_generations, drawn.completions, drawn.prompts
        scores = self.scorer.score_all(done.texts, [prompts.samples[row // G] for row in range(len(done.texts))])
        scores = add_tool_rewards(scores, done.turns, self.cfg.tools)
        ids, mask, cut = done.ids, done.mask, done.truncated
        return Rollout(prompts, G, ids, mask, cut, done.texts, scores, engine_logp=done.logprobs, turns=done.turns)

    def advantages(self, rollout: Rollout) -> torch.Tensor:  # (N,)
        G = rollout.group_size
        stats_mask = (~rollout.injected).view(-1, G) if self.cfg.group_stats == "sampled" else None
        adv = algo.group_advantages(rollout.rewards.view(-1, G), self.cfg.scale_rewards, stats_mask)
        return adv.view(-1).to(self.device)

    def loss_mask(self, rollout: Rollout) -> torch.Tensor:  # (N, C)
        mask = rollout.completion_mask.clone()
        if rollout.turns is not None:  # tool turns are read, not written, by the policy
            mask[rollout.tool_tokens.to(mask.device)] = 0
        if self.cfg.mask_truncated_completions:
            mask[rollout.truncated] = 0
        for remedy in self.remedies:  # e.g. gated groups train on their demonstration instead
            mask = remedy.loss_mask(mask, rollout)
        return mask

    def update(self, batch: StepBatch) -> tuple[dict, algo.LossStats]:
        """num_iterations epochs over the step batch; one optimizer step per minibatch. The remedies
        weigh GRPO's loss (CHORD's 1 - mu) and add their own terms per minibatch (its demonstrations).
        Returns the update's metrics and statistics."""
        cfg, stats, grad_norms, passes = self.cfg, algo.LossStats(), [], []
        scale = math.prod(remedy.grpo_scale() for remedy in self.remedies)
        # Tokens per rank of the global step batch, per minibatch of an epoch: dapo's and cispo's divisor.
        step_tokens = self.world.sum(float(batch.loss_mask.sum())) / self.world.size
        step_tokens /= batch.size // self.local_minibatch
        for epoch in range(cfg.num_iterations):
            for minibatch in batch.epoch_minibatches(self.local_minibatch, epoch):
                # Tokens of the global minibatch per rank: averaging the ranks' gradients then gives the global mean.
                minibatch_tokens = self.world.sum(batch.tokens(minibatch)) / self.world.size
                self.ops.zero_grad()
                micros = training_passes(batch.rollout, batch.advantages, minibatch, cfg)
                passes += micros
                for rows in micros:
                    counts = (minibatch_tokens, len(minibatch), step_tokens, cfg.max_completion_length)
                    inputs = batch.select(rows).loss_inputs(*counts)
                    logp = rows_logprobs(self.ops, batch.rollout, rows, cfg.temperature)
                    loss = losses.grpo_loss(logp, inputs, cfg, stats)
                    self.ops.backward(loss * scale if scale != 1 else loss)
                for remedy in self.remedies:
                    remedy.minibatch_backward(batch, minibatch, self.ops, stats)
                grad_norms.append(self.optimizer_step())
        updates = cfg.num_iterations * (batch.size // self.local_minibatch)
        metrics = update_metrics(stats, grad_norms, updates, self.optimizer_step.skipped, batch.is_weights is not None)
        metrics["update/padding_share"] = padding_share(passes, batch.rollout.completion_mask.sum(1))
        return metrics, stats

    # ---------------------------------------------------------------- evaluation, saving
    def evaluate(self) -> dict:
        """Greedy accuracy and answer-present rate on each held-out set, through the shared path.

        Rank 0 evaluates; every rank calls this, as gathering sharded weights is a collective."""
        with self.parallel.gathered(self.model), precision.autocast(self.precision, self.device):
            evaluate = functools.partial(
                self.eval_sets.evaluate, self.eval_engine, self.style, self.cfg.max_completion_length
            )
            metrics = self.world.agreed(evaluate, EngineError)
        self.last_eval = metrics
        return metrics

    def save(self, step: int) -> Path | None:
        return checkpoint.save_run(self.run, Progress(step, self.optimizer_step.skipped), self.last_eval)


def placement(cfg: TrainConfig) -> tuple[World, torch.device, precision.Policy, Replicated]:
    """Where the run computes: its processes, this one's device, the precision policy and the
    distribution strategy; seeded here, before anything is built."""
    world = distributed.setup(cfg.device, cfg.fsdp, cfg.zero_stage)
    # An accelerate FSDP / DeepSpeed config may have turned sharding on: config.yaml says so.
    cfg.fsdp, cfg.zero_stage = world.fsdp, world.zero_stage
    check_world(cfg, world, tqdm.write)
    # Same data order on every rank (each takes its slice); different sampling noise per rank.
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed + 7919 * world.rank)
    device = world.device if world.size > 1 else pick_device(cfg.device)
    numerics = precision.resolve(cfg.precision, device)
    return world, device, numerics, strategies.make(world, numerics, device)


def train(cfg: TrainConfig) -> dict:
    return Trainer(cfg).train()
