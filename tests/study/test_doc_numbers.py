"""Every study-derived number in the docs and in the advice comes from the committed per-seed files
under docs/results/: generated tables are current, the advice's data files rebuild exactly, and the
numbers quoted in prose are recomputed here from the same files."""

import json
import math
import shutil

import pytest

from vlm_grpo.core.statistics import holm, km_median, mean_ci, paired_difference
from vlm_grpo.study import doc_numbers, lab_findings, map_report
from vlm_grpo.study.doc_numbers import ROOT, difference, p_text, values

RESULTS = ROOT / "docs" / "results"


def test_every_generated_table_matches_the_committed_per_seed_files():
    assert doc_numbers.stale() == []


def test_a_changed_seed_value_makes_its_page_stale(tmp_path):
    shutil.copytree(RESULTS, tmp_path / "docs" / "results")
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    study = json.loads((RESULTS / "seed" / "study.json").read_text())
    study["conditions"][0]["in_domain_accuracy"]["values"][0] -= 0.05
    (tmp_path / "docs" / "results" / "seed" / "study.json").write_text(json.dumps(study))
    assert doc_numbers.stale(tmp_path) == ["README.md"]


def test_the_advice_files_rebuild_exactly_from_the_committed_data():
    runs, command, controls = map_report.from_json(RESULTS / "map" / "map.json")
    assert controls == []
    built, md, data = map_report.rendered(runs, command)
    assert md == (RESULTS / "map" / "map.md").read_text()
    assert data == (RESULTS / "map" / "map.json").read_text()  # byte for byte
    # the distillation comparison, against plain GRPO and against the study's injection
    runs, command, controls = map_report.from_json(RESULTS / "distill" / "map.json")
    assert controls == ["random"] and command.endswith("--against random")
    _, md, data = map_report.rendered(runs, command, controls)
    assert md == (RESULTS / "distill" / "map.md").read_text()
    assert json.loads(data) == json.loads((RESULTS / "distill" / "map.json").read_text())
    advice = ROOT / "src" / "vlm_grpo" / "evaluation" / "map_advice.json"
    assert map_report.advice_text(built, "vlm-grpo study --preset map") == advice.read_text()
    findings = ROOT / "src" / "vlm_grpo" / "evaluation" / "lab_findings.json"
    assert lab_findings.text() == findings.read_text()


def _points(stat):
    lo, hi = (v * 100 for v in stat["ci"])
    return f"{stat['mean'] * 100:+.1f} [{lo:+.1f}, {hi:+.1f}]"


def _holm(name, pairs, key):
    """Holm over the given pairs' in-domain and transfer tests; the adjusted p of `key` (a pair, a column)."""
    tests = [(p, c) for p in pairs for c in ("in_domain_accuracy", "transfer_accuracy")]
    adjusted = holm([difference(name, *p, c)["p_t"] for p, c in tests])
    return adjusted[tests.index(key)]


def _map_runs(cell, arm, key):
    data = json.loads((RESULTS / "map" / "map.json").read_text())
    return [r[key] for r in sorted(data["runs"], key=lambda r: r["seed"]) if r["cell"] == cell and r["arm"] == arm]


TOOL_PAIRS = [("sft-warmup", "none"), ("inject", "none"), ("rate-0.25", "none"), ("inject", "sft-warmup"),
              ("rate-0.25", "inject")]  # fmt: skip


def _p(name, pairs, pair, column):
    return p_text(_holm(name, pairs, (pair, column)))


