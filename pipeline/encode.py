"""Video encoding: raw RGB frame chunks in, a verified H.264 mp4 out.

`VideoEncoder` streams (T, H, W, 3) uint8 chunks into an ffmpeg child process. `write` only validates the
chunk and hands it to a writer thread through a bounded queue, so the render loop never does encoding work
and memory stays constant in clip length. ffmpeg-python builds the command line; we launch it ourselves so
stdout goes to DEVNULL and stderr is drained continuously by a thread into a bounded tail (a full pipe can
never block ffmpeg). ffmpeg writes to a hidden partial file that is renamed to the requested path only
after the return code, frame count and duration have been checked.

`probe_video` reads the result back with the ffmpeg binary alone (the imageio-ffmpeg wheel has no
ffprobe): stream properties from the `ffmpeg -i` header, the frame count by demuxing the stream's packets
into the null muxer (one packet per frame; decoding them all costs 1-2 s per minute of noisy 832x480
video, copying them about 0.05 s), and faststart from the mp4's top-level box order.

Settings and the ffmpeg 9 colour-tag workaround: ../shared/docs/pipeline_ecosystem.md §3.3.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import os
import queue
import re
import shlex
import shutil
import struct
import subprocess
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import IO

import ffmpeg
import numpy as np

logger = logging.getLogger(__name__)

STDERR_TAIL_LINES = 50  # ffmpeg stderr lines kept for error messages
PROBE_TIMEOUT_S = 120.0  # demuxing a 957-frame clip takes well under a second
THREAD_JOIN_TIMEOUT_S = 10.0  # writer/stderr threads after ffmpeg has exited or been killed

# rgb24 -> yuv420p with the BT.709 matrix in TV range, and the same facts written into the stream.
# ffmpeg 9.0.2 drops -color_primaries/-color_trc output flags unless setparams is in the chain
# (pipeline_ecosystem.md §3.3, measured); this form also works with Debian's ffmpeg 5.1.
BT709_FILTER = (
    "scale=out_color_matrix=bt709:out_range=tv,format=yuv420p,"
    "setparams=color_primaries=bt709:color_trc=bt709:colorspace=bt709:range=tv"
)


@dataclass(frozen=True)
class EncoderSettings:
    codec: str = "libx264"  # any ffmpeg video encoder; crf/preset/profile below are libx264 options
    crf: int = 18  # 18 is near-transparent; 20-23 roughly halves the bytes (pipeline_ecosystem.md §3.3)
    preset: str = "medium"  # x264 speed/size trade-off; medium: 35-100 fps at 832x480 on 2 cores, by content
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


@dataclass(frozen=True)
class EncodedVideo:
    path: Path  # the finished file (renamed into place only after verification)
    frames: int  # frames written == frames decoded back
    duration_s: float  # container duration reported by ffmpeg
    bytes: int  # file size
    sha256: str  # hex digest of the file, computed once after writing
    encode_s: float  # wall seconds from open to verified close


@dataclass(frozen=True)
class VideoInfo:
    frames: int  # counted by decoding every frame
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


_END = None  # queue sentinel: no more chunks


class VideoEncoder:
    """Streams RGB frame chunks into ffmpeg and yields a verified mp4.

    Call from one thread: `write` chunks, then `close()` for the `EncodedVideo`, or `abort()`. The encoder
    keeps a reference to each written array until the writer thread has piped it, so do not modify an
    array after passing it to `write`. As a context manager, an exception inside the block aborts; leaving
    the block normally without `close()` aborts too and raises, since the clip would otherwise be lost
    silently.
    """

    def __init__(
        self,
        path: Path,
        width: int,
        height: int,
        fps: float,
        settings: EncoderSettings = EncoderSettings(),
        binary: str | None = None,
        max_queued_chunks: int = 8,
    ):
        path = Path(path)
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise ValueError(
                f"frame size {width}x{height} must be positive and even for yuv420p; "
                "crop or pad to even sizes such as 832x480"
            )
        if not fps > 0:
            raise ValueError(f"fps={fps} must be > 0; use 16 for Wan clips")
        if max_queued_chunks < 1:
            raise ValueError(f"max_queued_chunks={max_queued_chunks} must be >= 1; use 8")
        if not path.parent.is_dir():
            raise FileNotFoundError(
                f"output folder {str(path.parent)!r} for {path.name} does not exist; create it first"
            )
        self.path = path
        self.width = width
        self.height = height
        self.fps = fps
        self.settings = settings
        self.binary = find_ffmpeg(binary)
        self._partial = path.with_name(f".{path.name}.partial")  # never looks like a finished clip
        self._command = tuple(self._build_command())
        self._frames_sent = 0
        self._state = "open"  # open -> closed | failed | aborted
        self._failure: EncodeError | None = None
        self._result: EncodedVideo | None = None
        self._write_error: BaseException | None = None  # set by the writer thread
        self._shutdown_lock = threading.Lock()  # abort() may come from a watchdog thread
        self._shut_down = False
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._chunks: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=max_queued_chunks)

        self._started = time.perf_counter()
        logger.debug("starting %s", shlex.join(self._command))
        try:
            self._proc = subprocess.Popen(
                self._command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
        except OSError as exc:  # e.g. a script without a shebang, or a binary for another platform
            raise EncodeError(
                f"could not start ffmpeg {self.binary} for {path}: {exc}; check that it runs here",
                command=self._command,
            ) from exc
        assert self._proc.stdin is not None and self._proc.stderr is not None
        self._stderr_reader = threading.Thread(
            target=_drain_lines,
            args=(self._proc.stderr, self._stderr_tail),
            name=f"ffmpeg-stderr:{path.name}",
            daemon=True,
        )
        self._writer = threading.Thread(
            target=self._write_loop, args=(self._proc.stdin,), name=f"ffmpeg-writer:{path.name}", daemon=True
        )
        self._stderr_reader.start()
        self._writer.start()

    def _build_command(self) -> list[str]:
        s = self.settings
        video_in = ffmpeg.input(
            "pipe:0",
            format="rawvideo",
            pix_fmt="rgb24",
            s=f"{self.width}x{self.height}",
            r=str(Fraction(self.fps).limit_denominator(100_000)),  # 16 -> "16", 29.97... -> "30000/1001"
        )
        video_out = video_in.output(
            str(self._partial),
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
        return list(args.compile(cmd=self.binary))

    # -- writing --------------------------------------------------------------------------------------

    def write(self, frames: np.ndarray) -> None:
        """Queue one (T, H, W, 3) uint8 RGB chunk; blocks only while the queue is full (backpressure)."""
        self._require_open("write()")
        self._check_chunk(frames)
        if frames.shape[0] == 0:
            return
        self._raise_if_ffmpeg_failed()
        while True:
            try:
                self._chunks.put(frames, timeout=0.1)
                break
            except queue.Full:
                self._require_open("write()")  # abort() from another thread
                self._raise_if_ffmpeg_failed()  # ffmpeg died with a full queue: fail, never block forever
        self._frames_sent += frames.shape[0]

    def _check_chunk(self, frames: np.ndarray) -> None:
        expected = f"(T, {self.height}, {self.width}, 3) uint8 RGB"
        if not isinstance(frames, np.ndarray):
            raise TypeError(
                f"frames must be a numpy array {expected}, got {type(frames).__name__}; "
                "for a torch tensor pass tensor.cpu().numpy()"
            )
        if frames.dtype != np.uint8:
            raise ValueError(
                f"frames dtype is {frames.dtype}, expected uint8 {expected}; "
                "convert with ((x + 1) * 127.5).round().clip(0, 255).astype(np.uint8) for [-1, 1] floats"
            )
        if frames.ndim != 4 or frames.shape[1:] != (self.height, self.width, 3):
            raise ValueError(
                f"frames shape is {frames.shape}, expected {expected} for this "
                f"{self.width}x{self.height} encoder; frames are (T, H, W, C) with C last"
            )

    def _write_loop(self, stdin: IO[bytes]) -> None:
        """Writer thread: pipe chunks to ffmpeg until the sentinel; after a failure keep draining the queue
        so that nobody blocks on put()."""
        while True:
            chunk = self._chunks.get()
            if chunk is _END:
                break
            if self._write_error is not None:
                continue
            try:
                stdin.write(np.ascontiguousarray(chunk).data.cast("B"))  # copies only if strided
            except Exception as exc:  # BrokenPipeError when ffmpeg has exited; anything else is as fatal
                self._write_error = exc
        try:
            stdin.close()  # end of stream; flushes, so it can also see a broken pipe
        except OSError as exc:
            if self._write_error is None:
                self._write_error = exc

    def _ffmpeg_failed(self) -> bool:
        return self._write_error is not None or self._proc.poll() is not None

    def _raise_if_ffmpeg_failed(self) -> None:
        if self._ffmpeg_failed():
            reason = f"ffmpeg stopped reading frames ({self._describe_write_error()})"
            raise self._fail(reason)

    def _describe_write_error(self) -> str:
        if self._write_error is None:
            return "it exited early"
        return f"{type(self._write_error).__name__}: {self._write_error}"

    # -- finishing ------------------------------------------------------------------------------------

    def close(self, timeout_s: float = 120.0) -> EncodedVideo:
        """End of stream: drain the queue, wait for ffmpeg, verify and hash the file, rename it into place.

        Blocks for the queued encoding work; `timeout_s` bounds the wait for ffmpeg to finish.
        Calling it again returns the same result; after a failure it raises the same EncodeError.
        """
        if self._state == "closed":
            assert self._result is not None
            return self._result
        if self._state == "failed":
            assert self._failure is not None
            raise self._failure
        self._require_open("close()")
        if self._frames_sent == 0:
            self.abort()
            raise ValueError(f"close() on {self.path.name} with no frames written; write at least one chunk")

        deadline = time.monotonic() + timeout_s
        self._put_end(deadline)
        self._writer.join(max(0.0, deadline - time.monotonic()))
        try:
            returncode = self._proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise self._fail(
                f"ffmpeg did not finish within close(timeout_s={timeout_s}); raise the timeout"
            ) from None
        self._stderr_reader.join(THREAD_JOIN_TIMEOUT_S)
        if returncode != 0 or self._write_error is not None:
            raise self._fail(f"ffmpeg exited with code {returncode} ({self._describe_write_error()})")

        try:
            info = probe_video(self._partial, self.binary)
        except EncodeError as exc:
            raise self._fail(f"the written file could not be read back: {exc}") from None
        expected_s = self._frames_sent / self.fps
        # ffmpeg reports frames/fps exactly up to its 10 ms print precision (measured for 1..45 frames);
        # half a frame of slack still catches a wrong time base or a lost final frame duration.
        if info.frames != self._frames_sent or abs(info.duration_s - expected_s) > 0.5 / self.fps + 0.01:
            raise self._fail(
                f"the written file has {info.frames} frames / {info.duration_s:.3f} s, expected "
                f"{self._frames_sent} frames / {expected_s:.3f} s"
            )

        try:
            with self._partial.open("rb") as f:  # not storage.file_sha256: encoding needs no boto3
                digest = hashlib.file_digest(f, "sha256").hexdigest()
            size = self._partial.stat().st_size
            os.replace(self._partial, self.path)
        except OSError as exc:
            raise self._fail(f"could not hash or move the finished file into place: {exc}") from None
        elapsed = time.perf_counter() - self._started
        self._state = "closed"
        self._result = EncodedVideo(self.path, info.frames, info.duration_s, size, digest, elapsed)
        if self._stderr_tail:
            logger.warning("ffmpeg warnings for %s:\n%s", self.path.name, "\n".join(self._stderr_tail))
        logger.info(
            "encoded %s: %d frames in %.1f s (%.1f fps), %d bytes",
            self.path.name,
            info.frames,
            elapsed,
            info.frames / elapsed,
            size,
        )
        return self._result

    def abort(self) -> None:
        """Kill ffmpeg, stop the threads and delete the partial file. Idempotent; a no-op once closed."""
        if self._state != "open":
            return
        self._state = "aborted"  # also stops a write() blocked on a full queue in another thread
        self._shutdown()
        logger.info("aborted encoding %s after %d frames", self.path.name, self._frames_sent)

    def _put_end(self, deadline: float) -> None:
        while True:
            try:
                self._chunks.put(_END, timeout=0.1)
                return
            except queue.Full:  # after a failure the writer discards chunks, so the queue drains
                if time.monotonic() > deadline:
                    raise self._fail("ffmpeg stopped consuming frames before close() timed out") from None

    def _shutdown(self) -> None:
        """Kill ffmpeg if still running, join both threads, remove the partial file. Runs once."""
        with self._shutdown_lock:
            if not self._shut_down:
                self._shut_down = True
                self._shutdown_once()

    def _shutdown_once(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait(THREAD_JOIN_TIMEOUT_S)
        # With ffmpeg dead every pipe write fails fast, so the writer drains the queue and sees _END.
        try:
            self._chunks.put(_END, timeout=THREAD_JOIN_TIMEOUT_S)
        except queue.Full:
            logger.error("writer thread for %s did not drain its queue", self.path.name)
        self._writer.join(THREAD_JOIN_TIMEOUT_S)
        self._stderr_reader.join(THREAD_JOIN_TIMEOUT_S)
        self._partial.unlink(missing_ok=True)

    def _fail(self, reason: str) -> EncodeError:
        """Clean up after a failure and build the error (the stderr tail is complete once ffmpeg is gone)."""
        self._state = "failed"
        self._shutdown()
        tail = "\n".join(self._stderr_tail) or "(ffmpeg wrote nothing to stderr)"
        s = self.settings
        self._failure = EncodeError(
            f"encoding {self.path} failed after {self._frames_sent} frames: {reason}. "
            f"ffmpeg {self.binary} with {s.codec} crf={s.crf} preset={s.preset}, "
            f"{self.width}x{self.height} rgb24 at {self.fps} fps. stderr tail:\n{tail}",
            command=self._command,
            stderr_tail=tail,
        )
        return self._failure

    def _require_open(self, call: str) -> None:
        if self._state == "failed":
            assert self._failure is not None
            raise self._failure
        if self._state != "open":
            raise RuntimeError(f"{call} on the encoder for {self.path.name}, which is already {self._state}")

    def __enter__(self) -> VideoEncoder:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self.abort()
        elif self._state == "open":
            self.abort()
            raise RuntimeError(
                f"the with-block for {self.path.name} ended without close(); the partial file was deleted. "
                "Call close() inside the block to get the EncodedVideo"
            )


def _drain_lines(stream: IO[bytes], tail: collections.deque[str]) -> None:
    """stderr thread: read until EOF, keeping the last lines, so ffmpeg never blocks on a full pipe."""
    with stream:
        for raw in stream:
            tail.append(raw.decode("utf-8", "replace").rstrip())


# -- reading back -------------------------------------------------------------------------------------

_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_VIDEO_STREAM = re.compile(r"Stream #\d+:\d+\S*: Video: (.*)")
_CODEC_TAG = re.compile(r"/ 0x[0-9a-fA-F]+$")  # "(avc1 / 0x31637661)" is the fourcc, not a profile
_PROGRESS_FRAME = re.compile(r"^frame=(\d+)$", re.MULTILINE)
_FPS = re.compile(r"^(\d+(?:\.\d+)?)(k?) fps$")
# Items in "yuv420p(tv, bt709, progressive)" that are not the colour description.
_NOT_COLOUR = {"tv", "pc", "progressive", "top first", "bottom first"}
_NOT_COLOUR |= {"left", "center", "topleft", "top", "bottomleft", "bottom"}  # chroma location (-v verbose)


def probe_video(path: Path, binary: str | None = None) -> VideoInfo:
    """Properties of the first video stream, using only the ffmpeg binary (no ffprobe)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cannot probe {str(path)!r}: no such file")
    command = list(
        ffmpeg.input(str(path))["v:0"]
        .output("-", f="null", c="copy")  # count packets, no decoding: a truncated file shows fewer
        .global_args("-hide_banner", "-nostats", "-progress", "pipe:1")
        .compile(cmd=find_ffmpeg(binary))
    )
    done = subprocess.run(command, capture_output=True, timeout=PROBE_TIMEOUT_S, check=False)
    header = done.stderr.decode("utf-8", "replace")
    frames = _PROGRESS_FRAME.findall(done.stdout.decode("utf-8", "replace"))
    stream = _VIDEO_STREAM.search(header)
    duration = _DURATION.search(header)
    if done.returncode != 0 or not frames or stream is None or duration is None:
        tail = "\n".join(header.splitlines()[-STDERR_TAIL_LINES:])
        raise EncodeError(
            f"ffmpeg could not decode a video stream from {path} (exit code {done.returncode}). "
            f"stderr tail:\n{tail}",
            command=tuple(command),
            stderr_tail=tail,
        )
    hours, minutes, seconds = duration.groups()
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
        frames=int(frames[-1]),
        duration_s=int(hours) * 3600 + int(minutes) * 60 + float(seconds),
        codec=codec,
        profile=profile,
        pix_fmt=pix_fmt,
        width=width,
        height=height,
        fps=fps,
        color_primaries=primaries,
        color_transfer=transfer,
        color_space=space,
        moov_before_mdat=_moov_before_mdat(path),
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
