"""The step's phase clock on a literal clock: nested phases count in their own name only."""

from vlm_grpo.training.metrics import PhaseClock


def literal_clock(*readings):
    it = iter(readings)
    return lambda: next(it)


def test_nested_phases_are_exclusive_and_repeated_ones_add_up():
    # sampling opens at 0.0, asks for encoding 1.0-1.5, closes at 3.0; sampling again 10.0-10.25.
    clock = PhaseClock(now=literal_clock(0.0, 1.0, 1.5, 3.0, 10.0, 10.25))
    with clock.phase("sampling"), clock.phase("encode"):
        pass
    with clock.phase("sampling"):
        pass
    assert clock.take() == {"time/sampling_s": 2.75, "time/encode_s": 0.5}
    assert clock.take() == {}  # a take starts again


def test_a_phase_inside_one_of_its_own_name_adds_its_time_once():
    # remedies 0-10 draw again inside it: sampling 2-5 inside remedies 1-6 (a redraw's own remedies).
    clock = PhaseClock(now=literal_clock(0.0, 1.0, 2.0, 5.0, 6.0, 10.0))
    with clock.phase("remedies"), clock.phase("remedies"), clock.phase("sampling"):
        pass
    assert clock.take() == {"time/remedies_s": 7.0, "time/sampling_s": 3.0}


def test_a_phase_that_raises_is_still_counted():
    clock = PhaseClock(now=literal_clock(2.0, 2.5))
    try:
        with clock.phase("update"):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert clock.take() == {"time/update_s": 0.5} and clock.inner == []
