"""`sink`: the first frames stay for the whole clip at their old positions, the rest is a FIFO."""

import pytest
from cache_driver import FIRST_STEP, GEOMETRY, SyntheticModel, frame_positions, stream

from pipeline.cache import make_cache


def positions_per_chunk(name, num_frames, **params):
    model = SyntheticModel()
    cache = make_cache(name, GEOMETRY, model.rope, **params)
    rows = {}

    def observe(chunk, step, layer, keys, values):
        if step == FIRST_STEP and layer == 0:
            rows[chunk] = frame_positions(keys, values, model.rope)

    stream(cache, model, num_frames, observe)
    return rows, cache


def test_sink_policy_keeps_first_frames_at_their_positions_when_cache_is_full():
    rows, cache = positions_per_chunk("sink", 90)
    for chunk, positions in rows.items():
        end = 3 * chunk + 3
        tail = range(max(3, end - 18), end)  # the FIFO keeps window - sink = 18 frames, the chunk included
        assert positions == {frame: frame for frame in [0, 1, 2, *tail]}
    assert cache.telemetry() == {"rolls": 23, "evicted_frames": 69, "sink_shifts": 0, "sink_start": 0}


def test_sink_size_and_window_are_parameters():
    rows, _ = positions_per_chunk("sink", 45, sink_frames=5, window_frames=12)
    assert rows[14] == {frame: frame for frame in [0, 1, 2, 3, 4, *range(38, 45)]}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"sink_frames": 19},
            "sink_frames=19 is out of range: valid is 1..18 (window_frames=21 less one chunk of 3 frames; "
            "fifo has no sink)",
        ),
        (
            {"sink_frames": 0},
            "sink_frames=0 is out of range: valid is 1..18 (window_frames=21 less one chunk of 3 frames; "
            "fifo has no sink)",
        ),
        (
            {"window_frames": 3},
            "window_frames=3 is out of range: valid is >= 4 (one sink frame plus one chunk of 3 frames)",
        ),
    ],
)
def test_sink_that_leaves_no_room_for_a_chunk_is_rejected_with_the_valid_range(params, message):
    with pytest.raises(ValueError) as err:
        make_cache("sink", GEOMETRY, SyntheticModel().rope, **params)
    assert str(err.value) == message
