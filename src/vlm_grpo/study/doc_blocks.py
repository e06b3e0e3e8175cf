"""What each generated block of the documentation shows: its rows (which study, which conditions)
and columns; `doc_numbers` renders them from the committed per-seed files under docs/results/."""

from __future__ import annotations

ACC = ["lab-clevr accuracy", "lab-superclevr accuracy (transfer)"]
STEPS = ["steps to 90 % answer-present", "steps to 70 % accuracy"]
DIFFS = ["in-domain (points)", "transfer (points)"]

SEED_ROWS = [
    ("weak, injection", "seed", "default-inject"),
    ("weak, none", "seed", "default-none"),
    ("strong (r1v), injection", "seed", "r1v-inject"),
    ("strong (r1v), none", "seed", "r1v-none"),
    ("severe cold, injection", "schedules", "random"),
    ("severe cold, none", "schedules", "none"),
]
SCHEDULES = ["none", "random", "linear-decay", "adaptive", "rescue", "rate-0.25", "rate-0.5"]
REMEDIES = [
    ("none", "none"),
    ("inject", "inject"),
    ("dynamic sampling", "dynamic-sampling"),
    ("SFT warm-up", "sft-warmup"),
    ("CHORD", "chord"),
    ("HPT gate", "hpt-gate"),
    ("inject, LUFFY", "inject-luffy"),
    ("inject, sampled-only statistics", "inject-sampled-stats"),
    ("r1v, none", "r1v-none"),
    ("r1v, inject", "r1v-inject"),
    ("r1v, prefix guidance", "r1v-prefix"),
]
NAMES = {c: label for label, c in REMEDIES} | {"r1v-inject": "r1v: inject", "r1v-prefix": "r1v: prefix"}
NAMES |= {"r1v-none": "none", "inject-luffy": "LUFFY", "inject-sampled-stats": "sampled-only statistics"}
REMEDY_PAIRS = [
    (f"{NAMES[a]} - {NAMES[b].removeprefix('r1v: ')}", "remedies", a, b)
    for a, b in [
        ("dynamic-sampling", "none"),
        ("dynamic-sampling", "inject"),
        ("sft-warmup", "none"),
        ("sft-warmup", "inject"),
        ("chord", "none"),
        ("chord", "inject"),
        ("hpt-gate", "none"),
        ("hpt-gate", "inject"),
        ("inject-luffy", "none"),
        ("inject-luffy", "inject"),
        ("inject-sampled-stats", "none"),
        ("inject-sampled-stats", "inject"),
        ("r1v-inject", "r1v-none"),
        ("r1v-prefix", "r1v-none"),
        ("r1v-prefix", "r1v-inject"),
    ]
]
ENGINES = [
    ("hf", "hf"),
    ("vllm", "vllm"),
    ("vllm colocate", "vllm-colocate"),
    ("hf, 2 processes", "hf-2proc"),
    ("vllm, 2 processes", "vllm-2proc"),
    ("vllm colocate, 2 processes", "vllm-colocate-2proc"),
]
ENGINE_NAMES = {c: label for label, c in ENGINES}
TOOLS = [
    ("plain GRPO", "none"),
    ("SFT warm-up (10 steps)", "sft-warmup"),
    ("injection (the study's rule)", "inject"),
    ("injection, rate 0.25", "rate-0.25"),
]
TOOL_PAIRS = [
    ("inject", "none"),
    ("rate-0.25", "none"),
    ("sft-warmup", "none"),
    ("inject", "sft-warmup"),
    ("rate-0.25", "inject"),
]
VIDEO_STEPS = ["steps to 90 % answer-present", "steps to 30 % accuracy"]  # the video preset's threshold
TOOLS_HEAD = ["in-domain accuracy", "transfer accuracy", "greedy answers that call, in-domain / transfer"]


def _tools(name: str) -> dict:
    return {
        "kind": "conditions",
        "head": TOOLS_HEAD,
        "columns": ["in", "tr", "calls"],
        "rows": [(label, name, c) for label, c in TOOLS],
    }


def _tool_pairs(name: str) -> dict:
    return {
        "kind": "pairs",
        "head": DIFFS,
        "columns": ["in", "tr"],
        "rows": [(f"{a} - {b}", name, a, b) for a, b in TOOL_PAIRS],
    }


DISTILL_ARMS = [
    ("`rate` 0.25", "rate"),
    ("SFT warm-up (5 steps)", "sft-warmup"),
    ("distillation", "distill"),
    ("distillation, decaying weight", "distill-decay"),
]
DISTILL_CELLS = [("centre", "central"), ("G 4", "g4")]


def _video(name: str) -> dict:
    return {
        "kind": "conditions",
        "head": [
            "lab-clips accuracy",
            "lab-clips-transfer accuracy (transfer)",
            "steps to 50 % answer-present",
            *VIDEO_STEPS,
        ],
        "columns": ["in", "tr", "ap50", "ap90", "acc"],
        "rows": [("injection (the study's rule)", name, "inject"), ("none", name, "none")],
    }


def _video_pairs(name: str) -> dict:
    return {
        "kind": "pairs",
        "head": [*DIFFS, *VIDEO_STEPS],
        "columns": ["in", "tr", "ap90", "acc"],
        "rows": [("inject - none", name, "inject", "none")],
    }


