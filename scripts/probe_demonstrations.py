"""What an injected demonstration is to the policy: its text, tokens, reward, loss mask and
advantage, the policy's log-probability of it, and how much one step's clipped update can raise it.

One step's draw of a configured run (any `key=value` overrides), before any training: the first
injected row is shown token by token; then the step's update runs over that batch three times,
and the demonstrations' summed log-probabilities are read after each pass (a second pass that adds
nothing means the clip bounds the step).

    python scripts/probe_demonstrations.py model=lab-base task=multiple_choice \
        "task_options={accept_choice_text: false}" data.train=lab-clevr-mc
"""

from __future__ import annotations

import sys

import torch

from vlm_grpo.config import load_config
from vlm_grpo.rollout import StepBatch
from vlm_grpo.training.ops import logprobs_all
from vlm_grpo.training.trainer import Trainer


def main(overrides: list[str]) -> None:
    # constant: a one-step run's linear schedule would leave a learning rate of 0 after the first pass
    fixed = ["injection.mode=random", "data.eval=[]", "progress=false", "report_to=[]", "max_steps=1"]
    fixed += ["lr_scheduler_type=constant"]
    trainer = Trainer(load_config(None, [*fixed, "output_dir=runs/probe", *overrides]))
    rollout, metrics, _ = trainer.draw(0)
    G, tok, injected = rollout.group_size, trainer.processor.tokenizer, rollout.injected
    row = int(injected.nonzero()[0])
    length = int(rollout.completion_mask[row].sum())
    advantages, mask = trainer.advantages(rollout), trainer.loss_mask(rollout)
    with torch.no_grad():
        logp = logprobs_all(trainer.model, rollout, trainer.cfg)
    sample = rollout.prompts.samples[row // G]
    print(
        f"sampled answer-present rate {metrics['rollout/answer_present_rate']:.3f}; "
        f"{int(injected.sum())} of {len(injected)} rows injected"
    )
    print(f"question: {sample.question!r}; answer {sample.answer}")
    print(
        f"demonstration {rollout.texts[row]!r}: reward {rollout.rewards[row].item():+.1f}, "
        f"advantage {advantages[row].item():+.3f}"
    )
    for i in range(length):
        token = int(rollout.completion_ids[row, i])
        print(f"  token {tok.decode([token])!r}: loss mask {mask[row, i].item():.0f}, log p {logp[row, i].item():.2f}")
    batch = StepBatch(rollout, advantages, mask)
    batch.first_epoch_order = batch.draw_order()
    batch.old_logp, batch.ref_logp = trainer.fixed_logprobs(batch)
    rows = injected.nonzero().flatten().tolist()

    def summed(values):  # each demonstration's summed log-probability
        return torch.stack([(values[r] * rollout.completion_mask[r]).sum() for r in rows])

    start = summed(logp)
    for k in range(3):
        stats, _ = trainer.update(batch)
        with torch.no_grad():
            gain = summed(logprobs_all(trainer.model, rollout, trainer.cfg)) - start
        print(
            f"after pass {k + 1} of the step's update: demonstrations' log p up by {gain.min():.3f} to "
            f"{gain.max():.3f} nats (mean {gain.mean():.3f}); clip fraction {stats['policy/clip_fraction']:.3f}"
        )


if __name__ == "__main__":
    torch.manual_seed(0)
    main(sys.argv[1:])
