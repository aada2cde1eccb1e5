"""pipeline/spec/cache.py: every policy's parameters, their defaults and ranges, checked without torch."""

import pytest

from pipeline.spec.cache import (
    POLICY_PARAMS,
    WINDOW_FRAMES,
    DeepForcingParams,
    RollingSinkParams,
    SinkParams,
    policy_parameters,
    policy_params,
)


def test_every_policy_takes_these_parameters_with_these_defaults():
    assert sorted(POLICY_PARAMS) == ["deep-forcing", "deep-sink", "fifo", "rolling-sink", "sink"]
    assert policy_parameters("deep-forcing") == {
        "sink_frames": 10,
        "budget_frames": 16,
        "recent_frames": 4,
        "window_frames": 21,
        "max_reuse": 7,
        "layout": "reference",
    }
    assert policy_parameters("deep-sink") == {"sink_frames": 14, "window_frames": 21}
    assert policy_parameters("sink") == {"sink_frames": 3, "window_frames": 21}
    assert policy_parameters("rolling-sink") == {"sink_frames": None, "window_frames": 21}
    assert policy_parameters("fifo") == {"window_frames": 21}
    assert {policy_parameters(name)["window_frames"] for name in POLICY_PARAMS} == {WINDOW_FRAMES}


def test_policy_params_fill_in_the_defaults_and_check_the_rest():
    params = policy_params("deep-forcing", {"layout": "paper", "max_reuse": 0}, chunk_frames=3)
    assert params == DeepForcingParams(layout="paper", max_reuse=0)
    assert params.as_dict() == {**policy_parameters("deep-forcing"), "layout": "paper", "max_reuse": 0}


def test_rolling_sink_keeps_the_first_chunk_unless_told_otherwise():
    assert RollingSinkParams().sink_frames_for(chunk_frames=3) == 3
    assert RollingSinkParams(sink_frames=6).sink_frames_for(chunk_frames=3) == 6


@pytest.mark.parametrize(
    ("name", "values", "message"),
    [
        (
            "deep_forcing",
            {},
            'unknown cache policy "deep_forcing"; choose one of deep-forcing, deep-sink, fifo, '
            "rolling-sink, sink",
        ),
        (
            "deep-sink",
            {"budget_frames": 16},
            "cache policy 'deep-sink' has no parameter(s) ['budget_frames']; "
            "it takes ['sink_frames', 'window_frames']",
        ),
        (
            "deep-forcing",
            {"sink_frames": 10.0},
            "cache policy 'deep-forcing' parameter 'sink_frames' must be an integer (default 10), got 10.0",
        ),
        (
            "deep-forcing",
            {"layout": 1},
            "cache policy 'deep-forcing' parameter 'layout' must be a string (default 'reference'), got 1",
        ),
        (
            "rolling-sink",
            {"sink_frames": True},
            "cache policy 'rolling-sink' parameter 'sink_frames' must be an integer or null "
            "(default None), got true",
        ),
        (
            "deep-forcing",
            {"budget_frames": 5},
            "cache policy 'deep-forcing': budget_frames=5 is out of range: valid is 14..21 "
            "(from sink_frames + recent_frames = 14 to window_frames)",
        ),
        (
            "sink",
            {"sink_frames": -1},
            "cache policy 'sink': sink_frames=-1 is out of range: valid is 1..18 "
            "(window_frames=21 less one chunk of 3 frames; fifo has no sink)",
        ),
    ],
)
def test_policy_params_name_the_policy_the_parameter_and_what_is_valid(name, values, message):
    with pytest.raises(ValueError) as err:
        policy_params(name, values, chunk_frames=3)
    assert str(err.value) == message


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
        SinkParams(**params).check(chunk_frames=3)
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("params", "error", "message"),
    [
        (
            {"budget_frames": 13},
            ValueError,
            "budget_frames=13 is out of range: valid is 14..21 "
            "(from sink_frames + recent_frames = 14 to window_frames)",
        ),
        (
            {"budget_frames": 22},
            ValueError,
            "budget_frames=22 is out of range: valid is 14..21 "
            "(from sink_frames + recent_frames = 14 to window_frames)",
        ),
        (
            {"sink_frames": 19},
            ValueError,
            "sink_frames=19 is out of range: valid is 1..18 (window_frames=21 less one chunk of 3 frames)",
        ),
        (
            {"recent_frames": 2},
            ValueError,
            "recent_frames=2 is out of range: valid is 3..11 "
            "(the chunk of 3 frames up to window_frames - sink_frames)",
        ),
        (
            {"window_frames": 3},
            ValueError,
            "window_frames=3 is out of range: valid is >= 4 (one sink frame plus one chunk of 3 frames)",
        ),
        ({"max_reuse": -1}, ValueError, "max_reuse=-1 is out of range: valid is >= 0 (0 means no limit)"),
        ({"layout": "contiguous"}, ValueError, "layout='contiguous' is not one of ['reference', 'paper']"),
        ({"sink_frames": 10.0}, TypeError, "sink_frames=10.0 must be an int"),
    ],
)
def test_invalid_parameters_are_rejected_naming_the_value_and_the_valid_range(params, error, message):
    with pytest.raises(error) as err:
        DeepForcingParams(**params).check(chunk_frames=3)
    assert str(err.value) == message
