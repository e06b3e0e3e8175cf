"""The rollout engines' shared parts, without a vLLM server: the registry, the vllm client's
conversions (server rows to completions, LoRA deltas merged into exported weights, the standard HF
folder), its environment and head-size checks, and a server that never answers."""

import json
import stat
import sys

import pytest
import torch
from peft import LoraConfig, get_peft_model

from support import lab_samples
from vlm_grpo.config import ConfigError, load_config
from vlm_grpo.models.tiny import build_tiny
from vlm_grpo.rollout import ENGINES, HFEngine, SamplingParams, encode_prompts, make_engine
from vlm_grpo.rollout.engines import EngineError, EngineOptions, VLLMConfig
from vlm_grpo.rollout.engines.vllm_engine import completions_of
from vlm_grpo.rollout.engines.vllm_http import STAMP, check_environment, start_server
from vlm_grpo.rollout.engines.weights import export_folder, policy_state_dict
from vlm_grpo.tasks.styles import DEFAULT
from vlm_grpo.training.trainer import Trainer


class Tokens:
    """The two tokenizer calls `completions_of` makes, over a literal vocabulary."""

    pad_token_id = 0
    words = {1: "one", 2: "two", 3: "three", 9: "<end>"}

    def batch_decode(self, rows, skip_special_tokens=True):
        return [" ".join(self.words[t] for t in row.tolist() if t not in (0, 9)) for row in rows]


def test_server_rows_become_right_padded_completions_masked_through_the_end_token():
    outputs = [
        [{"token_ids": [1, 2, 9], "logprobs": [-0.5, -1.0, -0.1]}, {"token_ids": [3], "logprobs": [-2.0]}],
        [{"token_ids": [2, 9, 3], "logprobs": [-0.2, -0.3, -9.0]}, {"token_ids": [], "logprobs": []}],
    ]
    done = completions_of(outputs, [9], Tokens())
    assert done.ids.tolist() == [[1, 2, 9], [3, 0, 0], [2, 9, 0], [0, 0, 0]]  # nothing kept past an end
    assert done.mask.tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0], [0, 0, 0]]
    assert done.truncated.tolist() == [False, True, False, True]
    assert done.texts == ["one two", "three", "two", ""]
    expected = torch.tensor([[-0.5, -1.0, -0.1], [-2.0, 0, 0], [-0.2, -0.3, 0], [0, 0, 0]])
    assert torch.equal(done.logprobs, expected)


def test_lora_deltas_are_merged_into_copies_under_the_plain_names():
    torch.manual_seed(0)
    model, _ = build_tiny("qwen2-vl")
    plain = {k: v.clone() for k, v in model.state_dict().items()}
    policy = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.add_(torch.randn_like(p))
    exported = policy_state_dict(policy)
    assert sorted(exported) == sorted(plain)
    policy_before = {k: v.clone() for k, v in policy.state_dict().items()}
    merged = policy.merge_and_unload().state_dict()
    worst = max((exported[k] - merged[k]).abs().max().item() for k in plain)
    assert worst < 1e-6
    q = next(k for k in plain if k.endswith("q_proj.weight"))
    assert not torch.equal(exported[q], plain[q])  # the delta is in
    untouched = next(k for k in policy_before if k.endswith("q_proj.base_layer.weight"))
    plain_name = untouched.replace(".base_layer", "").removeprefix("base_model.model.")
    assert torch.equal(policy_before[untouched], plain[plain_name])  # the trainer's weights are not touched


@pytest.mark.parametrize("family", ["qwen2-vl", "qwen3-vl"])
def test_the_exported_folder_is_a_standard_hf_folder_with_a_video_processor(family, tmp_path):
    model, processor = build_tiny(family)
    folder = export_folder(model, processor, tmp_path / "engine-model")
    config = json.loads((folder / "processor_config.json").read_text())
    assert not config["processor_class"].startswith("ImageOnly")
    assert "video_processor" in config and config["video_processor"]["video_processor_type"]
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()


def test_environment_and_head_size_are_checked_before_anything_starts(tmp_path):
    model, _ = build_tiny("qwen2-vl")  # nano: head size 16
    python = tmp_path / "env" / "bin" / "python"
    with pytest.raises(EngineError, match="make vllm-env"):
        check_environment(python, model)
    python.parent.mkdir(parents=True)
    python.write_text("")
    (tmp_path / "env" / STAMP).write_text(json.dumps({"vllm": "0.32.0", "cuda": False}))
    with pytest.raises(EngineError, match="head sizes 32, 64.*this model's is 16"):
        check_environment(python, model)
    small, _ = build_tiny("qwen2-vl", size="small")
    check_environment(python, small)  # head size 32


