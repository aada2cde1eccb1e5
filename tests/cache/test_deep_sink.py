"""`deep-sink`: the release's DS-only mode, its schedule checked against docs/cache_policies.md §5.3, §5.4."""

import pytest
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

from pipeline.cache.deep_sink import DeepSinkCache
from pipeline.spec.cache import CacheGeometry

ONE_LAYER = CacheGeometry(num_layers=1, num_heads=2, head_dim=16, tokens_per_frame=4, chunk_frames=3)


@pytest.mark.parametrize("sink_frames", [14, 10])
def test_deep_sink_rolls_73_times_in_240_frames_moving_the_sink_0_then_3_frames_per_chunk(sink_frames):
    """docs/cache_policies.md §5.3: from chunk 7 every chunk rolls; the sink sits at [f-21, f-21+S)
    (Δ 0, then +3) and the tail keeps its true positions [f-(18-S), f+3)."""
    model = SyntheticModel(ONE_LAYER)
    cache = build_cache("deep-sink", ONE_LAYER, model.rope, sink_frames=sink_frames)
    rows, shifts = {}, []

    def observe(chunk, step, layer, keys, values):
        rows[chunk, step] = frame_positions(keys, values, model.rope)

    stream(cache, model, 240, observe)
    previous = 0
    for chunk in range(80):
        f = 3 * chunk
        positions = rows[chunk, FIRST_STEP]
        sink = [positions[frame] for frame in range(min(sink_frames, f + 3))]
        start = f - 21 if chunk >= 7 else 0
        assert sink == list(range(start, start + len(sink)))
        tail = {frame: p for frame, p in positions.items() if frame >= sink_frames}
        first_tail = max(sink_frames, f - (18 - sink_frames))
        assert tail == {frame: frame for frame in range(first_tail, f + 3)}
        assert all(rows[chunk, step] == positions for step in (1, 2, 3, CONTEXT) if (chunk, step) in rows)
        if chunk >= 7:
            shifts.append(start - previous)
        previous = start
    assert shifts == [0] + [3] * 72
    assert cache.telemetry() == {
        "rolls": 73,
        "evicted_frames": 219,
        "sink_shifts": 72,
        "sink_start": 237 - 21,
    }


def test_deep_sink_keys_equal_rope_applied_at_the_sink_target():
    model = SyntheticModel(batch=2)
    checked = []

    def observe(chunk, step, layer, keys, values):
        if chunk == 11 and step in (FIRST_STEP, CONTEXT):
            for token, info in enumerate(key_info(values)):
                if info.frame < 14:
                    raw = model.raw("k", layer, info.frame, CONTEXT)
                    expected = model.rotate(raw, 33 - 21 + info.frame)[:, :, info.token]
                    torch.testing.assert_close(keys[:, :, token], expected, rtol=1e-12, atol=1e-12)
                    checked.append(token)

    stream(build_cache("deep-sink", GEOMETRY, model.rope), model, 39, observe)
    assert len(checked) == 2 * 2 * 14 * GEOMETRY.tokens_per_frame


def test_deep_sink_default_is_the_ds_only_script_sink_of_14_frames_in_a_21_frame_window():
    cache = DeepSinkCache(GEOMETRY, SyntheticModel().rope)
    assert (cache.sink_frames, cache.window_frames) == (14, 21)