BLOCKS: dict[str, dict] = {
    "readme-seed": {
        "kind": "conditions",
        "head": [*ACC, "steps to 70 % accuracy"],
        "columns": ["in", "tr", "acc"],
        "rows": SEED_ROWS,
    },
    "seed-conditions": {
        "kind": "conditions",
        "head": [*ACC, "steps to 50 % answer-present", *STEPS],
        "columns": ["in", "tr", "ap50", "ap90", "acc"],
        "rows": [
            *SEED_ROWS,
            ("injection required (multiple choice), injection", "mc", "mc-inject"),
            ("injection required (multiple choice), none", "mc", "mc-none"),
        ],
    },  # fmt: skip
    "seed-pairs": {
        "kind": "pairs",
        "head": [*DIFFS, *STEPS],
        "columns": ["in", "tr", "ap90", "acc"],
        "rows": [
            ("weak", "seed", "default-inject", "default-none"),
            ("strong (r1v)", "seed", "r1v-inject", "r1v-none"),
            ("severe cold", "schedules", "random", "none"),
            ("injection required", "mc", "mc-inject", "mc-none"),
        ],
    },  # fmt: skip
    "schedules-conditions": {
        "kind": "conditions",
        "head": [*ACC, *STEPS],
        "columns": ["in", "tr", "ap90", "acc"],
        "rows": [(c, "schedules", c) for c in SCHEDULES],
    },
    "schedules-pairs": {
        "kind": "pairs",
        "head": [*DIFFS, "steps to 70 % accuracy"],
        "columns": ["in", "tr", "acc"],
        "rows": [(f"{a} - {b}", "schedules", a, b) for a in SCHEDULES[1:] for b in ("none",)]
        + [(f"{a} - random", "schedules", a, "random") for a in SCHEDULES[2:]],
    },
    "remedies-conditions": {
        "kind": "conditions",
        "head": [*ACC, *STEPS, "sampled / supervised per run"],
        "columns": ["in", "tr", "ap90", "acc", "compute"],
        "rows": [(label, "remedies", c) for label, c in REMEDIES],
    },
    "remedies-pairs": {
        "kind": "pairs",
        "head": [*DIFFS, *STEPS],
        "columns": ["in", "tr", "ap90", "acc"],
        "rows": REMEDY_PAIRS,
    },
    "tools-conditions": _tools("tools"),
    "tools-pairs": _tool_pairs("tools"),
    "tools-150-conditions": _tools("tools-150"),
    "tools-150-pairs": _tool_pairs("tools-150"),
    "engines-conditions": {
        "kind": "conditions",
        "head": [*ACC, "steps to 90 % answer-present (held-out, 20-step grid)"],
        "columns": ["in", "tr", "ap90"],
        "rows": [(label, "engines", c) for label, c in ENGINES],
    },
    "engines-pairs": {
        "kind": "pairs",
        "head": DIFFS,
        "columns": ["in", "tr"],
        "rows": [
            (f"{ENGINE_NAMES[a]} - {ENGINE_NAMES[b]}", "engines", a, b)
            for a, b in [
                ("vllm", "hf"),
                ("vllm-colocate", "hf"),
                ("hf-2proc", "hf"),
                ("vllm-2proc", "vllm"),
                ("vllm-colocate-2proc", "vllm-colocate"),
            ]
        ],
    },
    "video-conditions": _video("video"),
    "video-pairs": _video_pairs("video"),
    "video-60-conditions": _video("video-60"),
    "video-60-pairs": _video_pairs("video-60"),
    "map-transfer": {
        "kind": "map",
        "head": [
            "cell (seeds)",
            "arm",
            "speed-up to 90 % sampled answer-present",
            "speed-up to 70 % held-out accuracy",
            "transfer difference",
        ],
        "rows": [
            ("centre: 2.2 %, B 4, G 8 (5)", "study's rule", "central", "random"),
            ("centre (5)", "`rate` 0.25", "central", "rate"),
            ("centre (5)", "rule, `group_stats=sampled`", "central", "sampled"),
            ("base 12.9 % (3)", "study's rule", "mild", "random"),
            ("B 16 (3)", "study's rule", "b16", "random"),
            ("B 16 (3)", "rule, `group_stats=sampled`", "b16", "sampled"),
            ("G 4 (5)", "study's rule", "g4", "random"),
            ("G 4 (5)", "rule, `group_stats=sampled`", "g4", "sampled"),
            ("G 16 (3)", "study's rule", "g16", "random"),
            ("learning rate 3e-5 (3)", "study's rule", "lr3e-5", "random"),
            ("B 1 (3)", "study's rule", "b1", "random"),
            ("B 1 (3)", "`rate` 0.25", "b1", "rate"),
            ("learning rate 3e-6 (3)", "study's rule", "lr3e-6", "random"),
        ],
    },  # fmt: skip
    "distill-against-injection": {
        "kind": "map-against",
        "source": "distill",
        "control": "random",
        "head": ["cell: arm - injection", *DIFFS],
        "rows": [(f"{where}: {label}", cell, arm) for where, cell in DISTILL_CELLS for label, arm in DISTILL_ARMS],
    },
    "distill-compute": {
        "kind": "map-compute",
        "source": "distill",
        "head": [
            "cell: arm",
            "completions sampled",
            "teacher passes (completions scored)",
            "teacher time, s (share of wall time)",
            "wall time, s",
        ],
        "rows": [
            (f"{where}: {label}", cell, arm)
            for where, cell in DISTILL_CELLS
            for label, arm in [("plain GRPO", "none"), ("injection", "random"), *DISTILL_ARMS]
        ],
    },
}
