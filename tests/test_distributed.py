"""Two CPU processes (gloo) against one: same weights on every rank, and the same update as one
process with the same global batch when sampling is replaced by fixed completions."""

import json
import subprocess
import sys
import textwrap

import pytest
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

# Replaces sampling with completions fixed by each prompt's answer, and records a digest of the
# parameters after every optimizer update on every rank.
DRIVER = textwrap.dedent("""
    import hashlib, json, os, sys, torch
    from vlm_grpo import trainer as T
    from vlm_grpo.config import load_config
    from vlm_grpo.rollout import Rollout, mask_after_end

    def fixed_sample(self, prompts):
        G, tok = self.cfg.num_generations, self.processor.tokenizer
        end = tok.convert_tokens_to_ids("<|im_end|>")
        texts = [f"{s.answer + (g % 3) - 1}" if g % 2 else "there are many objects here"
                 for s in prompts.samples for g in range(G)]
        rows = [tok(t, add_special_tokens=False)["input_ids"] + [end] for t in texts]
        width = max(map(len, rows))
        ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows])
        mask, truncated = mask_after_end(ids, [end])
        scores = [self.scorer(t, prompts.samples[i // G].answer) for i, t in enumerate(texts)]
        return Rollout(prompts, G, ids, mask, truncated, texts, scores)

    real_step = T.GRPOTrainer._optimizer_step
    def step_and_digest(self):
        norm = real_step(self)
        digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in self.model.parameters())).hexdigest()
        with open(os.path.join(self.cfg.output_dir, f"digest-{self.world.rank}.jsonl"), "a") as f:
            f.write(json.dumps(digest) + "\\n")
        return norm

    T.GRPOTrainer.sample = fixed_sample
    T.GRPOTrainer._optimizer_step = step_and_digest
    T.GRPOTrainer(load_config(None, sys.argv[1:])).train()
""")

ARGS = ["model=tiny-qwen2-vl", "num_generations=4", "prompts_per_step=4", "num_iterations=2",
        "micro_batch_size=4", "learning_rate=1e-3", "max_steps=3", "save_steps=3", "progress=false", "report_to=[]"]


def launch(tmp_path, nproc, out):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    if nproc == 1:
        command = [sys.executable, str(driver)]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                   "--master_port", "29533", str(driver)]
    result = subprocess.run(command + ARGS + [f"output_dir={out}"], capture_output=True, text=True, timeout=600)
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
    lines = [json.loads(l) for l in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [l["world_size"] for l in lines] == [2, 2, 2]  # one metrics file, written by rank 0
    assert not (tmp_path / "two" / "checkpoint-3" / "digest-1.jsonl").exists()


def test_uneven_split_is_refused(tmp_path):
    driver = tmp_path / "plain.py"
    driver.write_text("import sys\nfrom vlm_grpo.cli import main\nsys.argv = ['vlm-grpo'] + sys.argv[1:]\nmain()\n")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29534",
                             str(driver), "train", *ARGS, "prompts_per_step=3", f"output_dir={tmp_path / 'x'}"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "prompts_per_step=3 must divide by the number of processes (2)" in result.stderr


@pytest.mark.parametrize("name", ["ddp-1node.yaml", "ddp-2nodes.yaml", "cpu-2proc.yaml"])
def test_shipped_accelerate_configs_load(name):
    from pathlib import Path

    from accelerate.commands.config.config_args import load_config_from_file

    path = Path(__file__).resolve().parent.parent / "configs" / "accelerate" / name
    config = load_config_from_file(str(path))
    assert config.distributed_type == "MULTI_GPU" and config.num_processes >= 2


def test_accelerate_launch_two_cpu_processes(tmp_path):
    from pathlib import Path

    config = Path(__file__).resolve().parent.parent / "configs" / "accelerate" / "cpu-2proc.yaml"
    driver = tmp_path / "plain.py"
    driver.write_text("import sys\nfrom vlm_grpo.cli import main\nsys.argv = ['vlm-grpo'] + sys.argv[1:]\nmain()\n")
    result = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
                             "--main_process_port", "29535", str(driver), "train", *ARGS, "max_steps=1", "save_steps=1",
                             f"output_dir={tmp_path / 'run'}"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    line = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert line["world_size"] == 2
