"""The quality meter: frame chunks in as they stream past, a clip's signals out at the end.

`ClipAnalysis` does the work in the calling thread: every frame feeds the flicker steps; every
`interval`-th frame (about 8 per second) is area-downsampled once and feeds flow, colour, sharpness and
the roll-back signatures. `QualityMeter` runs one in a thread of its own, so the render loop only hands
chunks over and the device never waits for the signals (OpenCV and numpy release the GIL while they
work). Memory stays small: a few numbers per frame, one signature per sampled frame, three thumbnails.

A storyboard's clip is told where its segments start (`switch_frames`). At the end each segment gets
the clip's signals again from the samples of its own frames (every track can be cut to a span of
frames and finished on a timeline of the span's length), so nothing is measured twice, streaming
costs nothing more, and a segment's definitions are a clip's.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from pipeline.quality.appearance import AppearanceTrack
from pipeline.quality.flicker import FlickerTrack
from pipeline.quality.frames import analysis_size, check_frames, gray, resize
from pipeline.quality.motion import FlowTrack
from pipeline.quality.repetition import RepetitionTrack
from pipeline.quality.results import ClipQuality, ClipReport, SecondQuality, SegmentQuality, SwitchQuality
from pipeline.quality.settings import QualitySettings
from pipeline.quality.thumbnails import ThumbnailTrack
from pipeline.quality.timeline import Timeline, optional

logger = logging.getLogger(__name__)

_END = None  # queue sentinel: no more chunks


class ClipAnalysis:
    """The signals of one clip, computed in the calling thread. `add` chunks in order, then `finish`."""

    def __init__(
        self,
        fps: float,
        num_frames: int | None = None,
        settings: QualitySettings = QualitySettings(),
        switch_frames: Sequence[int] = (),
    ):
        if not fps > 0:
            raise ValueError(f"fps={fps} must be > 0; Wan clips are 16 fps")
        if num_frames is not None and num_frames < 1:
            raise ValueError(f"num_frames={num_frames} must be >= 1, or None when the length is unknown")
        self.switch_frames = _checked_switches(switch_frames, num_frames)
        self.fps = fps
        self.settings = settings
        self.interval = max(1, round(fps / settings.flow_fps))  # every frame at 16 fps -> every 2nd
        self.frames_seen = 0
        self.frame_size: tuple[int, int] | None = None  # (H, W), and the analysis size, from the first chunk
        self.small_size: tuple[int, int] = (0, 0)
        self.cpu_s = 0.0
        self.flicker = FlickerTrack(settings)
        self.thumbnails = ThumbnailTrack(settings, num_frames)
        self.appearance = AppearanceTrack(settings)
        self.flow: FlowTrack | None = None  # these two need the frame size: made with the first chunk
        self.repetition: RepetitionTrack | None = None

    def add(self, frames: np.ndarray) -> None:
        """frames: (T, H, W, 3) uint8 RGB, the clip's next T frames."""
        started = time.thread_time()
        check_frames(frames)
        size = (frames.shape[1], frames.shape[2])
        if self.frame_size is None:
            self._start(size)
        elif size != self.frame_size:
            raise ValueError(
                f"frames are {size[1]}x{size[0]}, but this clip's first chunk was "
                f"{self.frame_size[1]}x{self.frame_size[0]}; a clip keeps one frame size"
            )
        assert self.flow is not None and self.repetition is not None
        self.flicker.add(frames)
        self.thumbnails.add(self.frames_seen, frames)
        height, width = self.small_size
        first = -self.frames_seen % self.interval  # first sampled frame of this chunk
        for offset in range(first, len(frames), self.interval):
            index = self.frames_seen + offset
            small = resize(frames[offset], height, width)
            small_gray = gray(small)
            self.appearance.add(index, small, gray(frames[offset]))
            self.flow.add(index, small_gray)
            self.repetition.add(index, small_gray)
        self.frames_seen += len(frames)
        self.cpu_s += time.thread_time() - started

    def _start(self, size: tuple[int, int]) -> None:
        self.frame_size = size
        self.small_size = analysis_size(*size, self.settings.analysis_short_side)
        self.flow = FlowTrack(self.settings, self.fps, self.interval, size, self.small_size)
        self.repetition = RepetitionTrack(self.settings, self.small_size)

    def finish(self) -> ClipReport | None:
        """The clip's report; None if no frame arrived."""
        if self.flow is None or self.repetition is None:
            return None
        started = time.thread_time()
        tracks = (self.flicker, self.flow, self.appearance, self.repetition)
        timeline = Timeline(self.fps, self.frames_seen, self.settings.window_s)
        clip, per_second = _signals(tracks, timeline)
        per_second["frames"] = timeline.per_second_count(np.arange(self.frames_seen))
        segments = self._segments(tracks, clip)
        thumbnails = self.thumbnails.finish()
        self.cpu_s += time.thread_time() - started
        return ClipReport(
            clip=clip,
            seconds=[_second(s, per_second) for s in range(timeline.num_seconds)],
            segments=segments,
            thumbnails=thumbnails,
            cpu_s=self.cpu_s,
        )

    def _segments(self, tracks: tuple[Track, ...], clip: ClipQuality) -> list[SegmentQuality]:
        """Each segment the clip reached: the clip's tracks cut to its frames, finished on a timeline
        of its own length (so its drift windows are 5 s, or its halves under 10 s), and its switch."""
        reached = [frame for frame in self.switch_frames if frame < self.frames_seen]
        if not reached:  # one prompt: the one segment is the clip
            return [SegmentQuality(0, self.frames_seen - 1, clip, None)]
        starts = [0, *reached]
        switches: list[SwitchQuality | None] = [None, *self.flicker.switches(reached, self.fps)]
        segments = []
        for first, end, switch in zip(starts, [*reached, self.frames_seen], switches, strict=True):
            timeline = Timeline(self.fps, end - first, self.settings.window_s)
            signals, _ = _signals(tuple(track.within(first, end) for track in tracks), timeline)
            segments.append(SegmentQuality(first, end - 1, signals, switch))
        return segments


