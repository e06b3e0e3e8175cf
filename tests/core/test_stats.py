"""Tests for vlm_grpo.core.statistics and the decision framework (pure functions; references computed by hand below)."""

import math

import pytest

from vlm_grpo.core.statistics import (
    mean_ci,
    paired_difference,
    signal_probability,
    steps_to_threshold,
    t_quantile,
    wilson_interval,
)
from vlm_grpo.evaluation.decision import recommend

Z = 1.959964
Z2 = Z * Z  # 3.8414588...


# ----------------------------------------------------------------------------- Wilson
# Wilson: center = (p + z^2/2n) / (1 + z^2/n),
#         half   = z * sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n)


def test_wilson_14_of_100():
    # p = .14, z^2/n = .0384146, denom = 1.0384146
    # center = (.14 + .0192073) / 1.0384146 = .1533181
    # half   = 1.959964 * sqrt(.001204 + .0000960365) / 1.0384146
    #        = 1.959964 * .0360560 / 1.0384146 = .0680547
    lo, hi = wilson_interval(14, 100)
    assert lo == pytest.approx(0.085263, abs=1e-4)
    assert hi == pytest.approx(0.221372, abs=1e-4)


def test_wilson_zero_successes():
    # p = 0: lo = 0, hi = (z^2/n) / (1 + z^2/n) = .3841459 / 1.3841459 = .277533
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0
    assert hi == pytest.approx(0.277533, abs=1e-4)
    assert hi == pytest.approx((Z2 / 10) / (1 + Z2 / 10), abs=1e-12)


def test_wilson_all_successes():
    # p = 1: lo = 1 / (1 + z^2/n) = 1 / 1.3841459 = .722467, hi = 1
    lo, hi = wilson_interval(10, 10)
    assert lo == pytest.approx(0.722467, abs=1e-4)
    assert hi == 1.0


def test_wilson_145_of_1000():
    # p = .145, z^2/n = .00384146, denom = 1.00384146
    # center = (.145 + .00192073) / 1.00384146 = .1463585
    # half   = 1.959964 * sqrt(.000123975 + .00000096036) / 1.00384146
    #        = 1.959964 * .0111775 / 1.00384146 = .0218236
    lo, hi = wilson_interval(145, 1000)
    assert lo == pytest.approx(0.124535, abs=1e-4)
    assert hi == pytest.approx(0.168182, abs=1e-4)


def test_wilson_matches_quadratic_roots():
    # Wilson bounds are the roots of (1+z^2/n) q^2 - (2p + z^2/n) q + p^2 = 0.
    for s, n in [(3, 7), (50, 100), (999, 1000)]:
        p = s / n
        a, b, c = 1 + Z2 / n, -(2 * p + Z2 / n), p * p
        d = math.sqrt(b * b - 4 * a * c)
        lo, hi = wilson_interval(s, n)
        assert lo == pytest.approx((-b - d) / (2 * a), abs=1e-9)
        assert hi == pytest.approx((-b + d) / (2 * a), abs=1e-9)


def test_wilson_empty_and_invalid():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    for s, n in [(11, 10), (-1, 10), (0, -1), (1.5, 10)]:
        with pytest.raises(ValueError):
            wilson_interval(s, n)


# ----------------------------------------------------------------------------- signal


@pytest.mark.parametrize("p,expected", [(0.05, 0.34), (0.145, 0.71), (0.30, 0.94)])
def test_signal_probability_study_numbers(p, expected):
    # 1 - .95^8 = .337; 1 - .855^8 = .714; 1 - .7^8 = .942
    assert signal_probability(p, 8) == pytest.approx(expected, abs=0.01)


def test_signal_probability_edges_and_validation():
    assert signal_probability(0.0, 8) == 0.0
    assert signal_probability(1.0, 8) == 1.0
    assert signal_probability(0.5, 1) == 0.5
    for p, g in [(-0.1, 8), (1.1, 8), (0.5, 0), (0.5, 2.5)]:
        with pytest.raises(ValueError):
            signal_probability(p, g)


# ----------------------------------------------------------------------------- t / mean_ci


def test_t_quantile_matches_table():
    table = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 10: 2.228, 20: 2.086, 30: 2.042}
    for df, t in table.items():
        assert t_quantile(df) == pytest.approx(t, abs=5e-4)
    assert t_quantile(10**6) == pytest.approx(1.960, abs=1e-3)  # normal limit
    assert t_quantile(5, 0.99) == pytest.approx(4.032, abs=1e-3)
    with pytest.raises(ValueError):
        t_quantile(0)


def test_mean_ci_three_seeds():
    # mean = .92, sd = .02, se = .02/sqrt(3) = .0115470, half = 4.303 * se = .049687
    out = mean_ci([0.9, 0.92, 0.94])
    assert out["mean"] == pytest.approx(0.92, abs=1e-12)
    assert out["ci"][0] == pytest.approx(0.870313, abs=1e-4)
    assert out["ci"][1] == pytest.approx(0.969687, abs=1e-4)
    assert out["values"] == [0.9, 0.92, 0.94]


def test_mean_ci_degenerate():
    assert mean_ci([0.5]) == {"mean": 0.5, "ci": None, "values": [0.5]}  # one seed: no interval
    assert mean_ci([]) == {"mean": None, "ci": None, "values": []}
    # two identical values: zero spread
    assert mean_ci([0.3, 0.3])["ci"] == pytest.approx([0.3, 0.3])


# ----------------------------------------------------------------------------- steps


