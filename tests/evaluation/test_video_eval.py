"""`assess` and `eval` on video rows: a saved tiny Qwen2.5-VL folder, a jsonl of video paths, every prompt
sampled and scored with its frames (decoded once per sample, at the processor's frame settings)."""

import json

from support import write_video
from vlm_grpo.evaluation.assess import assess
from vlm_grpo.evaluation.final_eval import evaluate_models
from vlm_grpo.evaluation.records import EvalOptions
from vlm_grpo.models.tiny import save_tiny

OPTIONS = EvalOptions(max_new_tokens=6, batch_size=8, device="cpu", progress=False)


def test_assess_and_eval_read_video_rows(tmp_path):
    for i in range(2):
        write_video(tmp_path / f"clip{i}.mp4", frames=4 + 4 * i, fps=4, size=(48, 40))
    rows = [{"video": f"clip{i % 2}.mp4", "question": "How many colours?", "answer": 1 + i} for i in range(3)]
    data = tmp_path / "videos.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    model = str(save_tiny(tmp_path / "model", family="qwen2.5-vl"))
    assessment = assess(model, str(data), "default", n=3, group_size=2, out=tmp_path / "assess", options=OPTIONS)
    records = [json.loads(line) for line in (tmp_path / "assess" / "records.jsonl").read_text().splitlines()]
    assert assessment["default"]["n_prompts"] == 3 and len(records) == 3 * 2 + 3  # sampled G = 2, then greedy
    summary = evaluate_models([model], [str(data)], n=3, out=tmp_path / "eval", options=OPTIONS)
    assert summary["results"][model][str(data)]["n"] == 3
