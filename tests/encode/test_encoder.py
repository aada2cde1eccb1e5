"""pipeline/encode/encoder.py against the real ffmpeg from the imageio-ffmpeg wheel (no ffprobe needed).

Failures are injected by handing the encoder a different binary (a shell script), never by patching.
"""

from __future__ import annotations

import hashlib
import pickle
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from synthetic_video import FPS, H, W, executable_script, moving_gradient, wait_until
from video_probe import VideoInfo, decode_rgb, probe_video

from pipeline.encode import EncodedVideo, EncodeError, EncoderSettings, VideoEncoder

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def test_chunked_encode_gives_h264_high_yuv420p_bt709_faststart_with_every_frame(
    tmp_path: Path, ffmpeg_bin: str
) -> None:
    out = tmp_path / "clip.mp4"
    frames = moving_gradient(45)
    # The generator's chunking: 9 frames from the first latent block, then 12 per block.
    chunks = [frames[:9], frames[9:21], frames[21:33], frames[33:]]
    # A strided view (as a permuted tensor's .numpy() gives) must encode the same pixels.
    chunks[2] = np.ascontiguousarray(chunks[2].transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
    assert not chunks[2].flags.c_contiguous

    with VideoEncoder(out, W, H, FPS, binary=ffmpeg_bin) as encoder:
        for chunk in chunks:
            encoder.write(chunk)
        result = encoder.close()

    info = probe_video(out, ffmpeg_bin)
    assert info.duration_s == pytest.approx(45 / FPS, abs=0.01)  # ffmpeg prints durations to 10 ms
    assert info == VideoInfo(
        frames=45,
        duration_s=info.duration_s,
        codec="h264",
        profile="High",
        pix_fmt="yuv420p",
        width=W,
        height=H,
        fps=FPS,
        color_primaries="bt709",
        color_transfer="bt709",
        color_space="bt709",
        moov_before_mdat=True,
    )
    data = out.read_bytes()
    assert result == EncodedVideo(
        path=out,
        frames=45,
        duration_s=info.duration_s,
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        encode_s=result.encode_s,
    )
    assert 0 < result.encode_s < 30
    assert encoder.close() is result  # closing twice returns the same result
    assert list(tmp_path.iterdir()) == [out]  # the partial file was renamed, not copied

    # Every frame arrives in order: each decoded frame is closest to its own source frame.
    decoded = decode_rgb(ffmpeg_bin, out, W, H, max_frames=45).astype(np.int16)
    error = np.abs(decoded[:, None] - frames[None].astype(np.int16)).mean(axis=(2, 3, 4))  # (T_dec, T_src)
    assert error.argmin(axis=1).tolist() == list(range(45))
    assert error.diagonal().max() < 5  # measured 2-3 levels at CRF 18


def test_real_size_832x480_encodes_and_verifies(tmp_path: Path, ffmpeg_bin: str) -> None:
    out = tmp_path / "wan.mp4"
    frames = moving_gradient(33, 480, 832)
    with VideoEncoder(out, 832, 480, FPS, EncoderSettings(preset="ultrafast"), binary=ffmpeg_bin) as encoder:
        for start, stop in [(0, 9), (9, 21), (21, 33)]:
            encoder.write(frames[start:stop])
        result = encoder.close()

    info = probe_video(out, ffmpeg_bin)
    assert (info.width, info.height, info.frames, info.pix_fmt) == (832, 480, 33, "yuv420p")
    assert result.frames == 33
    assert result.duration_s == pytest.approx(33 / FPS, abs=0.01)


def test_flat_red_green_blue_survive_the_bt709_round_trip(tmp_path: Path, ffmpeg_bin: str) -> None:
    out = tmp_path / "bars.mp4"
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    bars = np.zeros((4, 96, 144, 3), np.uint8)
    for i, colour in enumerate(colours):
        bars[:, :, 48 * i : 48 * (i + 1)] = colour
    with VideoEncoder(out, 144, 96, FPS, binary=ffmpeg_bin) as encoder:
        encoder.write(bars)
        encoder.close()

    first = decode_rgb(ffmpeg_bin, out, 144, 96, max_frames=1)[0].astype(np.int16)
    for i, colour in enumerate(colours):
        inner = first[8:-8, 48 * i + 8 : 48 * (i + 1) - 8]  # away from chroma-subsampled edges
        # Measured: within 1 level. Decoding the same file with BT.601 instead is 12-23 levels off.
        assert np.abs(inner - np.array(colour)).max() <= 6, f"bar {colour} came back as {inner.mean((0, 1))}"


@pytest.fixture
def open_encoder(tmp_path: Path, ffmpeg_bin: str) -> Iterator[VideoEncoder]:
    encoder = VideoEncoder(tmp_path / "clip.mp4", W, H, FPS, binary=ffmpeg_bin)
    yield encoder
    encoder.abort()


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (
            np.zeros((2, H, W, 3), np.float32),
            "frames dtype is float32, expected uint8 (T, 48, 64, 3) uint8 RGB; convert with "
            "((x + 1) * 127.5).round().clip(0, 255).astype(np.uint8) for [-1, 1] floats",
        ),
        (
            np.zeros((H, W, 3), np.uint8),
            "frames shape is (48, 64, 3), expected (T, 48, 64, 3) uint8 RGB for this 64x48 encoder; "
            "frames are (T, H, W, C) with C last",
        ),
        (
            np.zeros((2, 3, H, W), np.uint8),
            "frames shape is (2, 3, 48, 64), expected (T, 48, 64, 3) uint8 RGB for this 64x48 encoder; "
            "frames are (T, H, W, C) with C last",
        ),
        (
            np.zeros((2, 480, 832, 3), np.uint8),
            "frames shape is (2, 480, 832, 3), expected (T, 48, 64, 3) uint8 RGB for this 64x48 encoder; "
            "frames are (T, H, W, C) with C last",
        ),
    ],
    ids=["float32", "missing-time-axis", "channels-first", "wrong-size"],
)
def test_write_rejects_bad_frames_with_a_clear_message(
    open_encoder: VideoEncoder, frames: np.ndarray, message: str
) -> None:
    with pytest.raises(ValueError) as caught:
        open_encoder.write(frames)
    assert str(caught.value) == message


