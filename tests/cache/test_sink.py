"""`sink`: the first frames stay for the whole clip at their old positions, the rest is a FIFO."""

from cache_driver import FIRST_STEP, GEOMETRY, SyntheticModel, build_cache, frame_positions, stream


def positions_per_chunk(name, num_frames, **params):
    model = SyntheticModel()
    cache = build_cache(name, GEOMETRY, model.rope, **params)
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
