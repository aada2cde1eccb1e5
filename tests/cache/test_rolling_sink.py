"""`rolling-sink`: the first chunk, re-rotated each chunk to sit just before the oldest tail key."""

import torch
from cache_driver import (
    CONTEXT,
    FIRST_STEP,
    GEOMETRY,
    SyntheticModel,
    build_cache,
    frame_positions,
    key_info,
    stream,
)

from pipeline.cache.rolling_sink import RollingSinkCache


def test_rolling_sink_sits_immediately_before_the_oldest_non_sink_key():
    model = SyntheticModel()
    cache = build_cache("rolling-sink", GEOMETRY, model.rope)
    rows = {}

    def observe(chunk, step, layer, keys, values):
        rows[chunk, step, layer] = frame_positions(keys, values, model.rope)

    stream(cache, model, 75, observe)
    for (chunk, _, _), positions in rows.items():
        end = 3 * chunk + 3
        tail = [frame for frame in positions if frame >= 3]
        assert tail == list(range(max(3, end - 18), end))  # FIFO of 18 frames at their own positions
        assert all(positions[frame] == frame for frame in tail)
        p0 = min(tail, default=3)  # before any tail frame exists the sink is at [0, 3)
        assert [positions[frame] for frame in (0, 1, 2)] == [p0 - 3, p0 - 2, p0 - 1]
    assert cache.telemetry() == {"rolls": 18, "evicted_frames": 54, "sink_shifts": 18, "sink_start": 75 - 21}


def test_rolling_sink_keys_equal_rope_reapplied_at_the_new_position():
    """Rolling Forcing re-applies RoPE to raw sink keys; a phase shift of the rotated keys is the same."""
    model = SyntheticModel(batch=2)
    checked = []

    def observe(chunk, step, layer, keys, values):
        if chunk == 12 and step == CONTEXT:
            for token, info in enumerate(key_info(values)):
                if info.frame < 3:
                    expected = model.rotate(
                        model.raw("k", layer, info.frame, CONTEXT), info.frame + 36 + 3 - 21
                    )
                    torch.testing.assert_close(
                        keys[:, :, token], expected[:, :, info.token], rtol=1e-12, atol=1e-12
                    )
                    checked.append(token)

    stream(build_cache("rolling-sink", GEOMETRY, model.rope), model, 42, observe)
    assert len(checked) == 2 * 3 * GEOMETRY.tokens_per_frame


def test_rolling_sink_size_defaults_to_one_chunk_and_any_size_sits_before_the_tail():
    assert RollingSinkCache(GEOMETRY, SyntheticModel().rope).sink_frames == 3
    model = SyntheticModel()
    rows = {}

    def observe(chunk, step, layer, keys, values):
        if step == FIRST_STEP:
            rows[chunk] = frame_positions(keys, values, model.rope)

    stream(build_cache("rolling-sink", GEOMETRY, model.rope, sink_frames=6), model, 30, observe)
    assert rows[9] == {**{f: f + 9 for f in range(6)}, **{f: f for f in range(15, 30)}}  # tail 15 frames
