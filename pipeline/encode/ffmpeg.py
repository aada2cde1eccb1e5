"""The ffmpeg binary and what we ask of it: finding it, the H.264 command line, reading a file back.

ffmpeg-python builds the command line; the binary comes from $FFMPEG_BINARY, the imageio-ffmpeg wheel
or PATH. The wheel ships no ffprobe, so a written file is read back with ffmpeg alone: the frame count
by demuxing the stream's packets into the null muxer (one packet per frame; decoding them all costs
1-2 s per minute of noisy 832x480 video, copying them about 0.05 s), the duration from its header.
Settings and the ffmpeg 9 colour-tag workaround: docs/ecosystem.md §4.2, §4.3.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import ffmpeg

logger = logging.getLogger(__name__)

STDERR_TAIL_LINES = 50  # ffmpeg stderr lines kept for error messages
READ_BACK_TIMEOUT_S = 120.0  # demuxing a 957-frame clip takes well under a second


# rgb24 -> yuv420p with the BT.709 matrix in TV range, and the same facts written into the stream.
# ffmpeg 9.0.2 drops -color_primaries/-color_trc output flags unless setparams is in the chain
# (docs/ecosystem.md §4.3, measured); this form also works with Debian's ffmpeg 5.1.
BT709_FILTER = (
    "scale=out_color_matrix=bt709:out_range=tv,format=yuv420p,"
    "setparams=color_primaries=bt709:color_trc=bt709:colorspace=bt709:range=tv"
)


@dataclass(frozen=True)
class EncoderSettings:
    codec: str = "libx264"  # any ffmpeg video encoder; crf/preset/profile below are libx264 options
    crf: int = 18  # 18 is near-transparent; 23 roughly halves the bytes (docs/ecosystem.md §4.2)
    preset: str = "medium"  # x264 speed/size trade-off; medium: 34-47 fps at 832x480 on 2 cores
    gop: int = 32  # keyframe every 2 s at 16 fps, for seeking
    threads: int = 0  # 0 = ffmpeg decides

    def __post_init__(self) -> None:
        if not 0 <= self.crf <= 51:
            raise ValueError(f"crf={self.crf} is outside x264's 0..51; use 18 (default) to 23")
        if self.gop < 1:
            raise ValueError(f"gop={self.gop} must be >= 1 frame; use 32 for a keyframe every 2 s at 16 fps")
        if self.threads < 0:
            raise ValueError(f"threads={self.threads} must be >= 0; use 0 to let ffmpeg decide")
        if not self.codec or not self.preset:
            raise ValueError(f"codec={self.codec!r} and preset={self.preset!r} must be non-empty")


class EncodeError(RuntimeError):
    """ffmpeg failed or wrote a file that does not match what was sent.

    The message names the output, the command's essentials and the stderr tail; `command` and
    `stderr_tail` hold them separately. Keyword-only attributes keep the exception picklable (Ray).
    """

    def __init__(self, message: str, *, command: tuple[str, ...] = (), stderr_tail: str = ""):
        super().__init__(message)
        self.command = command
        self.stderr_tail = stderr_tail


def find_ffmpeg(explicit: str | None = None) -> str:
    """Path of the ffmpeg binary: explicit > $FFMPEG_BINARY > imageio-ffmpeg's bundled one > PATH.

    An explicit argument or environment variable that does not point at an executable is an error, not a
    reason to fall through to the next source.
    """
    if explicit is not None:
        return _checked_binary(explicit, "binary argument")
    from_env = os.environ.get("FFMPEG_BINARY")
    if from_env:
        return _checked_binary(from_env, "$FFMPEG_BINARY")
    try:
        import imageio_ffmpeg

        return _checked_binary(imageio_ffmpeg.get_ffmpeg_exe(), "imageio_ffmpeg.get_ffmpeg_exe()")
    except (ImportError, RuntimeError) as exc:  # RuntimeError: the wheel found no binary
        logger.debug("imageio-ffmpeg gave no ffmpeg binary (%s); trying PATH", exc)
    on_path = shutil.which("ffmpeg")
    if on_path is None:
        raise FileNotFoundError(
            "no ffmpeg binary found: $FFMPEG_BINARY is unset, imageio-ffmpeg gave none and 'ffmpeg' is not "
            "on PATH; pip install imageio-ffmpeg or set FFMPEG_BINARY=/path/to/ffmpeg"
        )
    return on_path


def _checked_binary(candidate: str, source: str) -> str:
    resolved = candidate if os.sep in candidate else shutil.which(candidate)  # bare names are looked up
    if resolved is None or not os.path.isfile(resolved):
        raise FileNotFoundError(
            f"ffmpeg binary {candidate!r} from {source} does not exist; "
            "point it at an ffmpeg executable or leave it unset to use the imageio-ffmpeg wheel"
        )
    if not os.access(resolved, os.X_OK):
        raise PermissionError(
            f"ffmpeg binary {candidate!r} from {source} is not executable; run chmod +x on it"
        )
    return resolved


def encode_command(
    binary: str, output: Path, width: int, height: int, fps: float, settings: EncoderSettings
) -> list[str]:
    """ffmpeg reading raw rgb24 frames from stdin and writing an H.264 mp4 to `output`."""
    s = settings
    video_in = ffmpeg.input(
        "pipe:0",
        format="rawvideo",
        pix_fmt="rgb24",
        s=f"{width}x{height}",
        r=str(Fraction(fps).limit_denominator(100_000)),  # 16 -> "16", 29.97... -> "30000/1001"
    )
    video_out = video_in.output(
        str(output),
        f="mp4",  # explicit: the partial file's name has no .mp4 extension
        vcodec=s.codec,
        crf=s.crf,
        preset=s.preset,
        g=s.gop,
        bf=2,
        threads=s.threads,
        vf=BT709_FILTER,
        pix_fmt="yuv420p",
        movflags="+faststart",  # moov before mdat, for progressive playback
        **{"profile:v": "high"},
    )
    args = video_out.global_args("-hide_banner", "-nostats", "-loglevel", "warning").overwrite_output()
    return list(args.compile(cmd=binary))


_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_PROGRESS_FRAME = re.compile(r"^frame=(\d+)$", re.MULTILINE)


@dataclass(frozen=True)
class ReadBack:
    """A written file as ffmpeg reads it back."""

    frames: int  # packets of the first video stream, one per frame: a truncated file shows fewer
    duration_s: float  # container duration from the header (printed to 10 ms)
    header: str  # what ffmpeg printed about the input: streams, codec, pixel format, colour tags


def read_back(path: Path, binary: str | None = None) -> ReadBack:
    """Demux the first video stream of `path` into the null muxer (no decoding) and count its packets."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cannot read back {str(path)!r}: no such file")
    command = list(
        ffmpeg.input(str(path))["v:0"]
        .output("-", f="null", c="copy")
        # -nostdin: ffmpeg otherwise takes keys from a terminal on stdin, and a worker started from one
        # (`python jobs/render.py` in a shell) runs in a background process group: SIGTTIN stops it.
        .global_args("-nostdin", "-hide_banner", "-nostats", "-progress", "pipe:1")
        .compile(cmd=find_ffmpeg(binary))
    )
    done = subprocess.run(
        command, stdin=subprocess.DEVNULL, capture_output=True, timeout=READ_BACK_TIMEOUT_S, check=False
    )
    header = done.stderr.decode("utf-8", "replace")
    frames = _PROGRESS_FRAME.findall(done.stdout.decode("utf-8", "replace"))
    duration = _DURATION.search(header)
    if done.returncode != 0 or not frames or duration is None:
        tail = "\n".join(header.splitlines()[-STDERR_TAIL_LINES:])
        raise EncodeError(
            f"ffmpeg could not read a video stream from {path} (exit code {done.returncode}). "
            f"stderr tail:\n{tail}",
            command=tuple(command),
            stderr_tail=tail,
        )
    hours, minutes, seconds = duration.groups()
    return ReadBack(int(frames[-1]), int(hours) * 3600 + int(minutes) * 60 + float(seconds), header)
