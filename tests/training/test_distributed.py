"""Two CPU processes (gloo) against one: same weights on every rank, and the same update as one
process with the same global batch when sampling is replaced by fixed completions."""

import json
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from support import ROOT, free_port, run_python, torchrun

pytestmark = pytest.mark.slow

# Replaces sampling with completions fixed by each prompt's answer, and records a digest of the
# parameters after every optimizer update on every rank.
DRIVER = textwrap.dedent("""
    import hashlib, json, os, sys, torch
    from vlm_grpo.training import ops, trainer as T
    from vlm_grpo.config import load_config
    from vlm_grpo.rollout import Completions, HFEngine, mask_after_end
    from vlm_grpo.rollout.engines import register_engine

    class FixedEngine(HFEngine):  # the hf engine, sampling replaced by completions fixed by each answer
        def sample(self, prompts, params, prefixes=None):
            G, tok = params.group_size, self.processor.tokenizer
            end = tok.convert_tokens_to_ids("<|im_end|>")
            texts = [f"{s.answer + (g % 3) - 1}" if g % 2 else "there are many objects here"
                     for s in prompts.samples for g in range(G)]
            rows = [tok(t, add_special_tokens=False)["input_ids"] + [end] for t in texts]
            width = max(map(len, rows))
            ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows])
            mask, truncated = mask_after_end(ids, [end])
            return Completions(ids, mask, truncated, texts)

        def evaluator(self):
            return self

    register_engine("fixed", lambda model, processor, options: FixedEngine(model, processor))

    real_step = ops.OptimizerStep.__call__
    def step_and_digest(self):
        norm, run = real_step(self), self.run
        with run.strategy.gathered(run.model):  # sharded weights: every rank gathers them whole
            full = [p.full_tensor() if hasattr(p, "full_tensor") else p for p in run.model.parameters()]
            digest = hashlib.sha256(b"".join(p.detach().clone().numpy().tobytes() for p in full)).hexdigest()
        with open(os.path.join(run.out, f"digest-{run.world.rank}.jsonl"), "a") as f:
            f.write(json.dumps(digest) + "\\n")
        return norm

    ops.OptimizerStep.__call__ = step_and_digest
    T.Trainer(load_config(None, sys.argv[1:])).train()
""")

ARGS = [
    "model=tiny-qwen2-vl",
    "num_generations=4",
    "prompts_per_step=4",
    "num_iterations=2",
    "micro_batch_size=4",
    "learning_rate=1e-3",
    "max_steps=3",
    "save_steps=3",
    "progress=false",
    "report_to=[]",
]


def cli_driver(tmp_path) -> str:
    """A script that runs the `vlm-grpo` command line (torchrun needs a script path)."""
    plain = tmp_path / "plain.py"
    plain.write_text("import sys\nfrom vlm_grpo.cli import main\nsys.argv = ['vlm-grpo'] + sys.argv[1:]\nmain()\n")
    return str(plain)