def claims():
    """(page, text that must appear in it), each text built from the committed files."""
    weak = difference("seed", "default-inject", "default-none", "transfer_accuracy")
    severe = difference("schedules", "random", "none", "transfer_accuracy")
    strong = difference("seed", "r1v-inject", "r1v-none", "transfer_accuracy")
    yield "README.md", f"weak start ({_points(weak).replace(' [', ' points [')})"
    yield "README.md", f"severe one ({_points(severe)})"
    yield "README.md", f"(transfer {_points(strong)})"
    yield "README.md", f"`rate` 0.25: {_points(difference('schedules', 'rate-0.25', 'none', 'transfer_accuracy'))}"
    seed_pairs = [("seed", ("default-inject", "default-none")), ("seed", ("r1v-inject", "r1v-none")),
                  ("schedules", ("random", "none"))]  # fmt: skip
    section1 = holm(
        [difference(n, *p, c)["p_t"] for n, p in seed_pairs for c in ("in_domain_accuracy", "transfer_accuracy")]
    )
    yield "docs/results.md", f"at {p_text(section1[1])}.)"
    assert section1[1] == section1[5] < 0.05
    schedules = [(p["treated"], p["control"]) for p in doc_numbers.study("schedules")["pairs"]]
    columns = ("in_domain_accuracy", "transfer_accuracy")
    smallest = min(p for p in holm([difference("schedules", *p, c)["p_t"] for p in schedules for c in columns]) if p)
    yield "docs/results.md", f"the smallest adjusted p being {p_text(smallest)})"
    yield "docs/tools.md", f"(p 0.008\n-> {_p('tools', TOOL_PAIRS, ('inject', 'none'), 'transfer_accuracy')})"
    gain = _p("tools", TOOL_PAIRS, ("inject", "sft-warmup"), "in_domain_accuracy")
    yield "docs/results.md", f"the gain over the warm-up to {gain}."
    for page in ("docs/results.md", "docs/tools.md"):
        yield page, f"Holm {_p('tools-150', TOOL_PAIRS, ('inject', 'none'), 'in_domain_accuracy')} over"
        yield page, f"Holm {_p('tools-150', TOOL_PAIRS, ('rate-0.25', 'none'), 'in_domain_accuracy')}"
    for name, page in (("tools", "docs/results.md"), ("tools-150", "docs/tools.md")):
        wall = {c: mean_ci(values(name, c, "wall_s").values())["mean"] for c in ("inject", "none")}
        yield page, f"{wall['inject']:,.0f} s against {wall['none']:,.0f} s"
    b1 = [f"{v * 100:.1f}" for v in _map_runs("b1", "none", "in_domain_accuracy")]
    yield "docs/results.md", f"({b1[0]},\n    {b1[1]} and {b1[2]} % in-domain on seeds 0-2)"
    b1 = [f"{v * 100:.1f}" for v in _map_runs("b1", "random", "in_domain_accuracy")]
    yield "docs/results.md", f"injection more ({b1[0]}, {b1[1]} and {b1[2]} %)"
    rule, variant = (_map_runs("central", arm, "sampled_present_90") for arm in ("random", "sampled"))
    yield "docs/results.md", f"{rule[0]}, {rule[1]}, {rule[2]},\n    {rule[3]} and {rule[4]} steps"
    yield "docs/results.md", f"variant {', '.join(map(str, variant[:4]))} and {variant[4]}"
    direct = paired_difference([math.log(x) for x in rule], [math.log(x) for x in variant])
    yield "docs/results.md", f"paired t-test gives p {direct['p_t']:.3f} before any correction"
    lr = _map_runs("lr3e-5", "none", "sampled_present_90")
    yield "docs/results.md", f"by steps {min(lr)}-{max(lr)} on every seed"
    weak_seed = {arm: values("seed", f"default-{arm}", "steps_to_threshold") for arm in ("inject", "none")}
    by30 = sum(t is not None and t <= 30 for t in weak_seed["none"].values())
    ever = sum(t is not None for t in weak_seed["none"].values())
    yield "docs/results.md", f"without it {by30} of 5 by step 30 and {ever} of 5 by step 60"
    assert km_median(list(weak_seed["none"].values()), 60) == 40


def _distill_difference(cell, arm, key):
    """A paired difference of the distillation comparison, as docs/results.md section 7 quotes it."""
    data = json.loads((RESULTS / "distill" / "map.json").read_text())
    c = next(c for c in data["comparisons"] if c["cell"] == cell and c["arm"] == arm)[key]
    lo, hi = (100 * x for x in c["ci"])
    return f"{c['mean'] * 100:+.1f} [{lo:+.1f}, {hi:+.1f}] (p {c['p_t']:.3f}, Holm {c['p_holm']:.2f})"


def distill_claims():
    yield "docs/results.md", _distill_difference("central", "distill", "transfer_difference")
    yield "docs/results.md", _distill_difference("central", "random", "transfer_difference")
    yield "docs/results.md", _distill_difference("g4", "distill", "in_domain_difference")
    yield "docs/results.md", _distill_difference("g4", "random", "in_domain_difference")
    for cell, arm, key in (
        ("central", "sft-warmup", "transfer_difference"),
        ("central", "rate", "transfer_difference"),
        ("g4", "rate", "in_domain_difference"),
        ("g4", "rate", "transfer_difference"),
        ("g4", "sft-warmup", "in_domain_difference"),
    ):
        yield "docs/results.md", _distill_difference(cell, arm, key)