def test_steps_to_threshold():
    steps = [0, 10, 20, 30, 40]
    values = [0.1, None, 0.49, 0.5, 0.95]
    assert steps_to_threshold(steps, values, 0.5) == 30  # inclusive (>=)
    assert steps_to_threshold(steps, values, 0.9) == 40
    assert steps_to_threshold(steps, values, 0.0) == 0
    assert steps_to_threshold(steps, values, 0.99) is None
    assert steps_to_threshold([], [], 0.5) is None
    assert steps_to_threshold([5, 6], [None, 1.0], 1.0) == 6
    with pytest.raises(ValueError):
        steps_to_threshold([1, 2], [0.1], 0.5)


# ----------------------------------------------------------------------------- recommend

# rate -> (table band, viability, table recommendation, flow-chart zone prefix)
CASES = {
    0.04: ("0-5%", "Will fail", "Injection required", "<10%"),
    0.05: ("5-15%", "Slow start", "Consider injection", "<10%"),
    0.06: ("5-15%", "Slow start", "Consider injection", "<10%"),
    0.09: ("5-15%", "Slow start", "Consider injection", "<10%"),
    0.10: ("5-15%", "Slow start", "Consider injection", "10-50%"),
    0.14: ("5-15%", "Slow start", "Consider injection", "10-50%"),
    0.15: ("15-30%", "Works", "Injection optional", "10-50%"),
    0.16: ("15-30%", "Works", "Injection optional", "10-50%"),
    0.29: ("15-30%", "Works", "Injection optional", "10-50%"),
    0.30: ("15-30%", "Works", "Injection optional", "10-50%"),
    0.31: (">30%", "Works well", "No injection needed", "10-50%"),
    0.49: (">30%", "Works well", "No injection needed", "10-50%"),
    0.50: (">30%", "Works well", "No injection needed", "10-50%"),
    0.51: (">30%", "Works well", "No injection needed", ">50%"),
}


@pytest.mark.parametrize("rate", sorted(CASES))
def test_recommend_bands(rate):
    band, viability, table_rec, zone = CASES[rate]
    out = recommend(rate)
    assert out["band"] == band
    assert out["viability"] == viability
    assert out["recommendation"] == table_rec
    assert out["zone"].startswith(zone)
    assert out["signal_probability"] == pytest.approx(1 - (1 - rate) ** 8)
    for key in ("single_domain", "multi_domain"):
        assert isinstance(out[key], str) and out[key].endswith(".")
        assert "injection.mode=" in out[key]


@pytest.mark.parametrize("rate", [0.0, 0.04, 0.06, 0.09])
def test_recommend_low_rate_text(rate):
    out = recommend(rate)
    for key in ("single_domain", "multi_domain"):
        assert "prompt.style=r1v" in out[key]
        assert "injection.mode=random" in out[key]
        assert "injection.rate.schedule=linear_decay" in out[key]
    assert "transfer" in out["multi_domain"]


@pytest.mark.parametrize("rate", [0.10, 0.14, 0.16, 0.31, 0.49])
def test_recommend_mid_rate_text(rate):
    out = recommend(rate)
    assert "injection.mode=random" in out["single_domain"]
    assert "2.5x" in out["single_domain"]
    assert "injection.mode=none" in out["multi_domain"]
    assert "injection.rate.schedule=linear_decay" in out["multi_domain"]
    assert "48%" in out["multi_domain"]


@pytest.mark.parametrize("rate", [0.51, 0.99, 1.0])
def test_recommend_high_rate_text(rate):
    out = recommend(rate)
    assert out["single_domain"] == out["multi_domain"]
    assert "injection.mode=none" in out["single_domain"]
    assert "injection.mode=random" not in out["single_domain"]


@pytest.mark.parametrize("bad", [-0.01, 1.01, float("nan")])
def test_recommend_validates(bad):
    with pytest.raises(ValueError):
        recommend(bad)


def test_paired_difference_on_literal_seeds():
    # differences 1, 1, 2: mean 4/3, sd 0.57735, se 1/3, t(2) = 4.303 -> half 1.434218; t = 4.0, p = 0.0572
    out = paired_difference([1.0, 2.0, 3.0], [0.0, 1.0, 1.0])
    assert out["mean"] == pytest.approx(4 / 3)
    assert out["ci"] == pytest.approx([4 / 3 - 1.434218, 4 / 3 + 1.434218], abs=1e-5)
    assert out["p_t"] == pytest.approx(0.05719, abs=1e-4)
    assert out["p_wilcoxon"] == pytest.approx(0.25)  # three positive differences: exact 2 x 1/8
    assert paired_difference([0.5], [0.2])["p_t"] is None and paired_difference([1, 2], [1, 2])["p_t"] is None
    with pytest.raises(ValueError, match="differ in number"):
        paired_difference([1.0], [1.0, 2.0])


def test_each_zone_cites_the_labs_measurement_from_the_findings_file():
    # The numbers come from lab_findings.json (checked against the per-seed study files in
    # tests/study/test_doc_numbers.py), not from text in the code.
    import json

    from vlm_grpo.evaluation.decision import FINDINGS_FILE

    f = json.loads(FINDINGS_FILE.read_text())
    severe, weak, strong = recommend(0.02)["lab"], recommend(0.14)["lab"], recommend(0.9)["lab"]
    assert "disagrees" in severe and f"{f['severe']['transfer']['mean'] * 100:+.1f} points" in severe
    assert f"{f['weak']['base_rate']:.1%}" in weak and f"{f['weak']['transfer']['mean'] * 100:+.1f} points" in weak
    assert f"plain GRPO on {f['weak']['acc70_by_30']['none']} (" in weak
    assert "agrees" in strong and f"{f['strong']['transfer']['mean'] * 100:+.1f} points" in strong