def test_a_server_that_never_answers_is_stopped_at_its_timeout(tmp_path):
    """A process that neither serves nor exits: start-up gives up after the timeout, one line, and
    its whole process group is gone (nothing left behind)."""
    script = tmp_path / "silent"
    script.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(600)\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    cfg = VLLMConfig(python=str(script), startup_timeout=2.0)
    with pytest.raises(EngineError, match="not healthy within 2 s") as raised:
        start_server(cfg, tmp_path, "float32", 0, tmp_path / "engine.log")
    assert "\n" not in str(raised.value)


def test_a_server_that_exits_at_start_up_is_named_with_its_last_error(tmp_path):
    script = tmp_path / "crashing"
    script.write_text(f"#!{sys.executable}\nimport sys\nprint('ValueError: no such model', flush=True)\nsys.exit(3)\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    with pytest.raises(EngineError, match=r"exited with code 3 \(ValueError: no such model\) at start-up"):
        start_server(VLLMConfig(python=str(script)), tmp_path, "float32", 0, tmp_path / "engine.log")


def test_a_server_killed_by_a_signal_is_named_by_the_signal_not_its_last_log_line(tmp_path):
    script = tmp_path / "killed"
    body = "import os, signal\nprint('WARNING: thread binding is off', flush=True)\n"
    body += "os.kill(os.getpid(), signal.SIGKILL)\n"
    script.write_text(f"#!{sys.executable}\n{body}")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    with pytest.raises(EngineError) as raised:
        start_server(VLLMConfig(python=str(script)), tmp_path, "float32", 0, tmp_path / "engine.log")
    assert "was killed by SIGKILL" in str(raised.value) and "thread binding" not in str(raised.value)


def test_the_checks_ask_an_engine_what_it_can_do_instead_of_naming_it():
    from vlm_grpo.rollout.engines import EngineTraits, check_processes, register_engine

    traits = EngineTraits(separate_process=True, quantized_weights=False, several_processes=False)
    register_engine("elsewhere", lambda model, processor, options: HFEngine(model, processor), traits=traits)
    assert load_config(None, ["rollout_engine=elsewhere", "overlap_rollout=true"]).overlap_rollout
    with pytest.raises(ConfigError, match="rollout_engine=elsewhere cannot take 4-bit"):
        load_config(None, ["rollout_engine=elsewhere", "lora.enabled=true", "lora.load_in_4bit=true"])
    with pytest.raises(ConfigError, match="rollout_engine=elsewhere serves one trainer process"):
        check_processes("elsewhere", 2)
    check_processes("hf", 2)


def test_engines_are_registered_by_name_and_unknown_ones_refused_at_validation():
    assert {"hf", "vllm"} <= set(ENGINES.names())
    with pytest.raises(ConfigError, match=r"rollout_engine='sglang' is not one of (.*, )?hf, vllm"):
        Trainer(load_config(None, ["rollout_engine=sglang"]))
    with pytest.raises(ConfigError, match="overlap_rollout=true needs an engine in another process"):
        load_config(None, ["overlap_rollout=true"])


def test_the_hf_engine_samples_as_asked_and_continues_after_prefixes():
    torch.manual_seed(0)
    model, processor = build_tiny("qwen2-vl")
    engine = make_engine("hf", model, processor, EngineOptions())
    assert isinstance(engine, HFEngine) and not engine.own_logprobs
    prompts = encode_prompts(processor, DEFAULT, lab_samples(2), torch.device("cpu"))
    done = engine.sample(prompts, SamplingParams(3, 8, 1.0))
    assert done.ids.shape[0] == 6 and done.logprobs is None and len(done.texts) == 6
    greedy = engine.sample(prompts, SamplingParams(1, 8, None))
    prefix = [greedy.ids[0, :2].tolist(), greedy.ids[1, :2].tolist()]
    rest = engine.sample(prompts, SamplingParams(1, 6, None), prefixes=prefix)
    kept = greedy.mask[:, 2:6].bool()  # greedy continues where the prefix left off, up to its end
    assert torch.equal(rest.ids[:, :4][kept], greedy.ids[:, 2:6][kept])


def test_a_tied_lm_head_is_pushed_once_under_the_embeddings_name():
    """Qwen2-VL-2B and Qwen2.5-VL-3B tie the LM head to the embedding: safetensors refuses a shared
    tensor twice, and vLLM ties it again on load."""
    from safetensors.torch import save

    from vlm_grpo.rollout.engines.weights import policy_state_dict

    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed_tokens = torch.nn.Embedding(5, 3)
            self.norm = torch.nn.LayerNorm(3)
            self.lm_head = torch.nn.Linear(3, 5, bias=False)
            self.lm_head.weight = self.embed_tokens.weight

    tensors = policy_state_dict(Tied())
    assert list(tensors) == ["embed_tokens.weight", "norm.weight", "norm.bias"]
    assert save(tensors)  # writable as it is
