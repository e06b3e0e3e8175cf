"""Pre-training the counting lab's base models: supervised fine-tuning (SFT) of a tiny Qwen2-VL.

The lab reproduces the study's cold start at CPU scale. Qwen2-VL-2B, asked "How many items are
there in the image?", mostly describes the scene and spells the count in words (~14 % of its
sampled answers hold a digit), while under R1-V's prompt it answers ``<think>..</think><answer>N
</answer>``. A tiny model acquires the same habits from its SFT mix, and each habit's share in the
mix sets how often the model shows it. Per example:

- with probability ``r1v_share`` the R1-V prompt, answered in R1-V's format (texts.r1v);
- else the plain prompt, answered by bare digits with probability ``digit_share`` (texts.bare),
  else by a verbose description with the count in words only (texts.verbose).

Under the plain prompt the sampled digit rate then follows ``digit_share``, while the greedy answer
stays verbose: the study's cold start, mild (``lab-base``, ~15 %) or severe (``lab-base-cold``).

The tool-use cold start (``lab-base-tools``) continues ``lab-base``'s training (``init``) with a share
``tool_share`` of examples in which the `crop` tool is offered, as a real instruction-tuned VLM knows
a call's syntax and how to point a box before it is ever asked to look again while counting:

- half ask where a cluster scene's objects are (``clusters.LOCATE_QUESTION``, under the plain or the
  r1v prompt) and are answered by the call that crops their cell: the syntax and the box, learnt
  outside counting;
- half are ordinary counting scenes under the r1v prompt with the tool offered, answered directly:
  when counting, the base answers without calling.

The call's tags become one token each first (`add_call_tokens`), as they are in Qwen's tokenizers.

The distillation teacher (``lab-teacher``) continues ``lab-base-cold``'s training with ``digit_share``
1: no cold start, and the cold base's tokenizer, so it can score that base's samples token by token.
A share ``superclevr_share`` of scenes comes from the ``lab-superclevr`` look, so transfer to that
domain is partial and measurable.

The video base (``lab-base-video``, ``clips``) continues ``lab-base-cold``'s training on the lab's clips
(`vlm_grpo.lab.clips`) with the same mix: the plain prompt answered verbosely (the count in words) but
for a share ``digit_share`` of bare digits, R1-V's format under its prompt, ``superclevr_share`` of clips
in the transfer look. Its chat template gains the video placeholder, which the image bases' lacks.

Scenes are rendered fresh for every example (no epochs), from seeds >= 2_000_000: evaluation uses
held-out rows of the lab's nominal 1 M rows (``data.split_indices(1_000_000, holdout)``), and row i
is the scene of seed i, so no training scene can be an evaluation scene. The loss covers the
assistant tokens only, including the closing ``<|im_end|>`` so that the model learns to stop.
AdamW, linear warmup then cosine decay; with a ``steps`` budget the run is deterministic given its
seed (a ``minutes`` budget stops on wall time, and the schedule then follows elapsed time).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tokenizers import AddedToken
from tqdm.auto import tqdm

from ..data.videos import decode_video
from ..models import adapter_for, load_model_and_processor
from ..models.families.frames import frame_sampling, video_call
from ..models.tiny import QWEN_CHAT_TEMPLATE, build_tiny, build_tokenizer
from ..rollout.batch import MEDIA_KEYS
from ..tasks.styles import DEFAULT, R1V
from ..tools import get_tools
from ..tools.calls import CLOSE, OPEN, write_call
from . import clips, clusters, texts
from .scenes import render_scene

TRAIN_SEED_BASE = 2_000_000  # training scenes never use seeds below this: those are the evaluation rows
SEEDS_PER_RUN = 100_000_000  # each run seed draws scenes from its own seed range
WARMUP_STEPS = 50
IMAGE_SIZE = 112


@dataclass(frozen=True)
class Mix:
    """The shares of the pre-training mix; each example draws its kind from them."""

    digit_share: float
    """Plain-prompt examples answered by bare digits (the rest: verbose, the count in words)."""
    superclevr_share: float = 0.1
    """Scenes in the lab-superclevr look."""
    r1v_share: float = 0.3
    """Examples under the r1v prompt, answered in its format."""
    tool_share: float = 0.0
    """Examples with the `crop` tool offered (see the module's docstring); 0 draws none."""
    clips: bool = False
    """Clips (`vlm_grpo.lab.clips`) instead of scenes, the superclevr share in the transfer look."""


def make_example(rng: random.Random, scene_seed: int, mix: Mix) -> tuple:
    """(image, prompt style, question, answer text) for one freshly rendered training scene (with
    `mix.clips`, the clip's frames for the image)."""
    if mix.clips:
        return clips.make_example(rng, scene_seed, mix.digit_share, mix.superclevr_share, mix.r1v_share)
    if mix.tool_share and rng.random() < mix.tool_share:
        return make_tool_example(rng, scene_seed, mix)
    domain = "lab-superclevr" if rng.random() < mix.superclevr_share else "lab-clevr"
    image, scene = render_scene(domain, scene_seed, size=IMAGE_SIZE)
    if rng.random() < mix.r1v_share:
        return image, R1V, scene.question, texts.r1v(scene, rng)
    answer = texts.bare(scene) if rng.random() < mix.digit_share else texts.verbose(scene, rng)
    return image, DEFAULT, scene.question, answer


def make_tool_example(rng: random.Random, scene_seed: int, mix: Mix) -> tuple:
    """An example with `crop` offered: where a cluster's objects are, answered by the call that crops
    their cell (the canvas at full size: the processor shrinks it as it does in training), or an
    ordinary scene counted under the r1v prompt without a call."""
    tools = get_tools(["crop"])
    domain = "lab-superclevr" if rng.random() < mix.superclevr_share else "lab-clevr"
    if rng.random() < 0.5:  # asked under either prompt, so the call does not hang on the plain one
        canvas, _, box = clusters.render_cluster(domain, scene_seed)
        style = rng.choice((DEFAULT, R1V)).with_tools(tools)
        return canvas, style, clusters.LOCATE_QUESTION, write_call(clusters.crop_call(box))
    image, scene = render_scene(domain, scene_seed, size=IMAGE_SIZE)
    return image, R1V.with_tools(tools), scene.question, texts.r1v(scene, rng)


def add_call_tokens(model, tokenizer) -> None:
    """The call's tags as one token each, as in Qwen2-VL's and Qwen2.5-VL's tokenizers (`<tool_call>`
    151657, `</tool_call>` 151658, ordinary tokens that decoding keeps); the lab's BPE, trained before
    tools, spells each in ten byte-sized pieces whose first two a policy shares with `<think>`."""
    tags = [AddedToken(tag, special=False, normalized=False) for tag in (OPEN, CLOSE)]
    if tokenizer.add_tokens(tags):
        model.resize_token_embeddings(len(tokenizer))


def collate(processor, examples: list[tuple], end_id: int) -> dict[str, torch.Tensor]:
    """Model inputs with labels on the answer tokens and the closing turn end `end_id` only (-100 elsewhere).

    The prompt is encoded exactly as generation encodes it; the answer's tokens are appended after
    it, so training sees the same prompt/answer token boundary that sampling produces. An example's
    media is an image, or a clip's frames (a list), sampled and sized as generation decodes a video.
    """
    tok = processor.tokenizer
    clip = isinstance(examples[0][0], list)
    prompts = [
        processor.apply_chat_template(
            style.messages(q, int(not clip), int(clip)), add_generation_prompt=True, tokenize=False
        )
        for _, style, q, _ in examples
    ]
    if clip:
        sampling = frame_sampling(processor)
        media = video_call(processor, [decode_video(e[0], sampling, "pre-training clip") for e in examples])
    else:
        media = {"images": [e[0] for e in examples]}
    enc = processor(text=prompts, **media, return_tensors="pt", padding=True, padding_side="right")
    rows = []
    for i, (_, _, _, answer) in enumerate(examples):
        keep = enc["attention_mask"][i].bool()
        prompt_ids = enc["input_ids"][i][keep]
        answer_ids = torch.tensor(tok(answer, add_special_tokens=False)["input_ids"] + [end_id])
        rows.append((prompt_ids, answer_ids, enc["mm_token_type_ids"][i][keep]))
    width = max(len(p) + len(a) for p, a, _ in rows)
    input_ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    mm_types = torch.zeros((len(rows), width), dtype=enc["mm_token_type_ids"].dtype)
    for i, (p, a, t) in enumerate(rows):
        n, m = len(p), len(a)
        input_ids[i, : n + m] = torch.cat([p, a])
        labels[i, n : n + m] = a
        attention[i, : n + m] = 1
        mm_types[i, :n] = t
    return {
        "input_ids": input_ids,
        "attention_mask": attention,
        "mm_token_type_ids": mm_types,
        **{key: enc[key] for key in MEDIA_KEYS if key in enc},
        "labels": labels,
    }


def lr_factor(progress: float, step: int, warmup: int) -> float:
    """Linear warmup over `warmup` steps, then cosine decay to 10 % with `progress` in [0, 1]."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def pretrain(
    out_dir: str | Path,
    digit_share: float,
    minutes: float | None = None,
    steps: int | None = None,
    seed: int = 0,
    superclevr_share: float = 0.1,
    r1v_share: float = 0.3,
    batch_size: int = 32,
    lr: float = 1e-3,
    progress: bool = True,
    tool_share: float = 0.0,
    init: str | Path | None = None,
    clips: bool = False,
) -> Path:
    """SFT a "small" tiny Qwen2-VL on the lab mix, fresh or continuing the saved model `init` (whose
    tokenizer it keeps); save model, processor and lab_card.json."""
    if minutes is None and steps is None:
        raise ValueError("pretrain needs a budget: minutes, steps, or both")
    out_dir = Path(out_dir)
    mix = Mix(digit_share, superclevr_share, r1v_share, tool_share, clips)
    torch.manual_seed(seed)
    if init is None:
        model, processor = build_tiny(
            "qwen2-vl", "small", seed=seed, tokenizer=build_tokenizer(texts.corpus()), image_pixels=IMAGE_SIZE**2
        )
    else:
        model, processor = load_model_and_processor(str(init), torch.device("cpu"), torch.float32)
    if tool_share:
        add_call_tokens(model, processor.tokenizer)
    if clips:  # the image bases' saved template has no video placeholder
        processor.chat_template = QWEN_CHAT_TEMPLATE
    model.train()
    end_id = adapter_for(model).turn_end_id(processor)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    rng = random.Random(seed)
    warmup = min(WARMUP_STEPS, max(1, (steps or WARMUP_STEPS * 20) // 20))
    start, step, losses = time.monotonic(), 0, []
    bar = tqdm(total=steps, disable=not progress, desc="lab sft", unit="step")
    while True:
        done = _progress(step, time.monotonic() - start, steps, minutes)
        if done >= 1.0:
            break
        examples = [
            make_example(rng, TRAIN_SEED_BASE + seed * SEEDS_PER_RUN + step * batch_size + i, mix)
            for i in range(batch_size)
        ]
        for group in optimizer.param_groups:
            group["lr"] = lr * lr_factor(done, step, warmup)
        losses.append(_sft_step(model, optimizer, collate(processor, examples, end_id)))
        step += 1
        bar.update(1)
        elapsed = time.monotonic() - start
        bar.set_postfix(
            loss=f"{sum(losses[-50:]) / len(losses[-50:]):.3f}",
            eta=_eta(elapsed, _progress(step, elapsed, steps, minutes)),
        )
    bar.close()
    card = {
        **asdict(mix),
        **({"init": Path(init).name} if init is not None else {}),
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "steps": step,
        "minutes": round((time.monotonic() - start) / 60, 2),
        "budget": {"steps": steps, "minutes": minutes},
        "final_loss": round(sum(losses[-50:]) / max(1, len(losses[-50:])), 4),
        "model": "tiny qwen2-vl small",
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
    (out_dir / "lab_card.json").write_text(json.dumps(card, indent=2) + "\n")
    return out_dir


def _sft_step(model, optimizer, batch: dict[str, torch.Tensor]) -> float:
    """One supervised update on `batch`; returns its loss."""
    loss = model(**batch, use_cache=False).loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss.item()


def _progress(step: int, elapsed: float, steps: int | None, minutes: float | None) -> float:
    """Share of the budget used: steps or wall time, whichever binds first."""
    return max(step / steps if steps else 0.0, elapsed / (60 * minutes) if minutes else 0.0)


def _eta(elapsed: float, progress: float) -> str:
    """Time left, from the share of the budget (steps or minutes, whichever binds) used so far."""
    left = elapsed * (1 - progress) / max(progress, 1e-9)
    return time.strftime("%M:%S", time.gmtime(max(0.0, left)))


def measure(
    model_path: str | Path,
    n: int = 200,
    batch_size: int = 64,
    max_new_tokens: int = 50,
    sets: tuple[str, ...] = ("lab-clevr", "lab-superclevr"),
) -> dict:
    """The lab targets, with the project's own evaluation code, on the first `n` held-out rows.

    Plain prompt on the first set (lab-clevr): 8 samples at T=1 (number-present rate, accuracy given a
    number) and greedy (count-word accuracy of the verbose answer); R1-V prompt, greedy, on every set
    (accuracy, strict format). For the video base: `sets` lab-clips, lab-clips-transfer, lab-clips-frame.
    """
    from ..data import eval_samples, open_source, split_indices
    from ..evaluation.records import EvalSummary, Rate, generate_records
    from ..models import load_model_and_processor

    def summarize(records):
        return {"n": len(records), **EvalSummary.of(records).to_dict()}

    model, processor = load_model_and_processor(str(model_path), torch.device("cpu"), torch.float32)
    torch.manual_seed(0)
    rows = {}
    for name in sets:
        source = open_source(name)
        rows[name] = eval_samples(source, split_indices(len(source), 1000)[1], n)

    def run(style, name, group, temperature):
        return generate_records(
            model,
            processor,
            style,
            rows[name],
            name,
            batch_size=batch_size,
            group_size=group,
            temperature=temperature,
            max_new_tokens=max_new_tokens,
        )

    out = {"model": str(model_path), "n": n}
    first = sets[0].removeprefix("lab-")
    out[f"default_sampled_{first}"] = summarize(run(DEFAULT, sets[0], 8, 1.0))
    greedy = run(DEFAULT, sets[0], 1, None)
    for r in greedy:
        r["count_word_correct"] = texts.parse_count_word(r["completion"]) == r["answer"]
    out[f"default_greedy_{first}"] = summarize(greedy)
    words = Rate(sum(r["count_word_correct"] for r in greedy), len(greedy))
    out[f"default_greedy_{first}"]["count_word_accuracy"] = {"value": words.value, "ci": words.ci, "n": words.n}
    out[f"default_greedy_{first}"]["examples"] = [r["completion"] for r in greedy[:3]]
    for name in sets:
        out[f"r1v_greedy_{name.removeprefix('lab-')}"] = summarize(run(R1V, name, 1, None))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vlm_grpo.lab.pretrain", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="pre-train one base model")
    train.add_argument("out_dir")
    train.add_argument("--digit-share", type=float, required=True)
    train.add_argument("--superclevr-share", type=float, default=0.1)
    train.add_argument("--r1v-share", type=float, default=0.3)
    train.add_argument("--minutes", type=float)
    train.add_argument("--steps", type=int)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--threads", type=int, default=1)
    train.add_argument("--tool-share", type=float, default=0.0)
    train.add_argument("--init", help="a saved lab base to continue from (its tokenizer is kept)")
    train.add_argument("--clips", action="store_true", help="train on the lab's clips (the video base)")
    meas = sub.add_parser("measure", help="measure the lab targets of a saved model")
    meas.add_argument("model_path")
    meas.add_argument("-n", type=int, default=200)
    meas.add_argument("--threads", type=int, default=1)
    meas.add_argument("--sets", nargs="+", default=["lab-clevr", "lab-superclevr"], help="the first: in-domain")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.command == "train":
        pretrain(
            args.out_dir,
            args.digit_share,
            args.minutes,
            args.steps,
            args.seed,
            args.superclevr_share,
            args.r1v_share,
            args.batch_size,
            args.lr,
            tool_share=args.tool_share,
            init=args.init,
            clips=args.clips,
        )
    else:
        print(json.dumps(measure(args.model_path, args.n, sets=tuple(args.sets)), indent=2))


if __name__ == "__main__":
    main()
