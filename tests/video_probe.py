"""What the encoder wrote, for tests: its frames decoded back, the encoder's own read-back (frames by
demuxing, duration) plus the stream properties of ffmpeg's header and faststart from the mp4's top-level
box order."""

from __future__ import annotations

import os
import re
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.encode.ffmpeg import read_back


def decode_rgb(binary: str, path: Path, width: int, height: int, max_frames: int) -> np.ndarray:
    """Decode back to rgb24 through a rawvideo pipe; ffmpeg picks the YUV matrix from the stream tags."""
    command = [binary, "-v", "error", "-i", str(path), "-frames:v", str(max_frames)]
    command += ["-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    raw = subprocess.run(command, capture_output=True, check=True, timeout=30).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)  # (T, H, W, 3)


@dataclass(frozen=True)
class VideoInfo:
    frames: int  # counted by demuxing every packet
    duration_s: float  # container duration (ffmpeg prints it to 10 ms)
    codec: str  # e.g. "h264"
    profile: str  # e.g. "High"; "" when ffmpeg names none
    pix_fmt: str  # e.g. "yuv420p"
    width: int
    height: int
    fps: float  # stream frame rate as ffmpeg prints it (two decimals at most)
    color_primaries: str | None  # None when untagged
    color_transfer: str | None
    color_space: str | None  # the YUV matrix
    moov_before_mdat: bool  # faststart: the index precedes the media data


_VIDEO_STREAM = re.compile(r"Stream #\d+:\d+\S*: Video: (.*)")
_CODEC_TAG = re.compile(r"/ 0x[0-9a-fA-F]+$")  # "(avc1 / 0x31637661)" is the fourcc, not a profile
_FPS = re.compile(r"^(\d+(?:\.\d+)?)(k?) fps$")
# Items in "yuv420p(tv, bt709, progressive)" that are not the colour description.
_NOT_COLOUR = {"tv", "pc", "progressive", "top first", "bottom first"}
_NOT_COLOUR |= {"left", "center", "topleft", "top", "bottomleft", "bottom"}  # chroma location (-v verbose)


def probe_video(path: Path, binary: str | None = None) -> VideoInfo:
    """Properties of the first video stream: the encoder's own read-back, plus its header parsed."""
    written = read_back(path, binary)
    stream = _VIDEO_STREAM.search(written.header)
    assert stream is not None, written.header
    fields = _split_top_level(stream.group(1))  # codec, pix_fmt(...), WxH [SAR ..], ..., N fps, ...
    codec = fields[0].split()[0]
    profile = next((g for g in re.findall(r"\(([^()]*)\)", fields[0]) if not _CODEC_TAG.search(g)), "")
    pix_fmt, _, details = fields[1].partition("(")  # "yuv420p(tv, bt709, progressive)"
    primaries, transfer, space = _colour_tags(details.removesuffix(")"))
    size = next(f for f in fields if re.match(r"^\d+x\d+\b", f))
    width, height = (int(v) for v in size.split()[0].split("x"))
    fps = 0.0
    for field in fields:
        if match := _FPS.match(field):
            fps = float(match.group(1)) * (1000 if match.group(2) else 1)
    return VideoInfo(
        frames=written.frames,
        duration_s=written.duration_s,
        codec=codec,
        profile=profile,
        pix_fmt=pix_fmt,
        width=width,
        height=height,
        fps=fps,
        color_primaries=primaries,
        color_transfer=transfer,
        color_space=space,
        moov_before_mdat=_moov_before_mdat(Path(path)),
    )


def _split_top_level(text: str) -> list[str]:
    """Split on ", " outside parentheses/brackets: "h264 (High) (avc1 / 0x..), yuv420p(tv, bt709), ..."."""
    fields, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "," and depth == 0:
            fields.append(text[start:i].strip())
            start = i + 1
    fields.append(text[start:].strip())
    return fields


def _colour_tags(details: str) -> tuple[str | None, str | None, str | None]:
    """(primaries, transfer, matrix) from "tv, bt709, progressive" or "tv, bt709/bt470bg/smpte170m".

    ffmpeg prints one name when all three agree, else "matrix/primaries/transfer"; "unknown" is None.
    """
    for item in (i.strip() for i in _split_top_level(details)):
        if item in _NOT_COLOUR or item.endswith(("bpc", "(swapped)")) or not item:
            continue
        space, primaries, transfer = item.split("/") if item.count("/") == 2 else (item, item, item)
        return _known(primaries), _known(transfer), _known(space)
    return None, None, None


def _known(name: str) -> str | None:
    return None if name == "unknown" else name


def _moov_before_mdat(path: Path) -> bool:
    """Walk the mp4's top-level boxes (32-bit size + type, size 1 = 64-bit size follows, 0 = to EOF)."""
    kinds: list[bytes] = []
    with path.open("rb") as f:
        end = os.fstat(f.fileno()).st_size
        pos = 0
        while pos + 8 <= end and len(kinds) < 1000:
            f.seek(pos)
            header = f.read(16)
            size, kind = struct.unpack(">I4s", header[:8])
            if size == 1 and len(header) == 16:
                size = struct.unpack(">Q", header[8:])[0]
            elif size == 0:
                size = end - pos
            if size < 8:
                break  # not an mp4, or corrupt
            kinds.append(kind)
            pos += size
    return b"moov" in kinds and b"mdat" in kinds and kinds.index(b"moov") < kinds.index(b"mdat")