def _wilson(rate: dict) -> str:
    lo, hi = (100 * x for x in rate["accuracy_ci"])
    return f"{rate['accuracy'] * 100:.1f} % [{lo:.1f}, {hi:.1f}]"


def video_claims():
    """Section 8: the video base's measured rates, the chance levels of its held-out rows, and the trained
    policies given the whole clip or one frame (docs/results/video/one-frame.json)."""
    from collections import Counter

    from vlm_grpo.data import eval_samples, open_source, split_indices

    base = json.loads((ROOT / "src" / "vlm_grpo" / "lab" / "weights" / "measurements_video_n200.json").read_text())
    clip, frame = _wilson(base["r1v_greedy_clips"]), _wilson(base["r1v_greedy_clips-frame"])
    yield "docs/results.md", f"| `lab-base-video`, r1v prompt (95 % Wilson) | {clip} | {frame} |"
    yield "docs/studies.md", f"Given the whole clip it counts {clip} of 200 held-out clips"
    yield "docs/studies.md", f"R1-V prompt; given the middle frame of the same clips, {frame}"
    transfer = base["r1v_greedy_clips-transfer"]["accuracy"] * 100
    yield "docs/results.md", f"counts only {transfer:.1f} % of\n  `lab-clips-transfer`"
    present = base["default_sampled_clips"]["answer_present_rate"] * 100
    yield "docs/results.md", f"the severe cold start: {present:.1f} % of sampled plain-prompt"
    source = open_source("lab-clips")
    rows = eval_samples(source, split_indices(len(source), 1000)[1], 200)
    commonest = max(Counter(r.answer for r in rows).values()) / len(rows) * 100
    yield "docs/results.md", f"| 16.7 % / {commonest:.1f} % | 16.7 % / {commonest:.1f} % |"
    runs = json.loads((RESULTS / "video" / "one-frame.json").read_text())["results"]
    accuracy = {s: [r[s]["accuracy"] for r in runs.values()] for s in ("lab-clips", "lab-clips-frame")}
    cells = [mean_ci(accuracy[s]) for s in accuracy]
    text = " | ".join(f"{c['mean'] * 100:.1f} % [{c['ci'][0] * 100:.1f}, {c['ci'][1] * 100:.1f}]" for c in cells)
    yield "docs/results.md", f"plain prompt (mean [t-interval over the 6]) | {text} |"
    gain = paired_difference(accuracy["lab-clips"], accuracy["lab-clips-frame"])
    lo, hi = (100 * x for x in gain["ci"])
    yield (
        "docs/results.md",
        f"by +{gain['mean'] * 100:.1f}\n  points [{lo:+.1f}, {hi:+.1f}] paired over the 6 (p {gain['p_t']:.2g})",
    )
    study = {c: values("video", c, "in_domain_accuracy") for c in ("inject", "none")}
    assert sorted(accuracy["lab-clips"]) == sorted([*study["inject"].values(), *study["none"].values()])
    learnt = sorted(v * 100 for c in study.values() for v in c.values() if v > commonest / 100)
    yield "docs/results.md", f"{len(learnt)} of the 6\n  runs end at {learnt[0]:.1f}-{learnt[-1]:.1f} %"
    transfer_means = sorted(mean_ci(values("video", c, "transfer_accuracy").values())["mean"] * 100 for c in study)
    yield "docs/results.md", f"near chance in both arms ({transfer_means[0]:.1f}-{transfer_means[1]:.1f} %)"


@pytest.mark.parametrize("page, text", [*claims(), *distill_claims(), *video_claims()], ids=lambda v: str(v)[:40])
def test_numbers_quoted_in_prose_are_what_the_files_give(page, text):
    assert text in (ROOT / page).read_text()


def _against_injection():
    """The distillation comparison's table against the study's injection, rebuilt from the per-run readings."""
    runs, _, _ = map_report.from_json(RESULTS / "distill" / "map.json")
    return {(c["cell"], c["arm"]): c for c in map_report.against(runs, "random")}


def _against_text(cell, arm, key, holm=False):
    c = _against_injection()[(cell, arm)][key]
    tail = f", Holm {p_text(c['p_holm'])}" if holm else ""
    return f"{_points(c)} (p {p_text(c['p_t'])}{tail})"