def launch(tmp_path, nproc, out, *extra):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    launcher = [] if nproc == 1 else torchrun(nproc)
    fixed = ["rollout_engine=fixed"]  # the driver's engine
    result = run_python(*launcher, str(driver), *ARGS, *fixed, f"output_dir={out}", *extra, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def test_two_processes_match_one(tmp_path):
    launch(tmp_path, 2, tmp_path / "two")
    launch(tmp_path, 1, tmp_path / "one")
    rank0 = (tmp_path / "two" / "digest-0.jsonl").read_text().splitlines()
    rank1 = (tmp_path / "two" / "digest-1.jsonl").read_text().splitlines()
    assert len(rank0) == 6 and rank0 == rank1  # identical parameters on both ranks after every update
    two = load_file(tmp_path / "two" / "checkpoint-3" / "model.safetensors")
    one = load_file(tmp_path / "one" / "checkpoint-3" / "model.safetensors")
    worst = max((two[k] - one[k]).abs().max().item() for k in one)
    assert worst < 1e-5, worst
    lines = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [record["world_size"] for record in lines] == [2, 2, 2]  # one metrics file, written by rank 0
    assert not (tmp_path / "two" / "checkpoint-3" / "digest-1.jsonl").exists()


def test_two_processes_inject_as_one(tmp_path):
    """The injection plan is drawn for the global batch: two processes inject the rows one would."""
    extra = ["injection.mode=random", "injection.rate.schedule=adaptive", "prompt.style=r1v"]
    launch(tmp_path, 2, tmp_path / "two", *extra)
    launch(tmp_path, 1, tmp_path / "one", *extra)
    two = load_file(tmp_path / "two" / "checkpoint-3" / "model.safetensors")
    one = load_file(tmp_path / "one" / "checkpoint-3" / "model.safetensors")
    assert max((two[k] - one[k]).abs().max().item() for k in one) < 1e-5
    metrics = [
        [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        for run in ("two", "one")
    ]
    for key in ("injection/rate", "injection/strength", "injection/groups_injected"):
        per_step = [[line[key] for line in run] for run in metrics]
        assert per_step[0] == pytest.approx(per_step[1]), key
    assert any(line["injection/rate"] > 0 for line in metrics[1])


@pytest.mark.parametrize("mode", ["fsdp=full_shard", "fsdp=shard_grad_op", "zero_stage=2", "zero_stage=3"])
def test_sharded_two_processes_match_one_and_resume(tmp_path, mode):
    if mode.startswith("zero"):
        pytest.importorskip("deepspeed")
    launch(tmp_path, 1, tmp_path / "one")
    launch(tmp_path, 2, tmp_path / "fsdp", mode, "save_steps=2")  # two micro-batches per update and process
    rank0 = (tmp_path / "fsdp" / "digest-0.jsonl").read_text().splitlines()
    assert len(rank0) == 6 and rank0 == (tmp_path / "fsdp" / "digest-1.jsonl").read_text().splitlines()
    one = load_file(tmp_path / "one" / "checkpoint-3" / "model.safetensors")
    sharded = load_file(tmp_path / "fsdp" / "checkpoint-3" / "model.safetensors")
    assert sorted(sharded) == sorted(one)  # gathered, in the usual checkpoint format
    assert max((sharded[k] - one[k]).abs().max().item() for k in one) < 1e-5

    (tmp_path / "fsdp" / "checkpoint-3").rename(tmp_path / "uninterrupted-3")
    launch(tmp_path, 2, tmp_path / "fsdp", mode, "save_steps=2", "resume=true")  # from checkpoint-2
    resumed = load_file(tmp_path / "fsdp" / "checkpoint-3" / "model.safetensors")
    uninterrupted = load_file(tmp_path / "uninterrupted-3" / "model.safetensors")
    assert max((resumed[k] - uninterrupted[k]).abs().max().item() for k in one) < 1e-6
    from transformers import AutoModelForImageTextToText

    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "fsdp" / "checkpoint-3")
    assert type(reloaded).__name__ == "Qwen2VLForConditionalGeneration"


def test_two_process_resume_restores_every_ranks_sampling(tmp_path):
    out = tmp_path / "run"

    def train(*extra):
        args = [*ARGS, "save_steps=2", f"output_dir={out}", *extra]
        result = run_python(*torchrun(2), cli_driver(tmp_path), "train", *args, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]

    train()  # sampled completions: each rank draws from its own RNG
    (out / "checkpoint-3").rename(tmp_path / "uninterrupted-3")
    train("resume=true")
    resumed = load_file(out / "checkpoint-3" / "model.safetensors")
    uninterrupted = load_file(tmp_path / "uninterrupted-3" / "model.safetensors")
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)
    state = torch.load(out / "checkpoint-3" / "trainer_state.pt", weights_only=True)
    assert len(state["rng_per_rank"]) == 2


def test_uneven_split_is_refused(tmp_path):
    args = [*ARGS, "prompts_per_step=3", f"output_dir={tmp_path / 'x'}"]
    result = run_python(*torchrun(2), cli_driver(tmp_path), "train", *args)
    assert result.returncode != 0 and "prompts_per_step=3 must divide by the number of processes (2)" in result.stderr


ACCELERATE_CONFIGS = ROOT / "configs" / "accelerate"


def test_every_shipped_accelerate_config_loads():
    from accelerate.commands.config.config_args import load_config_from_file

    kinds = {}
    for path in sorted(ACCELERATE_CONFIGS.glob("*.yaml")):
        config = load_config_from_file(str(path))
        assert config.num_processes >= 2, path.name
        kinds[path.name] = config.distributed_type
        if config.distributed_type == "FSDP":
            assert config.fsdp_config["fsdp_version"] == 2, path.name
        if config.distributed_type == "DEEPSPEED":
            assert config.deepspeed_config["zero_stage"] in (2, 3), path.name
    assert set(kinds.values()) == {"MULTI_GPU", "FSDP", "DEEPSPEED"} and len(kinds) >= 9, kinds


@pytest.mark.parametrize(
    "name, expected, optimizer_keys",
    [
        ("cpu-2proc.yaml", "fsdp: none", int),
        ("cpu-2proc-fsdp.yaml", "fsdp: full_shard", str),  # a gathered FSDP optimizer state is keyed by name
        ("cpu-2proc-zero2.yaml", "zero_stage: 2", None),  # DeepSpeed keeps its own, under deepspeed/
    ],
)
def test_accelerate_launch_two_cpu_processes(tmp_path, name, expected, optimizer_keys):
    if "zero" in name:
        pytest.importorskip("deepspeed")
    launcher = ["-m", "accelerate.commands.launch", "--config_file", str(ACCELERATE_CONFIGS / name)]
    launcher += ["--main_process_port", free_port()]
    args = [*ARGS, "max_steps=1", "save_steps=1", f"output_dir={tmp_path / 'run'}"]
    result = run_python(*launcher, cli_driver(tmp_path), "train", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    line = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert line["world_size"] == 2
    assert expected in (tmp_path / "run" / "config.yaml").read_text()
    optimizer = torch.load(tmp_path / "run" / "checkpoint-1" / "trainer_state.pt", weights_only=True)["optimizer"]
    if optimizer_keys is None:
        assert optimizer is None and (tmp_path / "run" / "checkpoint-1" / "deepspeed").is_dir()
    else:
        assert optimizer["state"] and all(isinstance(key, optimizer_keys) for key in optimizer["state"])
