"""Multi-turn rollouts with tools: the tool turn in the chat template, log-probs of literal
multi-turn token sequences against the whole conversation encoded by the processor, the loss mask,
the sampling loop (good call, bad call, no call), and the reward terms and metrics."""

import re

import pytest
import torch

from support import lab_samples
from vlm_grpo.config import LossSettings
from vlm_grpo.core.losses import LossInputs, grpo_loss
from vlm_grpo.models import adapter_for
from vlm_grpo.models.loading import load_model_and_processor
from vlm_grpo.rollout import Completions, HFEngine, Rollout, SamplingParams, completion_logprobs, encode_prompts
from vlm_grpo.rollout.batch import RowTurns, tool_token_mask
from vlm_grpo.rollout.turns import ToolEngine, ToolTurnWriter
from vlm_grpo.tasks import Score
from vlm_grpo.tasks.rewards import Scorer
from vlm_grpo.tasks.styles import get_style
from vlm_grpo.tools import get_tools
from vlm_grpo.tools.crop import crop
from vlm_grpo.training.tool_use import add_tool_rewards, tool_metrics, tool_terms

CALL = '<tool_call>{"name": "crop", "arguments": {"box": [0.25, 0, 0.75, 0.5]}}</tool_call>'
BAD_CALL = '<tool_call>{"name": "crop", "arguments": {"box": [0.25]}}</tool_call>'
TOOLS = get_tools(["crop"])


@pytest.fixture(scope="module")
def policy():
    torch.manual_seed(0)
    model, processor = load_model_and_processor("tiny-qwen2-vl", torch.device("cpu"), torch.float32)
    samples = lab_samples(2, size=112)
    prompts = encode_prompts(processor, get_style("default").with_tools(TOOLS), samples, torch.device("cpu"))
    return model, processor, samples, prompts, adapter_for(model).turn_end_id(processor)


def ids_of(processor, text: str, end: int) -> list[int]:
    return processor.tokenizer(text, add_special_tokens=False)["input_ids"] + [end]


