"""pipeline/encode/ffmpeg.py: finding the binary and reading a written file back."""

from __future__ import annotations

from pathlib import Path

import imageio_ffmpeg
import pytest
from synthetic_video import FPS, H, W, executable_script, moving_gradient

from pipeline.encode import EncodeError, VideoEncoder, find_ffmpeg
from pipeline.encode.ffmpeg import read_back

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def test_find_ffmpeg_prefers_explicit_then_env_then_the_wheel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from_env = executable_script(tmp_path / "env-ffmpeg", "exit 0")
    explicit = executable_script(tmp_path / "explicit-ffmpeg", "exit 0")
    monkeypatch.delenv("FFMPEG_BINARY", raising=False)
    assert find_ffmpeg() == imageio_ffmpeg.get_ffmpeg_exe()
    monkeypatch.setenv("FFMPEG_BINARY", str(from_env))
    assert find_ffmpeg() == str(from_env)
    assert find_ffmpeg(str(explicit)) == str(explicit)


def test_find_ffmpeg_names_the_bad_path_and_where_it_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "no-such-ffmpeg"
    with pytest.raises(FileNotFoundError) as caught:
        find_ffmpeg(str(missing))
    assert str(caught.value) == (
        f"ffmpeg binary {str(missing)!r} from binary argument does not exist; "
        "point it at an ffmpeg executable or leave it unset to use the imageio-ffmpeg wheel"
    )

    monkeypatch.setenv("FFMPEG_BINARY", str(missing))
    with pytest.raises(FileNotFoundError) as caught:
        find_ffmpeg()
    assert str(caught.value) == (
        f"ffmpeg binary {str(missing)!r} from $FFMPEG_BINARY does not exist; "
        "point it at an ffmpeg executable or leave it unset to use the imageio-ffmpeg wheel"
    )

    not_executable = tmp_path / "ffmpeg.txt"
    not_executable.write_text("not a program")
    with pytest.raises(PermissionError) as denied:
        find_ffmpeg(str(not_executable))
    assert str(denied.value) == (
        f"ffmpeg binary {str(not_executable)!r} from binary argument is not executable; run chmod +x on it"
    )


def test_read_back_rejects_a_file_that_is_not_a_video(tmp_path: Path, ffmpeg_bin: str) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x00\x00\x08free" + b"not a video" * 10)
    with pytest.raises(EncodeError) as caught:
        read_back(junk, ffmpeg_bin)
    assert str(caught.value).startswith(f"ffmpeg could not read a video stream from {junk} (exit code ")


def test_read_back_counts_only_the_frames_a_truncated_file_still_holds(
    tmp_path: Path, ffmpeg_bin: str
) -> None:
    # read_back demuxes instead of decoding; a cut-off upload or disk-full write must still show.
    whole = tmp_path / "whole.mp4"
    with VideoEncoder(whole, W, H, FPS, binary=ffmpeg_bin) as encoder:
        encoder.write(moving_gradient(40))
        encoder.close()
    data = whole.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    assert read_back(whole, ffmpeg_bin).frames == 40
    assert 0 < read_back(cut, ffmpeg_bin).frames < 40
