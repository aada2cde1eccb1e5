"""pipeline/spec/storyboard.py: segments that cover a clip in whole chunks, and where the prompt switches."""

import re

import pytest

from pipeline.spec.storyboard import MAX_SEGMENTS, RECACHE_MODES, Segment, Storyboard, check_recache


def board(*lengths: int, recache: str = "all") -> Storyboard:
    starts = [sum(lengths[:i]) for i in range(len(lengths))]
    return Storyboard(
        tuple(Segment(f"prompt {i}", s, n) for i, (s, n) in enumerate(zip(starts, lengths, strict=True))),
        recache,
    )


def test_segments_that_cover_the_clip_in_whole_chunks_pass_and_say_where_the_prompt_switches() -> None:
    story = board(81, 78, 81)
    story.check(240, 3)
    assert story.switch_chunks(3) == {27: 1, 53: 2}
    assert story.prompts == ["prompt 0", "prompt 1", "prompt 2"]
    assert [s.end_frame for s in story.segments] == [81, 159, 240]


@pytest.mark.parametrize(
    ("story", "frames", "message"),
    [
        (board(6, 6), 15, "the segments cover 12 latent frames, the clip has 15"),
        (board(6, 4), 10, "segment 1 is 4 latent frames; it must be a positive multiple of chunk_frames=3"),
        (
            Storyboard((Segment("a", 0, 6), Segment("b", 9, 6))),
            15,
            "segment 1 starts at latent frame 9, expected 6 (segments follow each other without gaps)",
        ),
        (board(*[3] * (MAX_SEGMENTS + 1)), 3 * (MAX_SEGMENTS + 1), f"at most {MAX_SEGMENTS} segments"),
        (
            board(3, 3, recache="some"),
            6,
            'recache "some" is not a recache mode; choose one of none, window, all',
        ),
    ],
)
def test_segments_that_do_not_cover_the_clip_are_refused_with_what_is_wrong(
    story: Storyboard, frames: int, message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        story.check(frames, 3)


def test_recache_modes_are_checked_by_name() -> None:
    assert [check_recache(mode, "--recache") for mode in RECACHE_MODES] == ["none", "window", "all"]
    with pytest.raises(ValueError, match=r"--recache 1 is not a recache mode"):
        check_recache(1, "--recache")