def distill_against_claims():
    """Section 7's prose on the arms against injection, on its teacher's compute and on the tool task
    (compared with the page's whitespace collapsed: a quote may wrap)."""
    table = _against_injection()
    yield f"this table's {2 * len(table)} tests"
    yield f"transfer {_against_text('central', 'distill', 'transfer_difference')} against injection"
    yield f"in-domain {_against_text('central', 'distill', 'in_domain_difference')}"
    yield f"in-domain: {_against_text('g4', 'distill', 'in_domain_difference', holm=True)}"
    for cell in ("central", "g4"):  # "no better than injection at either cell", with either weight
        for arm in ("distill", "distill-decay"):
            assert all(table[(cell, arm)][f"{k}_difference"]["mean"] < 0 for k in ("in_domain", "transfer"))
    differences = {(key, k): t[f"{k}_difference"] for key, t in table.items() for k in ("in_domain", "transfer")}
    survivors = {key for key, d in differences.items() if d["p_holm"] < 0.05}
    assert survivors == {(("g4", "sft-warmup"), "in_domain"), (("g4", "sft-warmup"), "transfer")}
    assert all(differences[key]["mean"] < 0 for key in survivors)  # "below it in both columns"
    rate = table[("central", "rate")]["transfer_difference"]
    yield f"kept {_points(rate)} points more transfer than injection at the centre (Holm {p_text(rate['p_holm'])})"
    runs, _, _ = map_report.from_json(RESULTS / "distill" / "map.json")
    distill = {(c, a): [r for r in runs if (r["cell"], r["arm"]) == (c, a)] for c, a in table if "distill" in a}
    passes = {key: {r["teacher_passes"] for r in mine} for key, mine in distill.items()}
    assert all(len(p) == 1 for p in passes.values())  # every seed scored as many
    yield f"{min(passes[('central', 'distill')]):,} per run at the centre with a constant weight"
    yield f"{min(passes[('central', 'distill-decay')]):,} with the decaying one"
    share = {c: sum(r["teacher_s"] / r["wall_s"] for r in distill[(c, "distill")]) / 5 for c in ("central", "g4")}
    yield f"took {share['central'] * 100:.1f} % of a constant-weight run's training wall time at the centre"
    yield f"and {share['g4'] * 100:.1f} % at G 4"
    tools = json.loads((RESULTS / "distill" / "tool-calls" / "summary.json").read_text())
    assert (tools["style"], tools["temperature"], tools["in_domain"]) == ("r1v", 1.0, "lab-clevr-cluster")
    calls = {m: r["lab-clevr-cluster"] for m, r in tools["results"].items()}
    teacher, base = (calls[m]["tool_call_rate"] * calls[m]["n"] for m in ("lab-teacher", "lab-base-tools"))
    yield f"{teacher:.0f} of {tools['n']} lab-teacher answers called it, against {base:.0f} of {tools['n']}"


@pytest.mark.parametrize("text", list(distill_against_claims()), ids=lambda v: str(v)[:40])
def test_section_7_against_injection_compute_and_tools_are_what_the_files_give(text):
    page = " ".join((ROOT / "docs" / "results.md").read_text().split())
    assert " ".join(text.split()) in page


def test_assess_names_no_distillation():
    """Section 7: the numbers give no case for distillation, and `assess` does not suggest it."""
    evaluation = ROOT / "src" / "vlm_grpo" / "evaluation"
    for name in ("map_advice.py", "map_advice.json", "lab_findings.json", "decision.py", "assess.py"):
        assert "distill" not in (evaluation / name).read_text().lower(), name
    advice = json.loads((evaluation / "map_advice.json").read_text())
    assert {c["arm"] for c in advice["cells"]} <= {"random", "rate", "sampled"}


def test_the_demo_studys_transfer_numbers_follow_from_its_per_seed_values():
    """studies.md keeps the five-seed lab-demo study's per-seed transfer values (its files are not in
    the repository); the means and the paired interval quoted beside them are recomputed here."""
    page = (ROOT / "docs" / "studies.md").read_text()
    rows = {}
    for line in page.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 4 and cells[0] in ("cold-inject", "cold-none", "mild-inject", "mild-none"):
            rows.setdefault(cells[0], [float(v) for v in cells[3].split(",")])  # the transfer table comes first
    assert len(rows) == 4
    cost = paired_difference(rows["cold-none"], rows["cold-inject"])
    lo, hi = cost["ci"]
    assert f"{cost['mean']:.1f} points on\naverage" in page
    assert f"95 % interval {lo:.1f} to {hi:.1f} points" in page
    assert ", ".join(f"{d:.1f}" for d in cost["values"]) in page
    mild = [mean_ci(rows[c])["mean"] for c in ("mild-inject", "mild-none")]
    assert f"({mild[0]:.1f} and {mild[1]:.1f} % on average)" in page