def test_write_rejects_non_arrays(open_encoder: VideoEncoder) -> None:
    with pytest.raises(TypeError) as caught:
        open_encoder.write([[0, 0, 0]])  # type: ignore[arg-type]
    assert str(caught.value) == (
        "frames must be a numpy array (T, 48, 64, 3) uint8 RGB, got list; "
        "for a torch tensor pass tensor.cpu().numpy()"
    )


def test_odd_frame_size_and_bad_settings_are_rejected_before_ffmpeg_starts(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as caught:
        VideoEncoder(tmp_path / "clip.mp4", 65, 48, FPS)
    assert str(caught.value) == (
        "frame size 65x48 must be positive and even for yuv420p; crop or pad to even sizes such as 832x480"
    )
    with pytest.raises(ValueError) as caught:
        EncoderSettings(crf=60)
    assert str(caught.value) == "crf=60 is outside x264's 0..51; use 18 (default) to 23"
    with pytest.raises(FileNotFoundError) as missing:
        VideoEncoder(tmp_path / "missing" / "clip.mp4", W, H, FPS)
    assert str(missing.value) == (
        f"output folder {str(tmp_path / 'missing')!r} for clip.mp4 does not exist; create it first"
    )
    assert list(tmp_path.iterdir()) == []


def test_ffmpeg_dying_makes_write_raise_with_the_stderr_tail_instead_of_blocking(tmp_path: Path) -> None:
    fake = executable_script(tmp_path / "fake-ffmpeg", "echo 'fake-ffmpeg: cannot open encoder' >&2\nexit 1")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    baseline = threading.active_count()
    encoder = VideoEncoder(out_dir / "clip.mp4", W, H, FPS, binary=str(fake), max_queued_chunks=1)

    chunk = moving_gradient(12)
    with pytest.raises(EncodeError) as caught:
        for _ in range(1000):  # 1000 x 10 ms: far longer than the script takes to exit
            encoder.write(chunk)
            time.sleep(0.01)

    error = caught.value
    assert re.fullmatch(
        rf"encoding {re.escape(str(out_dir / 'clip.mp4'))} failed after \d+ frames: ffmpeg stopped reading "
        r"frames \((BrokenPipeError: \[Errno 32\] Broken pipe|it exited early)\)\. "
        rf"ffmpeg {re.escape(str(fake))} with libx264 crf=18 preset=medium, 64x48 rgb24 at 16\.0 fps\. "
        r"stderr tail:\nfake-ffmpeg: cannot open encoder",
        str(error),
    ), str(error)
    assert error.stderr_tail == "fake-ffmpeg: cannot open encoder"
    assert error.command[0] == str(fake)
    assert pickle.loads(pickle.dumps(error)).stderr_tail == error.stderr_tail  # crosses Ray boundaries
    with pytest.raises(EncodeError) as again:
        encoder.close()
    assert again.value is error
    encoder.abort()  # a no-op after the failure
    assert list(out_dir.iterdir()) == []
    assert threading.active_count() == baseline


def test_unknown_codec_fails_with_ffmpeg_own_message_and_leaves_nothing(
    tmp_path: Path, ffmpeg_bin: str
) -> None:
    baseline = threading.active_count()
    settings = EncoderSettings(codec="nonexistent_codec")
    encoder = VideoEncoder(tmp_path / "clip.mp4", W, H, FPS, settings, binary=ffmpeg_bin)
    with pytest.raises(EncodeError) as caught:
        encoder.write(moving_gradient(12))
        encoder.close()
    assert "Unknown encoder 'nonexistent_codec'" in caught.value.stderr_tail
    assert str(caught.value).startswith(f"encoding {tmp_path / 'clip.mp4'} failed after 12 frames: ")
    assert str(caught.value).endswith(f"stderr tail:\n{caught.value.stderr_tail}")
    assert list(tmp_path.iterdir()) == []
    assert threading.active_count() == baseline


def test_a_file_with_missing_frames_fails_verification_and_is_not_kept(
    tmp_path: Path, ffmpeg_bin: str
) -> None:
    # The real ffmpeg behind a wrapper that swaps in a filter keeping only 5 frames: exit code 0, short file.
    lossy = tmp_path / "lossy-ffmpeg"
    lossy.write_text(
        f"#!{sys.executable}\n"
        "import os, sys\n"
        f"real = {ffmpeg_bin!r}\n"
        "args = sys.argv[1:]\n"
        "if 'pipe:0' in args:  # the encode, not the read-back\n"
        "    output = next(i for i, arg in enumerate(args) if arg.endswith('.partial'))\n"
        "    args[output:output] = ['-vf', r'select=lt(n\\,5)']  # the last -vf wins\n"
        "os.execv(real, [real, *args])\n"
    )
    lossy.chmod(0o755)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    encoder = VideoEncoder(out_dir / "clip.mp4", W, H, FPS, binary=str(lossy))
    encoder.write(moving_gradient(12))
    with pytest.raises(EncodeError) as caught:
        encoder.close()
    assert str(caught.value).startswith(
        f"encoding {out_dir / 'clip.mp4'} failed after 12 frames: "
        "the written file has 5 frames / 0.310 s, expected 12 frames / 0.750 s. "
    )
    assert list(out_dir.iterdir()) == []


def test_abort_kills_ffmpeg_deletes_the_partial_file_and_is_idempotent(
    tmp_path: Path, ffmpeg_bin: str
) -> None:
    baseline = threading.active_count()
    out = tmp_path / "clip.mp4"
    encoder = VideoEncoder(out, W, H, FPS, binary=ffmpeg_bin)
    encoder.write(moving_gradient(12))
    wait_until(lambda: any(tmp_path.iterdir()))  # ffmpeg has opened its output
    assert not out.exists()  # an unfinished clip never sits at the final path

    encoder.abort()
    encoder.abort()
    assert list(tmp_path.iterdir()) == []
    assert threading.active_count() == baseline
    with pytest.raises(RuntimeError) as caught:
        encoder.write(moving_gradient(1))
    assert str(caught.value) == "write() on the encoder for clip.mp4, which is already aborted"


def test_abort_from_a_watchdog_thread_unblocks_a_write_stuck_on_a_hung_ffmpeg(tmp_path: Path) -> None:
    hung = executable_script(tmp_path / "hung-ffmpeg", "exec sleep 30")  # alive, never reads stdin
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    baseline = threading.active_count()
    encoder = VideoEncoder(out_dir / "clip.mp4", W, H, FPS, binary=str(hung), max_queued_chunks=1)
    watchdog = threading.Timer(0.3, encoder.abort)
    watchdog.start()
    started = time.monotonic()
    with pytest.raises(RuntimeError) as caught:
        for _ in range(10):  # each chunk (110 KB) is bigger than the pipe buffer (64 KB)
            encoder.write(moving_gradient(12))
    watchdog.join()
    assert str(caught.value) == "write() on the encoder for clip.mp4, which is already aborted"
    assert time.monotonic() - started < 5
    assert list(out_dir.iterdir()) == []
    assert threading.active_count() == baseline


def test_exception_inside_the_with_block_aborts(tmp_path: Path, ffmpeg_bin: str) -> None:
    baseline = threading.active_count()
    with (
        pytest.raises(KeyError, match="generator failed"),
        VideoEncoder(tmp_path / "clip.mp4", W, H, FPS, binary=ffmpeg_bin) as encoder,
    ):
        encoder.write(moving_gradient(12))
        raise KeyError("generator failed")
    assert list(tmp_path.iterdir()) == []
    assert threading.active_count() == baseline


def test_leaving_the_with_block_without_close_aborts_and_says_so(tmp_path: Path, ffmpeg_bin: str) -> None:
    with (
        pytest.raises(RuntimeError) as caught,
        VideoEncoder(tmp_path / "clip.mp4", W, H, FPS, binary=ffmpeg_bin) as e,
    ):
        e.write(moving_gradient(3))
    assert str(caught.value) == (
        "the with-block for clip.mp4 ended without close(); the partial file was deleted. "
        "Call close() inside the block to get the EncodedVideo"
    )
    assert list(tmp_path.iterdir()) == []


def test_end_input_lets_ffmpeg_finish_before_close_is_called(tmp_path: Path, ffmpeg_bin: str) -> None:
    """A group's clips end their input together, so each ffmpeg drains while the others are stored."""
    out = tmp_path / "clip.mp4"
    encoder = VideoEncoder(out, W, H, FPS, binary=ffmpeg_bin)
    encoder.write(moving_gradient(24))
    encoder.end_input()
    encoder.end_input()  # idempotent
    wait_until(lambda: encoder._proc.poll() is not None)  # ffmpeg saw the end of its input and exited
    with pytest.raises(RuntimeError) as caught:
        encoder.write(moving_gradient(1))
    assert str(caught.value) == "write() on the encoder for clip.mp4 after end_input()"
    result = encoder.close()
    assert result.frames == 24 and probe_video(out, ffmpeg_bin).frames == 24