class Track(Protocol):
    """One family of signals (flicker.py, motion.py, appearance.py, repetition.py)."""

    def within(self, first: int, end: int) -> Track: ...

    def finish(self, timeline: Timeline) -> tuple[dict[str, Any], dict[str, np.ndarray]]: ...


def _signals(tracks: tuple[Track, ...], timeline: Timeline) -> tuple[ClipQuality, dict[str, np.ndarray]]:
    """The tracks' clip signals and per-second columns over `timeline`."""
    clip: dict[str, Any] = {}
    per_second: dict[str, np.ndarray] = {}
    for track in tracks:
        columns, seconds = track.finish(timeline)
        clip.update(columns)
        per_second.update(seconds)
    return ClipQuality(**clip), per_second


def _checked_switches(switch_frames: Sequence[int], num_frames: int | None) -> tuple[int, ...]:
    frames = tuple(switch_frames)
    if any(not isinstance(f, int | np.integer) for f in frames) or any(
        later <= earlier for earlier, later in zip((0, *frames), frames, strict=False)
    ):
        raise ValueError(
            f"switch_frames={list(frames)} must rise from 1 (the first frame of each segment after the "
            "first, e.g. [321, 633] for three 20 s segments at 16 fps)"
        )
    if num_frames is not None and frames and frames[-1] >= num_frames:
        raise ValueError(
            f"switch_frames={list(frames)} must be under num_frames={num_frames}: every segment starts "
            "inside the clip"
        )
    return tuple(int(f) for f in frames)


def _second(second: int, columns: dict[str, np.ndarray]) -> SecondQuality:
    match = int(columns["best_match_second"][second])
    values = {
        name: optional(float(columns[name][second]))
        for name in (
            "flicker_mae",
            "motion_level",
            "moving_fraction",
            "saturation",
            "brightness",
            "colourfulness",
            "sharpness",
            "start_similarity",
            "best_match_similarity",
        )
    }
    return SecondQuality(
        second=second,
        frames=int(columns["frames"][second]),
        flicker_spikes=int(columns["flicker_spikes"][second]),
        best_match_second=None if match < 0 else match,
        **values,  # type: ignore[arg-type]
    )


class QualityMeter:
    """A `ClipAnalysis` in its own thread. From one thread: `update` chunks, then `result`; `close` always.

    A failure inside the analysis is logged and makes `result` return None: the video is still good,
    so it never fails the clip. Bad input (not a (T, H, W, 3) uint8 array) raises in `update`.
    """

    def __init__(
        self,
        fps: float,
        num_frames: int | None = None,
        settings: QualitySettings = QualitySettings(),
        switch_frames: Sequence[int] = (),
    ):
        self._analysis = ClipAnalysis(fps, num_frames, settings, switch_frames)
        self._chunks: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=settings.max_queued_chunks)
        self._stop = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="quality-meter", daemon=True)
        self._thread.start()

    def update(self, frames: np.ndarray) -> None:
        """Queue the clip's next (T, H, W, 3) uint8 chunk; blocks only while the analysis is behind."""
        check_frames(frames)
        if self._stop.is_set():
            raise RuntimeError("update() on a QualityMeter after result() or close()")
        self._put(frames)

    def result(self, timeout_s: float = 60.0) -> ClipReport | None:
        """Wait for the queued chunks (at most `timeout_s`) and return the clip's report.

        None if no frame arrived, the analysis failed (logged) or it did not finish in time.
        """
        self._put(_END)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            logger.error("quality analysis did not finish within %.0f s; the clip gets no signals", timeout_s)
            self.close()
            return None
        self._stop.set()
        if self._failure is not None:
            return None
        try:
            return self._analysis.finish()
        except Exception:
            logger.exception("quality signals could not be computed; the clip gets none")
            return None

    def close(self) -> None:
        """Stop the thread without waiting for queued chunks (idempotent; for a clip that failed)."""
        self._stop.set()
        with contextlib.suppress(queue.Full):  # a full queue: the busy thread sees the flag next
            self._chunks.put_nowait(_END)  # wakes an idle thread

    def _put(self, item: np.ndarray | None) -> None:
        while self._thread.is_alive():  # a dead thread never drains the queue: never block on it
            try:
                self._chunks.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        while True:
            chunk = self._chunks.get()
            if chunk is _END or self._stop.is_set():
                return
            if self._failure is not None:
                continue  # keep draining so update() never blocks
            try:
                self._analysis.add(chunk)
            except Exception as exc:
                logger.exception("quality analysis failed at frame %d", self._analysis.frames_seen)
                self._failure = exc