def test_a_tool_turn_is_a_user_turn_of_the_chat_template(policy):
    _, processor, _, _, end = policy
    writer = ToolTurnWriter(processor, end)
    assert writer.text("crop of image 0", 1) == (
        "\n<|im_start|>user\n<tool_response><|vision_start|><|image_pad|><|vision_end|>crop of image 0"
        "</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )
    ids, types, images, _ = writer.encode("error: bad box", [])
    assert images is None and set(types) == {0}
    assert processor.tokenizer.decode(ids) == writer.text("error: bad box", 0)


def literal_trajectory(policy):
    """Turn 1 (a crop call), the real tool turn with the crop, turn 2 ("3"): ids and turns."""
    model, processor, samples, prompts, end = policy
    writer = ToolTurnWriter(processor, end)
    picture = samples[0].load_images()
    shown = list(crop(picture, [0.25, 0, 0.75, 0.5]).images)
    call, answer = ids_of(processor, CALL, end), ids_of(processor, "3", end)
    tool, types, images, _ = writer.encode("crop", shown)
    ids = call + tool + answer
    turns = RowTurns(
        tool_tokens=[False] * len(call) + [True] * len(tool) + [False] * len(answer),
        token_types=[0] * len(call) + types + [0] * len(answer),
        image_inputs=[images],
        calls=1,
        valid_calls=1,
        turns=2,
    )
    return ids, turns, picture + shown


def test_multi_turn_logprobs_are_those_of_the_whole_conversation(policy):
    model, processor, _, prompts, end = policy
    ids, turns, images = literal_trajectory(policy)
    # The same conversation, written out as text and encoded by the processor in one go.
    text = prompts.texts[0] + re.sub(r"(<\|image_pad\|>)+", "<|image_pad|>", processor.tokenizer.decode(ids))
    whole = processor(text=[text], images=[images], return_tensors="pt")
    n = len(ids)
    assert whole["input_ids"][0, -n:].tolist() == ids
    forbidden = torch.tensor(adapter_for(model).vision_token_ids(model))
    with torch.no_grad():
        logits = model(**whole).logits[0, -n - 1 : -1].index_fill(-1, forbidden, float("-inf"))
        expected = logits.log_softmax(-1).gather(1, torch.tensor(ids).unsqueeze(1)).squeeze(1)
        # Row 0 of the rollout (prompt 0) beside a plain one-turn row of prompt 1, padded wider.
        width = n + 3
        completion = torch.full((2, width), processor.tokenizer.pad_token_id)
        completion[0, :n] = torch.tensor(ids)
        completion[1, :2] = torch.tensor(ids_of(processor, "4", end))
        mask = torch.zeros((2, width))
        mask[0, :n], mask[1, :2] = 1, 1
        got = completion_logprobs(
            model, prompts, torch.tensor([0, 2]), completion, mask, 2, 1.0, "prefix", [turns, None]
        )
        plain = completion_logprobs(model, prompts, torch.tensor([2]), completion[1:], mask[1:], 2, 1.0, "prefix")
    policy_tokens = ~torch.tensor(turns.tool_tokens)
    assert torch.allclose(got[0, :n][policy_tokens], expected[policy_tokens], atol=1e-5)
    assert torch.all(got[0, :n][~policy_tokens] == 0) and torch.all(got[0, n:] == 0)
    assert torch.equal(got[1], plain[0])  # a row without tool turns is computed as before


def test_tool_tokens_leave_the_loss_and_its_gradient(policy):
    ids, turns, _ = literal_trajectory(policy)
    n = len(ids)
    mask = tool_token_mask([turns, None], n + 2)
    assert mask[0, :n].tolist() == turns.tool_tokens and not mask[0, n:].any() and not mask[1].any()
    completion_mask = torch.zeros((1, n + 2))
    completion_mask[0, :n] = 1
    loss_mask = completion_mask.masked_fill(mask[:1], 0)  # as Trainer.loss_mask writes it
    logp = torch.randn(1, n + 2, requires_grad=True)
    inputs = LossInputs(torch.tensor([1.0]), loss_mask, float(loss_mask.sum()), 1, old_logp=logp.detach())
    loss = grpo_loss(logp, inputs, LossSettings())
    loss.backward()
    assert torch.all(logp.grad[0, mask[0]] == 0) and torch.all(logp.grad[0, :n][~mask[0, :n]] != 0)


class FirstTurnCalls(HFEngine):
    """The policy samples every turn, except that in each group of the first turn row 0 writes a good
    crop call and row 1 a malformed one (a random tiny model never calls a tool by itself)."""

    def __init__(self, model, processor, end, calls=(CALL, BAD_CALL)):
        super().__init__(model, processor)
        self.literal = {row: ids_of(processor, call, end) for row, call in enumerate(calls)}

    def sample(self, prompts, params, prefixes=None):
        done = super().sample(prompts, params, prefixes)
        if params.group_size == 1:
            return done
        pad = self.processor.tokenizer.pad_token_id
        width = max(done.ids.size(1), *(len(t) for t in self.literal.values()))
        ids = torch.nn.functional.pad(done.ids, (0, width - done.ids.size(1)), value=pad)
        mask = torch.nn.functional.pad(done.mask, (0, width - done.mask.size(1)))
        texts, truncated = list(done.texts), done.truncated.clone()
        for row in range(len(texts)):
            tokens = self.literal.get(row % params.group_size)
            if tokens is not None:
                ids[row], mask[row] = pad, 0
                ids[row, : len(tokens)], mask[row, : len(tokens)] = torch.tensor(tokens), 1
                texts[row], truncated[row] = self.processor.tokenizer.decode(tokens, skip_special_tokens=True), False
        return Completions(ids, mask, truncated, texts)


def test_the_tool_engine_answers_good_and_bad_calls_and_leaves_other_rows_alone(policy):
    model, processor, samples, prompts, end = policy
    inner = FirstTurnCalls(model, processor, end)
    params = SamplingParams(group_size=3, max_tokens=300, temperature=None)
    done = ToolEngine(inner, TOOLS, 3, end).sample(prompts, params)
    alone = inner.sample(prompts, params)
    for group in range(2):
        good, bad, silent = (done.turns[group * 3 + i] for i in range(3))
        assert (good.calls, good.valid_calls, good.has_images) == (1, 1, True) and good.turns >= 2
        assert (bad.calls, bad.valid_calls, bad.has_images) == (1, 0, False)
        assert "<tool_response>error: crop: 'box' must have 4 elements (got 1)</tool_response>" in bad.transcript
        assert (silent.calls, silent.turns, sum(silent.tool_tokens)) == (0, 1, 0)
        row = group * 3 + 2  # a row without a call is the inner engine's own sample, token for token
        n = int(alone.mask[row].sum())
        assert done.ids[row, :n].tolist() == alone.ids[row, :n].tolist() and int(done.mask[row].sum()) == n
    # Greedy turn 2 continues the conversation: each of its tokens is the whole conversation's argmax.
    turns, n = done.turns[0], int(done.mask[0].sum())
    start = len(turns.tool_tokens) - turns.tool_tokens[::-1].index(True)
    with torch.no_grad():
        logp = completion_logprobs(
            model, prompts, torch.tensor([0]), done.ids[:1], done.mask[:1], 3, 1.0, "prefix", [turns]
        )
    assert torch.all(logp[0, start:n] <= 0) and bool(torch.isfinite(logp).all())
    from vlm_grpo.rollout.batch import conversation_inputs

    inputs = conversation_inputs(prompts, 0, done.ids[0, :n].tolist(), turns)
    with torch.no_grad():
        logits = model(**inputs).logits[0, -(n - start) - 1 : -1]
    forbidden = adapter_for(model).vision_token_ids(model)
    logits[:, forbidden] = float("-inf")
    assert logits.argmax(-1).tolist() == done.ids[0, start:n].tolist()
    assert done.texts[0] == processor.tokenizer.decode(done.ids[0, start:n].tolist(), skip_special_tokens=True)


def test_a_conversation_that_runs_out_of_tokens_ends_truncated(policy):
    model, processor, _, prompts, end = policy
    inner = FirstTurnCalls(model, processor, end)
    done = ToolEngine(inner, TOOLS, 3, end).sample(prompts, SamplingParams(group_size=3, max_tokens=40))
    good = done.turns[0]
    assert good.calls == 1 and good.turns == 1 and bool(done.truncated[0]) and not any(good.tool_tokens)
    # Cut before the tool's turn, the conversation answered nothing: the call's box is not read as an answer.
    assert done.texts[0] == "" and good.transcript.startswith("<tool_call>")
    scorer = Scorer(["answer"], None, get_style("default"))
    assert (scorer(done.texts[0], 3).reward, scorer(good.transcript, 3).answer_present) == (-1.0, True)


def score(correct: bool, present: bool = True) -> Score:
    return Score(float(correct) if present else -1.0, present, correct, correct, present, 3 if present else None)


def test_tool_reward_terms_and_metrics_on_literal_rows():
    from vlm_grpo.training.tool_use import ToolsConfig

    cfg = ToolsConfig(call_reward=0.2, valid_call_reward=0.3, turn_penalty=0.1)
    called = RowTurns(tool_tokens=[False, True, False], calls=2, valid_calls=1, turns=3)
    wrong = RowTurns(tool_tokens=[False, True, False], calls=1, valid_calls=0, failures=1, turns=2)
    assert tool_terms(called, cfg) == pytest.approx({"tool_call": 0.2, "valid_call": 0.3, "turn_penalty": -0.2})
    assert tool_terms(None, cfg) == {"tool_call": 0.0, "valid_call": 0.0, "turn_penalty": 0.0}
    scores = add_tool_rewards([score(True), score(False), score(False, False)], [called, wrong, None], cfg)
    assert [s.reward for s in scores] == pytest.approx([1.3, 0.1, -1.0])
    samples = lab_samples(1)
    from vlm_grpo.rollout import PromptBatch

    prompts = PromptBatch(samples, {"input_ids": torch.zeros((1, 1), dtype=torch.long)})
    rollout = Rollout(
        prompts,
        4,
        torch.zeros((4, 3), dtype=torch.long),
        torch.ones((4, 3)),
        torch.zeros(4, dtype=torch.bool),
        ["a"] * 4,
        [*scores, score(True)],
        torch.tensor([False, False, False, True]),
        turns=[called, wrong, None, None],
    )
    metrics = tool_metrics(rollout, cfg)  # the injected row 3 is left out
    assert metrics["tools/calls_per_rollout"] == 1.0 and metrics["tools/call_rate"] == pytest.approx(2 / 3)
    assert metrics["tools/valid_call_rate"] == pytest.approx(1 / 3) and metrics["tools/failures"] == 1.0
    assert metrics["tools/turns"] == 2.0 and metrics["tools/tool_tokens"] == pytest.approx(2 / 3)
    assert metrics["rollout/accuracy_with_call"] == 0.5 and metrics["rollout/accuracy_without_call"] == 0.0
    assert metrics["reward/turn_penalty"] == pytest.approx(-0.1)


@pytest.mark.parametrize(
    "overrides, says",
    [
        (["tools=[crop]"], "is now 'tools.names'"),
        (["tools.names=[crop]", "tools.max_turns=1"], "max_turns of at least 2"),
        (["tools.names=[crop]", "rollout_engine=vllm", "overlap_rollout=true"], "overlap_rollout do not"),
        (["tools.names=[crop]", "tools.timeout_s=0"], "timeout_s must be positive"),
    ],
)
def test_tool_settings_are_checked(overrides, says):
    from vlm_grpo.config import load_config
    from vlm_grpo.errors import ConfigError

    with pytest.raises(ConfigError, match=says):
        load_config(None, overrides)


def brightness_tool():
    """A user's tool, named `tests.rollout.test_turns:brightness_tool`: it runs in a child process."""
    from vlm_grpo.tools import Arg, Tool, ToolOutput

    def brightness(images, image=0):
        pixels = list(images[image].convert("L").getdata())
        return ToolOutput(text=f"mean brightness {sum(pixels) / len(pixels):.0f}")

    return Tool("brightness", "the mean brightness of an image", {"image": Arg("integer", required=False)}, brightness)


def test_a_run_with_tools_trains_on_the_policy_tokens_of_its_conversations(tmp_path):
    import json

    from support import train_two_steps
    from vlm_grpo.rollout.engines import register_engine

    def first_turn_calls(model, processor, options):
        users_call = '<tool_call>{"name": "brightness", "arguments": {}}</tool_call>'
        return FirstTurnCalls(model, processor, adapter_for(model).turn_end_id(processor), (CALL, users_call))

    register_engine("first-turn-calls", first_turn_calls, replace=True)
    extra = [
        "rollout_engine=first-turn-calls",
        "tools.names=[crop, tests.rollout.test_turns:brightness_tool]",
        "max_completion_length=200",
        "tools.valid_call_reward=0.5",
    ]
    trainer = train_two_steps(tmp_path, "tiny-qwen2-vl", extra)
    assert "brightness(image: integer?)" in trainer.style.user_template
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(line["tools/call_rate"] >= 0.5 for line in lines)
    # Rows 0 and 1 of every group call crop and the user's tool (well-formed: both run).
    assert all(line["tools/valid_call_rate"] == 1.0 and line["tools/failures"] == 0 for line in lines)
    assert all(line["reward/valid_call"] >= 0.25 and line["tools/tool_tokens"] > 0 for line in lines)


def test_a_cluster_scene_is_its_counting_scene_in_the_cell_its_call_crops():
    import numpy as np

    from vlm_grpo.lab.clusters import ClusterSource
    from vlm_grpo.lab.scenes import render_scene

    sample = ClusterSource("lab-clevr", grid=2, cell=112)[7]
    scene_image, scene = render_scene("lab-clevr", 7, size=112)
    (call,) = sample.calls
    assert sample.answer == scene.count and sample.image.size == (224, 224) and call["name"] == "crop"
    shown = crop([sample.image], call["arguments"]["box"]).images[0]
    assert np.array_equal(np.asarray(shown), np.asarray(scene_image))


def cluster_rollout(policy):
    """Two cluster scenes, 2 rows each sampled with the crop tool (8 tokens), scored: what injection sees."""
    from vlm_grpo.lab.clusters import ClusterSource
    from vlm_grpo.tasks.rewards import Scorer

    model, processor, _, _, end = policy
    style = get_style("r1v").with_tools(TOOLS)
    samples = [ClusterSource("lab-clevr", grid=2, cell=56)[i] for i in range(2)]
    prompts = encode_prompts(processor, style, samples, torch.device("cpu"))
    engine = ToolEngine(HFEngine(model, processor), TOOLS, 2, end)
    done = engine.sample(prompts, SamplingParams(group_size=2, max_tokens=8))
    scorer = Scorer(["answer"], None, style)
    scores = scorer.score_all(done.texts, [samples[r // 2] for r in range(4)])
    rollout = Rollout(prompts, 2, done.ids, done.mask, done.truncated, done.texts, scores, turns=done.turns)
    return engine, style, samples, prompts, scorer, rollout


def test_tool_demonstrations_call_then_answer_in_injection_and_sft(policy):
    from vlm_grpo.guidance import InjectionConfig, SftConfig
    from vlm_grpo.guidance.injection import Injector
    from vlm_grpo.guidance.sft import Supervisor

    model, processor, _, _, end = policy
    engine, style, samples, prompts, scorer, rollout = cluster_rollout(policy)
    answer = "<think>I count five objects in the image.</think><answer>5</answer>"
    tokens, turns = engine.demonstration(samples[0], answer)
    text = processor.tokenizer.decode(tokens)
    assert text.startswith('<tool_call>{"name": "crop", "arguments": {"box": [') and text.endswith(
        answer + "<|im_end|>"
    )
    assert (turns.calls, turns.valid_calls, turns.turns, turns.has_images) == (1, 1, 2, True)
    tool_text = processor.tokenizer.decode([t for t, tool in zip(tokens, turns.tool_tokens) if tool])
    assert tool_text.startswith("\n<|im_start|>user\n<tool_response><|vision_start|>")
    assert tool_text.endswith("</tool_response><|im_end|>\n<|im_start|>assistant\n")
    # Injection: the chosen rows become tool-using demonstrations, scored on their final answer.
    injector = Injector(InjectionConfig(mode="rate", rate=0.5), style, processor.tokenizer, end, 0, seed=0)
    injector.tool_demonstration = engine.demonstration
    injected = injector.apply(rollout, scorer, 1.0)
    rows = [r for r in range(4) if injected.injected[r]]
    assert rows and all(injected.turns[r] is not None and injected.turns[r].valid_calls == 1 for r in rows)
    assert all(injected.scores[r].correct for r in rows)
    tool = injected.tool_tokens
    assert all(tool[r].sum() == sum(injected.turns[r].tool_tokens) > 0 for r in rows)
    with torch.no_grad():
        logp = completion_logprobs(
            model,
            prompts,
            torch.arange(4),
            injected.completion_ids,
            injected.completion_mask,
            2,
            1.0,
            "prefix",
            injected.turns,
        )
    assert bool(torch.isfinite(logp).all()) and torch.all(logp[tool] == 0)
    # SFT: the same demonstrations, their tool tokens out of the supervised loss.
    supervisor = Supervisor(SftConfig(coef=0.5), style, processor.tokenizer, end, 0, 0, engine.demonstration)
    ids, mask, sft_turns = supervisor.demonstrations(samples)
    assert sft_turns is not None and all(t.valid_calls == 1 for t in sft_turns)
    assert ids.size(1) >= len(tokens) and mask.sum(1).tolist() == [len(t.tool_tokens) for t in sft_turns]


def test_a_samples_calls_survive_decoding_and_preparing_its_image():
    from vlm_grpo.data import Sample

    call = {"name": "crop", "arguments": {"box": [0, 0, 0.5, 0.5]}}
    image, _ = lab_samples(1)[0].image, None
    sample = Sample("s", image, "How many?", 3, "lab", (call,))
    prepared = sample.with_decoded_images(lambda picture: picture.resize((56, 56)))
    assert prepared.calls == (call,) and prepared.image.size == (56, 56)


def test_a_study_of_runs_with_tools_reports_their_tool_call_rates(tmp_path):
    from vlm_grpo.config import TrainConfig
    from vlm_grpo.study.measures import aggregate
    from vlm_grpo.study.runner import PlannedRun
    from vlm_grpo.study.tables import markdown

    condition = {"name": "inject", "injection": {"mode": "random"}}
    runs = [PlannedRun(f"inject-seed{s}", condition, s, tmp_path, TrainConfig()) for s in (0, 1)]
    measures = {
        f"inject-seed{s}": {
            "in_domain_accuracy": 0.5 + s / 10,
            "transfer_accuracy": 0.25,
            "steps_to_threshold": None,
            "wall_s": 10.0,
            "in_domain_tool_call_rate": 0.5 + s / 4,
            "transfer_tool_call_rate": 0.5,
        }
        for s in (0, 1)
    }
    (entry,) = aggregate([condition], runs, measures, eval_n=200)
    assert entry["in_domain_tool_call_rate"]["mean"] == pytest.approx(0.625)
    study = {"preset": "p", "model": "m", "max_steps": 1, "seeds": 2, "eval_n": 200, "in_domain": "a"}
    table = markdown({**study, "transfer": ["b"], "threshold": 0.9, "conditions": [entry]})
    header, rule, row = (line for line in table.splitlines() if line.startswith("|"))
    assert header.endswith("| tool calls, in-domain | tool calls, transfer |") and rule.count("|") == header.count("|")
    cells = [cell.strip() for cell in row.split("|")]
    assert row.count("|") == header.count("|") and cells[-3].startswith("62.5%") and cells[-2].startswith("50.0%")


def test_prefix_guidance_continues_after_a_demonstrated_call(policy):
    from vlm_grpo.guidance import InjectionConfig
    from vlm_grpo.guidance.injection import Injector
    from vlm_grpo.rollout import continue_prefixes

    model, processor, _, _, end = policy
    engine, style, samples, prompts, scorer, rollout = cluster_rollout(policy)
    params = SamplingParams(group_size=2, max_tokens=300)
    injector = Injector(InjectionConfig(mode="rate", rate=0.5, payload="prefix"), style, processor.tokenizer, end, 0, 0)
    injector.tool_demonstration = engine.demonstration

    def converse(owners, prefixes):
        return engine.continue_conversations(prompts, owners, prefixes, params)

    def complete(rows, prefixes):
        return continue_prefixes(engine, prompts, rows, prefixes, 2, params)

    injected = injector.apply(rollout, scorer, 1.0, prefix=(0.5, complete, converse))
    rows = [r for r in range(4) if injected.injected[r]]
    assert rows
    for row in rows:
        turns, n = injected.turns[row], int(injected.completion_mask[row].sum())
        call, _ = engine.demonstration(samples[row // 2], None)
        assert injected.completion_ids[row, : len(call)].tolist() == call  # the demonstrated call and its answer
        assert (turns.calls, turns.valid_calls, turns.turns) == (1, 1, 2) and n > len(call)
        demo, tool = injected.demo_tokens[row, :n], torch.tensor(turns.tool_tokens)
        # The call's tokens are the demonstration's, the tool's are neither, the rest the policy sampled.
        assert demo.tolist() == [not t and i < len(call) for i, t in enumerate(turns.tool_tokens)]
        assert not tool[len(call) :].any() and tool[: len(call)].any()
    with torch.no_grad():
        ids, mask = injected.completion_ids, injected.completion_mask
        logp = completion_logprobs(model, prompts, torch.arange(4), ids, mask, 2, 1.0, "prefix", injected.turns)
    assert bool(torch.isfinite(logp).all())


@pytest.mark.parametrize(
    "remedy",
    [["injection.payload=prefix"], ["sft.coef=0.5"], ["sft.warmup_steps=1"]],
    ids=["prefix-guidance", "chord", "sft-warmup"],
)
def test_remedies_train_on_tool_using_demonstrations(tmp_path, remedy):
    import json

    from support import train_two_steps

    extra = ["data.train=lab-clevr-cluster", "tools.names=[crop]", "prompt.style=r1v"]
    extra += ["max_completion_length=300", "injection.mode=random", *remedy]
    train_two_steps(tmp_path, "tiny-qwen2-vl", extra)
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    sampled = [line for line in lines if "injection/rate" in line]
    assert sampled and all(line["injection/groups_injected"] > 0 for line in sampled)
    if "sft.coef=0.5" in remedy or "sft.warmup_steps=1" in remedy:
        assert all(line["sft/loss"] > 0 for line in lines if "sft/loss" in line) and any("sft/loss" in x for x in lines)


def test_a_tool_demonstration_longer_than_a_rollout_may_be_is_refused(tmp_path, capsys):
    import re

    from support import SMOKE
    from vlm_grpo.config import load_config
    from vlm_grpo.training.trainer import Trainer

    base = ["model=tiny-qwen2-vl", f"output_dir={tmp_path}", "progress=false", "report_to=[]", "prompt.style=r1v"]
    calling = [*base, "data.train=lab-clevr-cluster", "tools.names=[crop]", "injection.mode=random"]
    with pytest.raises(
        ValueError, match=r"lab-clevr-cluster/\d+: its demonstration can be \d+ tokens \(\d+ of them the"
    ) as e:
        Trainer(load_config(SMOKE, [*calling, "max_completion_length=40"]))
    # The longest the r1v reasoning sentences can make it, however the draws fall: one token less is refused.
    longest = int(re.search(r"at least (\d+)", str(e.value)).group(1))
    with pytest.raises(ValueError, match=f"can be {longest} tokens"):
        Trainer(load_config(SMOKE, [*calling, f"max_completion_length={longest - 1}"]))
    Trainer(load_config(SMOKE, [*calling, f"max_completion_length={longest}"]))  # room for the whole conversation
    assert "warning" not in capsys.readouterr().out
    # One turn (no tools, or samples that call nothing): a warning, and the run goes on, as a cut
    # demonstration still trains its first tokens.
    for extra in ([], ["tools.names=[crop]"]):
        Trainer(load_config(SMOKE, [*base, *extra, "injection.mode=random", "max_completion_length=4"]))
        assert re.search(r"warning: lab-clevr/\d+: its demonstration can be \d+ tokens, over", capsys.readouterr().out)


def test_eval_with_a_tool_reports_how_often_answers_called_it(tmp_path):
    import json

    from typer.testing import CliRunner

    from vlm_grpo.cli import app

    args = ["eval", "--model", "tiny-qwen2-vl", "--data", "lab-clevr-cluster", "--style", "r1v", "--n", "2"]
    result = CliRunner().invoke(app, [*args, "--tool", "crop", "--max-new-tokens", "12", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (scores,) = json.loads((tmp_path / "summary.json").read_text())["results"].values()
    assert scores["lab-clevr-cluster"]["tool_call_rate"] == 0.0  # a random tiny model never calls
    records = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(record["tool_calls"] == 0 for record in records)
    unknown = CliRunner().invoke(app, [*args, "--tool", "scissors", "--out", str(tmp_path)])
    assert unknown.exit_code == 2 and "scissors" in unknown.output and "Traceback" not in unknown.output


def test_a_box_the_tool_refuses_is_an_error_turn_and_not_a_failure(policy):
    model, processor, _, prompts, end = policy
    empty = '<tool_call>{"name": "crop", "arguments": {"box": [0.5, 0.5, 0.5, 0.5]}}</tool_call>'
    inner = FirstTurnCalls(model, processor, end, (empty,))
    done = ToolEngine(inner, TOOLS, 2, end).sample(prompts, SamplingParams(group_size=2, max_tokens=200))
    refused = done.turns[0]
    assert (refused.calls, refused.valid_calls, refused.failures, refused.turns) == (1, 0, 0, 2)
    assert "<tool_response>error: the box [0.5, 0.5, 0.5, 0.5] is empty inside the 112x112 image" in refused.transcript
