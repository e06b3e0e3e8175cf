"""The configuration's rule, and the parts every run has beside `config.TrainConfig`'s own fields.

The rule: a key TRL's `GRPOConfig` has keeps TRL's flat name and meaning (a TRL user's settings port
as they are); a feature TRL lacks is one section named after it. A remedy's, an engine's or a tool's
section is declared by the module that implements it, with `register_section` (a `Remedy` or an
engine class declares its `options` dataclass and registering the class registers the section), so
a built-in one with options is one module, as a plug-in's is. A quantity that moves over training is
one `Schedule`, nested wherever it appears (`injection.rate`, `sft.coef`, `injection.prefix_ratio`).

Here: the data (`data`) and prompt (`prompt`) sections, the policy loss's settings (`LossSettings`, flat
keys under TRL's names, which `TrainConfig` inherits), LoRA and QLoRA (`lora`), `Schedule`, and the
registry of sections. Every field is
documented: docs/configuration.md is generated from these docstrings.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field

from .registry import Registry


@dataclass
class DataConfig:
    train: str = "lab-clevr"
    """Training set: a registered name (`lab-clevr`, `lab-superclevr`, or a plug-in's), a data file
    (.jsonl, .json, .csv, .parquet) or a glob of them, a folder (of such files, an image folder with
    `metadata.jsonl` / `metadata.csv`, or one `datasets` saved with `save_to_disk`), or a hub id."""
    eval: list[str] = field(default_factory=list)
    """Held-out sets evaluated during training (the first is in-domain, the rest transfer)."""
    images: str | None = None
    """Root folder for relative image paths of the training set (default: the data file's folder)."""
    eval_holdout: int = 1000
    """Rows of the training source kept out of training for evaluation (the study keeps 15,000 of CLEVR)."""
    eval_size: int = 200
    """Samples of each eval set scored during training."""
    eval_steps: int = 0
    """Evaluate every N steps (0: never during training)."""
    on_bad_sample: str = "skip"
    """What to do with an unusable row: skip it (counted in `data/skipped`) or stop with an error."""
    columns: dict[str, str] = field(default_factory=dict)
    """Column names of a file or hub set for `image`, `question`, `answer`, `choices`, `conversation` and `video`,
    so a set loads without conversion (`data.columns.question=problem`); unnamed ones follow the known
    layouts (docs/tasks.md)."""
    split: str | None = None
    """Split of the training set where it holds several (a hub id, a `save_to_disk` DatasetDict, a folder of
    split folders or files such as `test.jsonl`); None: `train`."""
    num_workers: int = 0
    """Threads that decode the next step's training prompts (images loaded, videos decoded to frames) while
    the step runs, so the step finds them ready; the time a step still waits shows as `time/decode_s`. The
    rows and every random draw are the same with any number (0: each prompt decoded when drawn)."""


@dataclass
class PromptConfig:
    style: str = "default"
    """`default` (the bare question), `r1v` (think/answer tags, the study's strong baseline) or `custom`."""
    template: str | None = None
    """For `custom`: the user text, with `{question}` where the question goes."""
    system: str | None = None
    """For `custom`: an optional system prompt."""
    demonstration: str | None = None
    """For `custom`: how an injected answer is written, with `{answer}` where the number goes."""


@dataclass
class LossSettings:
    """The policy loss's settings under the names of TRL's GRPOConfig. `TrainConfig` inherits them (they
    are flat keys of every run) and `core.losses.grpo_loss` reads them from the config itself;
    `loss_type` names a variant registered in `core.losses.LOSSES`."""

    loss_type: str = "bnpo"
    """How per-token losses become the minibatch's loss (TRL's names and meanings): bnpo (sum over the
    minibatch's tokens / its token count) | grpo (each row's token mean, then the mean over rows) | dr_grpo
    (sum / (rows x max_completion_length)) | dapo (sum / the step's tokens per minibatch: TRL's default,
    the same as bnpo when a step is one minibatch) | cispo (dapo's sum of -min(ratio, epsilon_high) x A x
    log p, the ratio without gradient; MiniMax-M1) | sapo (grpo's mean of a sigmoid gate instead of the
    clip; SAPO) | a registered variant (`core.losses.register_loss`)."""
    epsilon: float = 0.2
    """Lower clip range of the ratio (TRL: epsilon)."""
    epsilon_high: float | None = None
    """Upper clip range (None: same as epsilon; DAPO uses 0.28); with loss_type=cispo the cap of the ratio
    itself (ScaleRL recommends 5.0; cispo needs it set)."""
    delta: float | None = None
    """Two-sided clipping (TRL: delta): the unclipped ratio is capped at delta (> 1 + epsilon_high), so a
    negative advantage cannot push the loss up without bound; None: off."""
    importance_sampling_level: str = "token"
    """token (PPO's per-token ratio) | sequence (GSPO: the exp of the row's mean log-ratio, for every token)."""
    beta: float = 0.0
    """KL coefficient to the reference model (k3 estimator); 0 loads no reference."""
    sapo_temperature_pos: float = 1.0
    """loss_type=sapo: temperature of the gate on tokens with a positive advantage (TRL's default)."""
    sapo_temperature_neg: float = 1.05
    """loss_type=sapo: temperature of the gate on the other tokens (TRL's default)."""
    off_policy: str = "ratio"
    """Loss on demonstration tokens: `ratio` (the variant's own surrogate against rollout-time log-probs) or
    `luffy` (p/(p+gamma), unclipped, as LUFFY)."""
    luffy_gamma: float = 0.1
    """`off_policy=luffy`: gamma of the p/(p+gamma) shaping."""


@dataclass
class LoraSettings:
    enabled: bool = False
    """Train LoRA adapters (peft) instead of all weights; the reference is the same model with adapters off."""
    r: int = 16
    """Adapter rank."""
    alpha: int = 32
    """Adapter scaling numerator (scale = alpha / r)."""
    dropout: float = 0.0
    """Dropout on the adapter input (0 keeps log-probs deterministic between passes)."""
    target_modules: list[str] | None = None
    """Module names to adapt (None: the language model's attention and MLP projections; the vision
    tower is left out)."""
    save_merged: bool = True
    """Checkpoints hold merged full weights (loadable without peft) as well as the adapter."""
    load_in_4bit: bool = False
    """QLoRA: hold the base weights in 4-bit NF4 (bitsandbytes; the vision tower and lm_head stay
    unquantized) and train full-precision adapters. Merged checkpoints are dequantized: full precision."""


@dataclass(frozen=True)
class Schedule:
    """How one quantity moves over training: the one schedule type, nested wherever a quantity moves.
    A number written where a schedule goes sets `value` (a constant), so `injection.rate=0.5` reads as
    it always did; `guidance.schedules` holds the registered shapes."""

    schedule: str = "constant"
    """constant | linear_decay (initial -> final over the first decay_fraction of max_steps, then final) |
    linear (initial at step 0 -> final at the last step) | adaptive (value while the sampled answer-present
    rate is below low, 0 from high, linear between) | a registered schedule (`guidance.schedules.SCHEDULES`)."""
    value: float = 1.0
    """`constant`'s value, and `adaptive`'s full value."""
    initial: float = 0.8
    """`linear_decay` and `linear`: the value at step 0."""
    final: float = 0.0
    """`linear_decay` and `linear`: the value at the end."""
    decay_fraction: float = 0.7
    """`linear_decay`: fraction of max_steps over which the value moves from initial to final."""
    low: float = 0.3
    """`adaptive`: the full value while the step's sampled answer-present rate is below this."""
    high: float = 0.9
    """`adaptive`: zero once the sampled answer-present rate reaches this; linear between."""

    def __str__(self) -> str:
        """`constant 1`, `linear_decay 0.8 -> 0 over 70 %`, `linear 0.9 -> 0.2`, `adaptive 1 (0.3 to 0.9)`."""
        if self.schedule == "linear_decay":
            return f"linear_decay {self.initial:g} -> {self.final:g} over {self.decay_fraction:.0%}"
        if self.schedule == "adaptive":
            return f"adaptive {self.value:g} ({self.low:g} to {self.high:g})"
        if self.schedule == "constant":
            return f"constant {self.value:g}"
        return f"{self.schedule} {self.initial:g} -> {self.final:g}"

    def check(self, key: str, need) -> None:
        """Values of a share or weight in [0, 1], and an adaptive band that is one."""
        for name in ("value", "initial", "final", "decay_fraction", "low", "high"):
            need(0 <= getattr(self, name) <= 1, f"{key}.{name}={getattr(self, name)} must be in [0, 1]")
        need(self.low < self.high, f"{key}.low={self.low} must be below {key}.high={self.high}")


def as_schedule(value: Schedule | float, default: Schedule) -> Schedule:
    """A schedule, or a number standing for a constant one (the quantity's other defaults kept): so a
    section built in Python takes `InjectionConfig(rate=0.5)` as the YAML `injection.rate: 0.5`."""
    if isinstance(value, Schedule):
        return value
    return dataclasses.replace(default, schedule="constant", value=float(value))


SECTIONS: Registry[type] = Registry("configuration section")
"""Section name -> its dataclass, for the sections declared outside this layer (remedies, engines,
tools, a plug-in's). `config.from_dict` builds them; `TrainConfig` holds one of each."""

BUILTIN_SECTIONS = "vlm_grpo.builtins"
"""The module that imports the package's own section owners (remedies, engines, tools), loaded by
name before the first lookup as a plug-in is: this layer cannot import the layers above it."""


def register_section(name: str, cls: type, replace: bool = False) -> type:
    """Declare the section `name` (a dataclass, every field documented) from the module that reads it."""
    SECTIONS.register(name, cls, replace)
    return cls


def sections() -> dict[str, type]:
    """Every registered section, built-in ones first loaded."""
    importlib.import_module(BUILTIN_SECTIONS)
    return dict(SECTIONS.items())


__all__ = [
    "SECTIONS",
    "DataConfig",
    "LoraSettings",
    "LossSettings",
    "PromptConfig",
    "Schedule",
    "as_schedule",
    "register_section",
    "sections",
]
