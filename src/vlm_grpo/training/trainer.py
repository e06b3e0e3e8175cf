"""The GRPO training loop, as the study runs it: one step = one rollout batch and its epochs.

Per step: draw B prompts; sample G completions each; score them; let the run's cold-start remedies
act (`guidance/`: inject demonstrations, draw again, plan supervised terms); group-normalise the
rewards into advantages; take rollout-time (and reference) log-probs once; then `num_iterations`
epochs of clipped-surrogate updates over minibatches. Step counts therefore compare with the
study's tables. Accuracy and format metrics come from sampled rows only. The loop names no remedy:
it calls each phase's hook of every remedy the config builds (`guidance/remedy.py`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import time
from pathlib import Path

import torch
import yaml
from tqdm.auto import tqdm

from ..config import TrainConfig, to_dict
from ..core import algo, losses
from ..data import PromptStream, eval_samples, open_source, split_indices
from ..guidance import Remedy, RemedyKit, StepContext, build_remedies, check_written_demonstrations
from ..models import adapter_for, pick_device
from ..rollout import EngineError, MicroBatch, Rollout, StepBatch, encode_prompts, padding_share
from ..rollout.batch import group_order
from ..rollout.turns import ToolEngine
from ..tasks import get_task
from ..tasks.rewards import Scorer
from ..tasks.styles import get_style
from . import checkpoint, precision
from .distributed import strategies
from .distributed import world as distributed
from .engine import Draw, EngineRollouts, build_engine
from .heldout import HeldOutSets
from .inputs import RunInputs
from .metrics import PhaseClock, completion_rows, frac_zero_std, rollout_metrics, run_summary, update_metrics
from .ops import logprobs_all, micro_batches, policy_ops
from .setup import check_names, check_world, load_policy, make_optimizer, prompt_length_check
from .signals import stop_on_signal
from .tool_use import add_tool_rewards, tool_metrics, with_tools
from .tracking import Tracker

MAX_NONFINITE_IN_A_ROW = 5


class Trainer:
    def __init__(self, cfg: TrainConfig, inputs: RunInputs | None = None):
        self.cfg, self.inputs = check_names(cfg), inputs or RunInputs()
        given = self.inputs
        self.out = Path(cfg.output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.world = distributed.setup(cfg.device, cfg.fsdp, cfg.zero_stage)
        # An accelerate FSDP / DeepSpeed config may have turned sharding on: config.yaml says so.
        cfg.fsdp, cfg.zero_stage = self.world.fsdp, self.world.zero_stage
        check_world(cfg, self.world, tqdm.write)
        self.task = get_task(cfg.task, cfg.task_options)
        # Same data order on every rank (each takes its slice); different sampling noise per rank.
        random.seed(cfg.seed)
        torch.manual_seed(cfg.seed + 7919 * self.world.rank)
        self.device = self.world.device if self.world.size > 1 else pick_device(cfg.device)
        self.precision = precision.resolve(cfg.precision, self.device)
        self.parallel = strategies.make(self.world, self.precision, self.device)
        self.local_minibatch = cfg.effective_minibatch_size // self.world.size
        policy = load_policy(cfg, self.device, self.parallel, self.precision, given.model, given.processor)
        self.model, self.processor = policy.model, policy.processor
        self.reference, self.adapter_reference = policy.reference, policy.adapter_reference
        self.adapter = adapter_for(self.model)
        engine = build_engine(
            cfg, self.model, self.processor, self._sampling_context, self.precision, self.out, self.world.size
        )
        # With tools, every turn after the first samples the conversation so far (rollout/turns.py).
        turn_end = self.adapter.turn_end_id(self.processor)
        engine, self.style = with_tools(cfg, engine, get_style(cfg.prompt, self.task), turn_end)
        self.rollouts, self.eval_engine = EngineRollouts(cfg, engine), engine.evaluator()
        cfg.logprob_sharing = self.adapter.logprob_sharing(cfg.logprob_sharing, cfg.gradient_checkpointing)
        self.scorer = Scorer(given.rewards or cfg.reward_funcs, cfg.reward_weights, self.style, self.task)
        source = given.train or open_source(
            cfg.data.train, cfg.data.images, self.task, cfg.data.columns, cfg.data.split
        )
        train_rows, _ = split_indices(len(source), cfg.data.eval_holdout)
        self.stream = PromptStream(
            source,
            train_rows,
            cfg.seed,
            cfg.data.on_bad_sample,
            log=tqdm.write,
            check=prompt_length_check(self.processor, self.style, cfg.max_prompt_length),
            # A tool looks at the image as it is: only runs without tools fit it to the model's size up front.
            prepare=None if cfg.tools else lambda image: self.adapter.fit_image(image, self.processor),
        )
        self.remedies = self._remedies(engine if cfg.tools else None, turn_end, source, train_rows)
        self.optimizer, self.scheduler = make_optimizer(
            cfg, self.model, self.parallel, self.local_minibatch, self.precision
        )
        self.ops = policy_ops(self)
        self.eval_sets = (
            HeldOutSets.none() if not self.world.is_main else given.eval_sets or HeldOutSets(cfg.data, self.task)
        )
        self.last_eval: dict = {}  # the newest held-out results, for the model card
        self.stop_requested = False
        self.clock = PhaseClock()  # seconds per phase of each step, in its metrics (time/<phase>_s)
        self.nonfinite_in_a_row = self.skipped_updates = 0

    def _remedies(self, tool_engine: ToolEngine | None, turn_end: int, source, train_rows) -> list[Remedy]:
        """The run's cold-start remedies; the demonstrations they would write are checked first."""
        cfg, tok = self.cfg, self.processor.tokenizer
        demonstrate = tool_engine.demonstration if tool_engine else None  # demonstrations that call the tools
        kit = RemedyKit(self.style, self.scorer, tok, turn_end, tok.pad_token_id, cfg.seed, demonstrate)
        remedies = build_remedies(cfg, kit)
        if any(remedy.writes_demonstrations for remedy in remedies):
            # A demonstration that loses reward, or is cut where the policy samples, trains nothing useful.
            log = tqdm.write if self.world.is_main else lambda line: None
            firsts = eval_samples(source, train_rows, 3)
            check_written_demonstrations(kit, firsts, cfg.max_completion_length, log)
        return remedies

    # ---------------------------------------------------------------- the loop
    def train(self) -> dict:
        """Train to max_steps (or until a signal asks to stop: then save and return). The signal
        handlers installed for the run are the caller's again when it returns, however it ends."""
        with stop_on_signal(self):
            try:
                return self._train()
            finally:
                self.rollouts.close()

    def _train(self) -> dict:
        cfg, main = self.cfg, self.world.is_main
        start = checkpoint.resume_run(self) if cfg.resume else 0
        tracker = self._open_tracker(start) if main else None
        began, history = time.time(), []
        if start == 0 and cfg.data.eval:
            baseline = self.evaluate()
            if main:
                tracker.log(0, {**baseline, "world_size": self.world.size})
        bar = tqdm(
            range(start, cfg.max_steps),
            initial=start,
            total=cfg.max_steps,
            desc="GRPO",
            disable=not (cfg.progress and main),
        )
        for step in bar:
            with self._engine_stop(step):  # the engine failed while sampling: step `step` did not train
                metrics, rollout = self.step(step, began)
            done = step + 1
            with self._engine_stop(done):  # the update is done: the engine failed to take its weights or to evaluate
                self.rollouts.sync(self.model)
                metrics["time/step_s"] += self.rollouts.last_sync_s  # the weight push is part of the step
                metrics["time/weight_sync_s"] = self.rollouts.last_sync_s
                # 6. Evaluate, log, save.
                if cfg.data.eval_steps and cfg.data.eval and (done % cfg.data.eval_steps == 0 or done == cfg.max_steps):
                    metrics.update(self.evaluate())
            if main:
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
            if done % cfg.save_steps == 0 or done == cfg.max_steps or self.stop_requested:
                self.save(done)
            if self.stop_requested:
                tqdm.write(f"stopped by signal; checkpoint-{done} saved, resume with resume=true")
                break
        if main:
            tracker.close()
        summary = run_summary(history, list(self.eval_sets), self.out) if main else {}
        self.parallel.close()
        self.world.close()
        return summary

    def step(self, step: int, began: float) -> tuple[dict, Rollout | None]:
        """One GRPO step (phases 1-5); returns its metrics, averaged over processes, and the rollout
        (None for a step a remedy trains itself, such as a supervised warm-up step)."""
        t0 = time.time()
        owner = next((remedy for remedy in self.remedies if remedy.owns_step(step)), None)
        if owner is not None:
            return self._owned_step(owner, step, t0, began), None
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
        # 5. num_iterations epochs of clipped updates over minibatches (the engine gets the new weights
        # after the step, in the loop).
        with self.clock.phase("update"):
            step_update, stats = self.update(batch)
        step_s = time.time() - t0
        metrics = {
            **first.sampled_metrics,
            **regrouped,
            **step_update,
            **{k: v for r in self.remedies for k, v in r.metrics(rollout, batch.advantages, stats, self.ops).items()},
            **engine_metrics,
            "groups/frac_zero_std": frac_zero_std(rollout),
            "data/skipped": self.stream.skipped,
            "optim/lr": self.scheduler.get_last_lr()[0],
            "time/step_s": step_s,
            "time/elapsed_s": time.time() - began,
            **self.clock.take(),
            "throughput/tokens_per_s": float(rollout.completion_mask[~rollout.injected].sum()) / step_s,
        }
        return {**self.world.mean_metrics(metrics), "world_size": self.world.size}, rollout

    def _owned_step(self, owner: Remedy, step: int, t0: float, began: float) -> dict:
        metrics = owner.own_step(step, self.ops)
        metrics.update(
            {
                "optim/lr": self.scheduler.get_last_lr()[0],
                "optim/skipped_steps": self.skipped_updates,
                "data/skipped": self.stream.skipped,
                "time/step_s": time.time() - t0,
                "time/elapsed_s": time.time() - began,
                **self.clock.take(),
            }
        )
        return {**self.world.mean_metrics(metrics), "world_size": self.world.size}

    def remedy(self, name: str) -> Remedy:
        """The run's remedy of that name (`injection` is in every run)."""
        found = [remedy for remedy in self.remedies if remedy.name == name]
        if not found:
            raise KeyError(f"this run has no remedy {name!r}: it has {', '.join(r.name for r in self.remedies)}")
        return found[0]

    @contextlib.contextmanager
    def _engine_stop(self, done: int):
        """An engine that dies, hangs or never serves stops the run with one line, after saving what
        the `done` finished steps trained."""
        try:
            yield
        except EngineError as exc:
            self.rollouts.pending = None  # a prefetch from the dead engine is gone with it
            self.save(done)
            raise EngineError(f"{exc}; checkpoint-{done} saved in {self.out}, resume with resume=true") from None

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
        with self.clock.phase("sampling"):
            drawn = self.rollouts.draw(self._next_prompts, ahead=first and step + 1 < cfg.max_steps)
        with self.clock.phase("scoring"):
            rollout = self.scored(drawn)
        sampled_metrics = {**rollout_metrics(rollout, self.task), **tool_metrics(rollout, cfg.tool_use)}
        rate = self.world.sum(sampled_metrics["rollout/answer_present_rate"]) / self.world.size
        context = StepContext(step, cfg.max_steps, rate, first)
        with self.clock.phase("remedies"):  # e.g. guidance injection
            for remedy in self.remedies:
                rollout = remedy.after_draw(rollout, context, self.ops)
        return Draw(rollout, sampled_metrics, context, drawn)

    def step_batch(self, rollout: Rollout) -> StepBatch:
        """Phases 3-4: advantages, the loss mask and the first epoch's row order, then the rollout-time
        and reference log-probs (once per step; the old ones over the first epoch's micro-batches) and
        the engine's importance weights."""
        batch = StepBatch(
            rollout, self.advantages(rollout), self.loss_mask(rollout), first_epoch_order=group_order(rollout)
        )
        with self.clock.phase("rollout_logprobs"):
            old, ref = self.fixed_logprobs(batch)
        return dataclasses.replace(batch, old_logp=old, ref_logp=ref, is_weights=self.rollouts.is_weights(rollout, old))

    def _next_prompts(self):
        with self.clock.phase("data"):
            samples = self.world.local_slice(self.stream.next_batch(self.cfg.prompts_per_step))
        with self.clock.phase("encode"):  # images and text through the processor, collated
            return encode_prompts(self.processor, self.style, samples, self.device)

    def scored(self, drawn) -> Rollout:
        G, done, prompts = self.cfg.num_generations, drawn.completions, drawn.prompts
        scores = self.scorer.score_all(done.texts, [prompts.samples[row // G] for row in range(len(done.texts))])
        scores = add_tool_rewards(scores, done.turns, self.cfg.tool_use)
        ids, mask, cut = done.ids, done.mask, done.truncated
        return Rollout(prompts, G, ids, mask, cut, done.texts, scores, engine_logp=done.logprobs, turns=done.turns)

    @contextlib.contextmanager
    def _sampling_context(self):  # ranks decode for different numbers of steps: weights gathered
        with self.parallel.gathered(self.model), self._autocast():
            yield

    def advantages(self, rollout: Rollout) -> torch.Tensor:  # (N,)
        G = rollout.group_size
        stats_mask = (~rollout.injected).view(-1, G) if self.cfg.group_stats == "sampled" else None
        adv = algo.group_advantages(rollout.rewards.view(-1, G), self.cfg.scale_rewards, stats_mask)
        return adv.view(-1).to(self.device)

    @torch.no_grad()
    def fixed_logprobs(self, batch: StepBatch) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Old log-probs (None when the first update's own detached log-probs are exact) and reference log-probs.

        Old log-probs are computed over exactly the first epoch's micro-batches, rows and widths alike,
        under the same autocast as the update: the first update's ratio is then exactly 1 in every
        precision, instead of 1 up to the rounding of another batch composition."""
        cfg, rollout = self.cfg, batch.rollout
        single_update = cfg.num_iterations == 1 and cfg.effective_minibatch_size == cfg.rows_per_step
        # An engine's own log-probs are compared with the trainer's: then they are needed anyway.
        needed = not single_update or rollout.engine_logp is not None
        old = self._first_epoch_logprobs(batch) if needed else None
        ref = None
        with self._autocast():
            if self.reference is not None:
                ref = logprobs_all(self.reference, rollout, cfg)
            elif self.adapter_reference:
                with self.model.disable_adapter():
                    ref = logprobs_all(self.model, rollout, cfg)
        return old, ref

    def _first_epoch_logprobs(self, batch: StepBatch) -> torch.Tensor:  # (N, C)
        """Log-probs micro-batch by micro-batch as the first epoch will run them; positions past a
        micro-batch's width stay 0: they are past every row's end, masked out of the loss."""
        out = torch.zeros(batch.rollout.completion_ids.shape, device=self.device)
        for minibatch in batch.epoch_minibatches(self.local_minibatch, epoch=0):
            for rows in self._micro_batches(batch, minibatch):
                micro = batch.select(rows)
                out[rows.to(self.device), : micro.completion_ids.size(1)] = self.policy_logprobs(batch.rollout, micro)
        return out

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
                self.optimizer.zero_grad(set_to_none=True)
                micros = self._micro_batches(batch, minibatch)
                passes += micros
                for rows in micros:
                    micro = batch.select(rows)
                    inputs = losses.LossInputs(
                        micro.advantages,
                        micro.loss_mask,
                        minibatch_tokens,
                        len(minibatch),
                        old_logp=micro.old_logp,
                        ref_logp=micro.ref_logp,
                        injected=micro.injected,
                        demo_tokens=micro.demo_tokens,
                        is_weights=micro.is_weights,
                        step_tokens=step_tokens,
                        max_completion_length=cfg.max_completion_length,
                    )
                    loss = losses.grpo_loss(self.policy_logprobs(batch.rollout, micro), inputs, cfg, stats)
                    self.parallel.backward(loss * scale if scale != 1 else loss)
                for remedy in self.remedies:
                    remedy.minibatch_backward(batch, minibatch, self.ops, stats)
                grad_norms.append(self.optimizer_step())
        updates = cfg.num_iterations * (batch.size // self.local_minibatch)
        metrics = update_metrics(stats, grad_norms, updates, self.skipped_updates, batch.is_weights is not None)
        metrics["update/padding_share"] = padding_share(passes, batch.rollout.completion_mask.sum(1))
        return metrics, stats

    def _micro_batches(self, batch: StepBatch, minibatch: torch.Tensor) -> list[torch.Tensor]:
        micros = micro_batches(batch.rollout, minibatch, self.cfg)
        if self.cfg.skip_zero_advantage_groups:
            # Rows with zero advantage add exactly zero policy gradient (beta = 0): skip their passes.
            micros = [m[batch.advantages[m].cpu() != 0] for m in micros]
            micros = [m for m in micros if len(m)]
        return micros

    def policy_logprobs(self, rollout: Rollout, micro: MicroBatch) -> torch.Tensor:  # (n, w), with gradient
        ids, mask = micro.completion_ids, micro.completion_mask
        turns, G = rollout.row_turns(micro.rows), rollout.group_size
        return self.ops.logprobs(rollout.prompts, micro.rows, ids, mask, G, self.cfg.temperature, turns)

    def optimizer_step(self) -> float:
        norm = self.parallel.step(self.model, self.optimizer, self.cfg.max_grad_norm)
        if not math.isfinite(norm):
            self.skipped_updates += 1
            self.nonfinite_in_a_row += 1
            if self.nonfinite_in_a_row >= MAX_NONFINITE_IN_A_ROW:
                raise FloatingPointError(
                    f"{self.nonfinite_in_a_row} updates in a row had a non-finite loss or gradient; "
                    f"stopping. The last good checkpoint in {self.out} is kept: lower learning_rate and resume."
                )
            return float("nan")
        self.nonfinite_in_a_row = 0
        self.scheduler.step()
        return norm

    def _autocast(self):
        return precision.autocast(self.precision, self.device)

    # ---------------------------------------------------------------- evaluation, saving
    def evaluate(self) -> dict:
        """Greedy accuracy and answer-present rate on each held-out set, through the shared path.

        Rank 0 evaluates; every rank calls this, as gathering sharded weights is a collective."""
        with self.parallel.gathered(self.model), self._autocast():  # every rank: gathering is a collective
            metrics = self.eval_sets.evaluate(self.eval_engine, self.style, self.cfg.max_completion_length)
        self.world.barrier()
        self.last_eval = metrics
        return metrics

    def save(self, step: int) -> Path | None:
        return checkpoint.save_run(self, step)


def train(cfg: TrainConfig) -> dict:
    return Trainer(cfg).train()
