"""Streaming video encoding: raw RGB frame chunks in, a verified H.264 mp4 out.

`VideoEncoder` streams (T, H, W, 3) uint8 chunks into an ffmpeg child process. `write` only validates the
chunk and hands it to a writer thread through a bounded queue, so the render loop never does encoding work
and memory stays constant in clip length. We launch ffmpeg ourselves so stdout goes to DEVNULL and stderr
is drained continuously by a thread into a bounded tail (a full pipe can never block ffmpeg). ffmpeg
writes to a hidden partial file that is renamed to the requested path only after the return code, frame
count and duration have been checked.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import shlex
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

import numpy as np

from pipeline.digest import file_sha256
from pipeline.encode.ffmpeg import (
    STDERR_TAIL_LINES,
    EncodeError,
    EncoderSettings,
    encode_command,
    find_ffmpeg,
    read_back,
)

logger = logging.getLogger(__name__)

THREAD_JOIN_TIMEOUT_S = 10.0  # writer/stderr threads after ffmpeg has exited or been killed


@dataclass(frozen=True)
class EncodedVideo:
    path: Path  # the finished file (renamed into place only after verification)
    frames: int  # frames written == frames decoded back
    duration_s: float  # container duration reported by ffmpeg
    bytes: int  # file size
    sha256: str  # hex digest of the file, computed once after writing
    encode_s: float  # wall seconds from open to verified close


_END = None  # queue sentinel: no more chunks


class VideoEncoder:
    """Streams RGB frame chunks into ffmpeg and yields a verified mp4.

    Call from one thread: `write` chunks, then `close()` for the `EncodedVideo`, or `abort()`; `end_input()`
    before `close()` lets ffmpeg finish its buffered frames while the caller does other work. The encoder
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
        self._command = tuple(encode_command(self.binary, self._partial, width, height, fps, settings))
        self._frames_sent = 0
        self._state = "open"  # open -> closed | failed | aborted
        self._input_ended = False  # end_input() was called: the end marker is queued
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

    # -- writing --------------------------------------------------------------------------------------

    def write(self, frames: np.ndarray) -> None:
        """Queue one (T, H, W, 3) uint8 RGB chunk; blocks only while the queue is full (backpressure)."""
        self._require_open("write()")
        if self._input_ended:
            raise RuntimeError(f"write() on the encoder for {self.path.name} after end_input()")
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

    def end_input(self, timeout_s: float = 120.0) -> None:
        """No more frames: ffmpeg's input is closed once the queue is piped, so it encodes what it holds
        (its lookahead, about a second of work at the end of a clip) without waiting for `close()`.
        Blocks only while the queue is full; idempotent."""
        self._require_open("end_input()")
        if not self._input_ended:
            self._put_end(time.monotonic() + timeout_s)
            self._input_ended = True

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
        if not self._input_ended:
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
            written = read_back(self._partial, self.binary)
        except EncodeError as exc:
            raise self._fail(f"the written file could not be read back: {exc}") from None
        expected_s = self._frames_sent / self.fps
        # ffmpeg reports frames/fps exactly up to its 10 ms print precision (measured for 1..45 frames);
        # half a frame of slack still catches a wrong time base or a lost final frame duration.
        frames, duration_s = written.frames, written.duration_s
        if frames != self._frames_sent or abs(duration_s - expected_s) > 0.5 / self.fps + 0.01:
            raise self._fail(
                f"the written file has {frames} frames / {duration_s:.3f} s, expected "
                f"{self._frames_sent} frames / {expected_s:.3f} s"
            )

        try:
            digest = file_sha256(self._partial)
            size = self._partial.stat().st_size
            os.replace(self._partial, self.path)
        except OSError as exc:
            raise self._fail(f"could not hash or move the finished file into place: {exc}") from None
        elapsed = time.perf_counter() - self._started
        self._state = "closed"
        self._result = EncodedVideo(self.path, frames, duration_s, size, digest, elapsed)
        if self._stderr_tail:
            logger.warning("ffmpeg warnings for %s:\n%s", self.path.name, "\n".join(self._stderr_tail))
        logger.info(
            "encoded %s: %d frames in %.1f s (%.1f fps), %d bytes",
            self.path.name,
            frames,
            elapsed,
            frames / elapsed,
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
