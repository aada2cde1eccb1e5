"""pipeline/report/storyboards.py: a storyboard's segments with their own signals, and its switches."""

from __future__ import annotations

import pytest
from synthetic_run import storyboard_clips, write_run

from pipeline.report import storyboards
from pipeline.report.data import Row, load_runs
from pipeline.storage.local import LocalTarget


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> list[Row]:
    target = LocalTarget(tmp_path_factory.mktemp("run") / "out")
    write_run(target, storyboard_clips())
    return load_runs(target).rows


def test_a_storyboard_shows_each_segment_with_its_own_signals(rows: list[Row]) -> None:
    story, plain = rows  # sorted by clip id: fox-story, pan-river
    segments = storyboards.segments_of(story)

    assert [(s.index, s.first_frame, s.last_frame, s.first_second) for s in segments] == [
        (0, 0, 63, 0.0),
        (1, 64, 127, 4.0),
        (2, 128, 191, 8.0),
    ]
    assert [s.prompt for s in segments] == ["a fox trots through snow", "the fox stops", "northern lights"]
    assert [s.value("moving_fraction") for s in segments] == [1.0, 0.0, 1.0]  # the frozen one
    assert segments[0].value("switch_cut") is None
    assert storyboards.segments_of(plain) == []  # one prompt: nothing to show per segment


def test_switches_are_listed_largest_jump_first(rows: list[Row]) -> None:
    cut, smooth = storyboards.switches(rows)

    assert (cut.row["clip_id"], cut.segment.index, cut.cut) == ("fox-story", 2, True)
    assert (smooth.segment.index, smooth.cut) == (1, False)
    assert cut.ratio is not None and smooth.ratio is not None and cut.ratio > 3 > smooth.ratio


def test_a_storyboard_row_before_schema_v6_shows_its_segments_unmeasured(rows: list[Row]) -> None:
    older = rows[0] | {"segment_signals": None}

    segments = storyboards.segments_of(older)

    assert len(segments) == 3 and all(s.signals is None and s.value("motion_level") is None for s in segments)
    assert [s.ratio for s in storyboards.switches([older])] == [None, None]


def test_failed_clips_have_no_switches_to_show(rows: list[Row]) -> None:
    failed = rows[0] | {"status": "failed"}
    assert storyboards.switches([failed]) == []
