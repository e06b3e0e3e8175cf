"""Steps to a threshold on sampled rows and on the held-out grid, censoring, speed-up ratios, Holm."""

import math

import pytest

from vlm_grpo.core.statistics import holm, holm_family, km_median, rate_interval, seed_range, seed_ratio, speedup
from vlm_grpo.study.steps import grid_crossing, sampled_crossing, window_for


def test_window_holds_at_least_32_sampled_rows():
    assert window_for(32) == 1 and window_for(128) == 1
    assert window_for(8) == 4 and window_for(16) == 2 and window_for(12) == 3
    with pytest.raises(ValueError):
        window_for(0)


def test_sampled_crossing_pools_a_trailing_window():
    steps, values = [1, 2, 3, 4, 5], [0.0, 1.0, 0.75, 0.75, 1.0]
    assert sampled_crossing(steps, values, 0.9) == 2  # one step a reading
    # window 2: means 0.5, 0.875, 0.75, 0.875 -> never 0.9; level 0.85 first at step 3
    assert sampled_crossing(steps, values, 0.9, window=2) is None
    assert sampled_crossing(steps, values, 0.85, window=2) == 3
    assert sampled_crossing([1], [1.0], 0.5, window=2) is None  # too few rows ever


def test_grid_crossing_is_the_first_evaluation_at_the_level():
    assert grid_crossing([0, 10, 20, 30], [0.0, 0.5, 0.95, 0.8], 0.9) == 20
    assert grid_crossing([0, 10], [0.1, None], 0.9) is None


def test_km_median_censors_at_the_budget():
    assert km_median([20, 30, 40], 50) == 30.0
    assert km_median([20, None, 40], 50) == 40.0  # the censored seed counts as later than every reached one
    assert km_median([20, None, None], 50) is None  # fewer than half got there: beyond the budget
    assert km_median([20, 30, None, None], 50) is None  # survival stops at exactly 0.5
    assert km_median([20, 30, 40, None], 50) == 35.0
    assert km_median([], 50) is None
    with pytest.raises(ValueError):
        km_median([60], 50)


def test_seed_range_never_runs_past_the_budget():
    assert seed_range([20, 30, 40], 50) == (20, "40")
    assert seed_range([20, None, 40], 50) == (20, ">50")
    assert seed_range([None, None], 50) == (50, ">50")


def test_seed_ratio_marks_bounds():
    assert seed_ratio(40, 20, 50) == (2.0, "=")
    assert seed_ratio(None, 25, 50) == (2.0, ">=")  # the control took at least the budget
    assert seed_ratio(25, None, 50) == (0.5, "<=")
    assert seed_ratio(None, None, 50) == (None, "both censored")
    assert seed_ratio(0, 10, 50) == (None, "reached at step 0")


def test_speedup_is_a_geometric_mean_with_a_t_interval_on_logs():
    out = speedup([40, 30, 20], [20, 30, 20], 50)
    assert out["ratios"] == [2.0, 1.0, 1.0] and out["kind"] == "="
    assert out["ratio"] == pytest.approx(2 ** (1 / 3))
    logs = [math.log(2), 0.0, 0.0]
    mean = sum(logs) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / 2)
    half = 4.302653 * sd / math.sqrt(3)
    assert out["ci"] == pytest.approx([math.exp(mean - half), math.exp(mean + half)], rel=1e-5)
    # A censored seed makes the mean a bound, never an interval: a t-interval would mix bounds with ratios.
    bound = speedup([None, 40], [25, 20], 50)
    assert bound["kind"] == ">=" and bound["ratios"] == [2.0, 2.0] and bound["ratio"] == pytest.approx(2.0)
    assert bound["ci"] is None and bound["censored"] == 1
    assert speedup([None], [None], 50) == {
        "ratios": [None],
        "kinds": ["both censored"],
        "n": 0,
        "kind": "=",
        "censored": 0,
        "ratio": None,
        "ci": None,
    }
    mixed = speedup([None, 30], [20, None], 50)
    assert mixed["kind"] == "mixed" and mixed["ratio"] is None


def test_a_speedup_interval_stays_inside_what_the_grid_resolves():
    # A 10-step grid in 50 steps can tell ratios from 10/50 to 50/10 apart, no further.
    wide = speedup([10, 50, 10], [50, 10, 10], 50, grid=10)
    assert wide["kind"] == "=" and wide["ci"][0] >= 0.2 and wide["ci"][1] <= 5.0
    assert wide["ci"] == pytest.approx([0.2, 5.0])


def test_a_rate_interval_stays_in_range_and_alike_seeds_get_wilson():
    low = rate_interval([0.0, 0.02, 0.04], 200)  # the t-interval would reach below 0
    assert low["ci"][0] == 0.0 and low["ci"][1] > 0.04
    alike = rate_interval([0.035, 0.035, 0.035], 200)  # no spread: Wilson over the 600 pooled answers
    assert alike["ci_kind"] == "wilson" and alike["ci"][0] < 0.035 < alike["ci"][1]
    assert rate_interval([0.5], 0)["ci"] is None  # one seed, no samples known: no interval at all


def test_holm_step_down():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, None, 0.001]) == pytest.approx([0.5, None, 0.002])
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_a_holm_family_adjusts_every_test_given_together():
    tests = [{"p_t": 0.01}, None, {"p_t": 0.04}, {"p_t": None}]
    holm_family(tests)
    assert tests[0]["p_holm"] == pytest.approx(0.02) and tests[2]["p_holm"] == pytest.approx(0.04)
    assert tests[3]["p_holm"] is None
