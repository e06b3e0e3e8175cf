"""The prompt stream with decoding workers (`data.num_workers`): the same rows in the same order, the same
skipped rows and resumable state as with none, the next batch decoded on worker threads while the step
runs, and the wait for it timed as the `decode` phase."""

import contextlib
import threading

import numpy as np
import pytest
from PIL import Image

from vlm_grpo.data import BadSample, PromptStream, Sample

BAD = {3, 11}  # rows whose decoding fails


class Rows:
    """Twelve one-image rows; rows in BAD fail to decode; records which thread read each row."""

    name = "rows"
    always_split = False

    def __init__(self):
        self.threads: dict[int, str] = {}

    def __len__(self):
        return 12

    def __getitem__(self, index):
        self.threads[index] = threading.current_thread().name
        if index in BAD:
            raise BadSample(f"rows#{index}: image cannot be decoded")
        return Sample(f"rows#{index}", Image.new("RGB", (4, 4), (index, 0, 0)), "q?", index, "rows")


def drawn(stream, sizes):
    return [[(s.id, s.load_images()[0].getpixel((0, 0))) for s in stream.next_batch(size)] for size in sizes]


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_workers_draw_the_same_rows_in_the_same_order(workers):
    sizes = [5, 3, 7, 5, 5, 9]  # crosses epoch boundaries, batches of changing size (dynamic sampling's redraws)
    plain = PromptStream(Rows(), np.arange(12), seed=7, log=lambda line: None)
    ahead = PromptStream(Rows(), np.arange(12), seed=7, log=lambda line: None, num_workers=workers)
    try:
        assert drawn(ahead, sizes) == drawn(plain, sizes)
        assert ahead.state_dict() == plain.state_dict() and ahead.skipped == len(BAD)
    finally:
        ahead.close()


def test_the_next_batch_is_decoded_on_workers_and_the_wait_timed():
    source = Rows()
    stream = PromptStream(source, np.arange(12), seed=7, log=lambda line: None, num_workers=2)
    phases = []

    @contextlib.contextmanager
    def timed(phase):
        phases.append(phase)
        yield

    try:
        first = stream.next_batch(4, timed)
        assert all(source.threads[int(s.id.split("#")[1])] == "MainThread" for s in first)
        assert phases and set(phases) == {"decode"}
        assert len(stream.prefetch.pending) == 4  # the next batch's rows, queued
        for future in stream.prefetch.pending.values():
            future.exception()  # waits: the rows are decoded while the loop does other work
        second = stream.next_batch(4, timed)
        decoded_ahead = [s for s in second if source.threads[int(s.id.split("#")[1])].startswith("decode")]
        assert len(decoded_ahead) >= 3  # a row found bad meanwhile is replaced by one decoded when reached
    finally:
        stream.close()
    assert stream.prefetch.pending == {} and stream.prefetch.pool is None


def test_a_resumed_stream_with_workers_continues_as_one_without():
    plain = PromptStream(Rows(), np.arange(12), seed=3, log=lambda line: None)
    ahead = PromptStream(Rows(), np.arange(12), seed=3, log=lambda line: None, num_workers=2)
    try:
        drawn(ahead, [6])
        resumed = PromptStream(Rows(), np.arange(12), seed=3, log=lambda line: None, num_workers=2)
        resumed.load_state_dict(ahead.state_dict())
        drawn(plain, [6])
        assert drawn(resumed, [5, 5]) == drawn(plain, [5, 5])
        resumed.close()
    finally:
        ahead.close()


def test_a_bad_row_stops_the_stream_where_it_is_reached_with_on_bad_sample_error():
    plain = PromptStream(Rows(), np.arange(12), seed=7, on_bad_sample="error")
    ahead = PromptStream(Rows(), np.arange(12), seed=7, on_bad_sample="error", num_workers=2)
    try:
        with pytest.raises(BadSample) as without:
            for _ in range(12):
                plain.next_batch(2)
        with pytest.raises(BadSample) as with_workers:
            for _ in range(12):
                ahead.next_batch(2)
        assert str(with_workers.value) == str(without.value) and ahead.state_dict() == plain.state_dict()
    finally:
        ahead.close()


def test_a_negative_number_of_workers_is_refused():
    from vlm_grpo.config import load_config
    from vlm_grpo.errors import ConfigError

    with pytest.raises(ConfigError, match=r"data.num_workers=-1 must be >= 0"):
        load_config(None, ["data.num_workers=-1"])
