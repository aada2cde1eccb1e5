"""`RenderWorker`, the Ray Data actor: the model loaded once, then per clip generate, encode, upload, row.

A callable class for `Dataset.map_batches`: `__init__` loads the model once per actor, `__call__` renders
the clips of a batch (column "clip": `ClipSpec.to_bytes`) and returns their metrics rows. It knows nothing of
Ray itself, so tests call it in-process too.

Overlap. The driver runs the actor with two concurrent calls. A call holds `_device_lock` only while its
clip generates; frames stream chunk by chunk into the ffmpeg encoder and the quality meter (each in a
thread of its own) as they come. It then releases the lock and finalises (waits for both, uploads the
video and its thumbnails, writes the per-second rows and the metrics row) while the other call, already
queued on the lock, generates the next clip. The device never waits for encode or upload, and at most
one clip is on the device at a time.

Failures. Whatever goes wrong with one clip (encoder failure, upload failure, the clip's deadline)
becomes a `status='failed'` row, written to the metrics table like any other, never an exception: Ray
Data ends the whole dataset on one. A clip that breaks the device ends the process instead, so that Ray
restarts the actor (`faults.py`). Ray's retries are at-least-once, so everything a clip writes goes to
a deterministic key.
"""

from __future__ import annotations

import atexit
import logging
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from pipeline.encode import VideoEncoder
from pipeline.metrics import rows_to_table, video_key, write_clip_metrics
from pipeline.quality import QualityMeter
from pipeline.spec.clip import ClipSpec
from pipeline.spec.model import get_preset
from pipeline.storage import open_target
from pipeline.storage.fetch import model_folder
from pipeline.worker.chaos import ChaosPlan
from pipeline.worker.claims import ClipClaims
from pipeline.worker.config import WorkerConfig
from pipeline.worker.faults import (
    ClipTimeoutError,
    DeviceFaultError,
    FaultRecord,
    HangWatchdog,
    exit_for_restart,
    is_fatal_device_error,
    read_fault_record,
    write_fault_record,
)
from pipeline.worker.quality_outputs import store_quality_outputs
from pipeline.worker.rows import (
    MAX_ERROR_CHARS,
    failure_columns,
    generation_columns,
    last_resort_row,
    now,
    prompt_columns,
    quality_columns,
    skipped_columns,
    started_row,
    switch_frames,
    telemetry_json,
    video_columns,
)
from pipeline.worker.scratch import make_scratch_dir

if TYPE_CHECKING:
    from pipeline.generate import ClipStats, ClipStream

logger = logging.getLogger(__name__)

PROMPT_PREVIEW_CHARS = 80  # of a prompt, in the warning that it was truncated


class RenderWorker:
    """Renders clips with one model on one device."""

    def __init__(self, config: WorkerConfig):
        # The model stack (torch) is imported here, in the actor's own process: the driver names this
        # class without ever loading torch.
        from pipeline.generate import ClipGenerator
        from pipeline.model.bundle import ModelBundle

        _configure_logging(config.log_level)
        start = time.perf_counter()
        self.config = config
        self.preset = get_preset(config.model)
        self.target = open_target(config.out, config.s3)
        self.claims = ClipClaims(self.target, config.run_id, config.planned_at, config.force)
        self.chaos = ChaosPlan.from_environment()  # faults for drills and soak tests; none unless asked
        self.bundle = ModelBundle.for_device(self.preset, _weights_folder(config), seed=config.weights_seed)
        self.generator = ClipGenerator(self.bundle)
        self.tmp = make_scratch_dir(config.tmp_dir)
        atexit.register(shutil.rmtree, self.tmp, ignore_errors=True)  # Ray ends a finished actor's process
        self.node = socket.gethostname()
        self._device_lock = threading.Lock()  # one clip generates at a time; others finalise meanwhile
        self._current: tuple[str, FaultRecord] | None = None  # clip on the device, for the fault handler
        self._watchdog = HangWatchdog(config.hang_timeout_s, self._on_hang)
        self._load_s: float | None = time.perf_counter() - start  # charged to the first clip
        logger.info(
            "render worker ready in %.1f s: model %s on %s (%s), writing to %s",
            self._load_s,
            config.model,
            self.bundle.device_name or "CPU",
            self.bundle.dtype,
            self.target.uri,
        )

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        """Render each clip of the batch; one metrics row per clip, whatever happened to it.

        Returns a pyarrow Table with METRICS_SCHEMA rather than numpy columns: numpy has no nullable
        integers or time-zone-aware timestamps, so an ok row and a failed row would get different types.
        """
        return rows_to_table([self.render_safely(data) for data in batch["clip"]])

    def render_safely(self, data: bytes) -> dict[str, Any]:
        """`render` of one `ClipSpec.to_bytes`, except that nothing raises: a clip whose row cannot be
        built or stored (a value the schema cannot hold, a broken record) gets a failed row that can, so
        the rest of the run goes on."""
        clip: object = data
        try:
            clip = ClipSpec.from_bytes(data)
            row = self.render(clip)
            rows_to_table([row])  # fits the schema
            return row
        except Exception as exc:
            logger.error(
                "clip %s: its metrics row could not be built: %s", getattr(clip, "clip_id", "?"), exc
            )
            row = last_resort_row(clip, self.config.run_id, self.config.model, self.preset, self.node, exc)
            return self._record(row)

    def close(self) -> None:
        """Stop the watchdog and remove the scratch folder (Ray simply ends the process instead)."""
        self._watchdog.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- one clip -------------------------------------------------------------------------------

    def render(self, clip: ClipSpec) -> dict[str, Any]:
        """Render, encode, upload and record one clip; returns its metrics row (never raises)."""
        config = self.config
        row = started_row(
            clip,
            config.run_id,
            config.model,
            self.bundle.weights_sha256,
            self.preset,
            self.node,
            self.bundle.device_name,
        )
        local = self.tmp / f"{clip.clip_id}.mp4"
        encoder: VideoEncoder | None = None
        quality: QualityMeter | None = None
        stream: ClipStream | None = None
        started: FaultRecord | None = None  # set once this attempt is counted
        claimed = False  # set once this run holds the clip's claim
        start = time.perf_counter()
        try:
            record = read_fault_record(self.target, config.run_id, clip.clip_id)
            row["attempt"] = record.attempts
            self._refuse_if_it_broke_the_device(clip, record)
            # 1. Generate under the device lock; frames go to the encoder chunk by chunk.
            with self._device_lock:
                # Claimed only now: a claim waiting for the lock would not be refreshed.
                if (holder := self.claims.acquire(clip.clip_id)) is not None:
                    return {**row, **skipped_columns(holder)}  # not recorded: another run owns the clip
                claimed = True
                start = time.perf_counter()
                row["started_at"] = now()
                started = record.next_attempt()
                write_fault_record(self.target, config.run_id, clip.clip_id, started)
                row["attempt"] = started.attempts
                row["t_load_s"], self._load_s = self._load_s, None
                preset = self.preset
                encoder = VideoEncoder(
                    local, preset.width, preset.height, preset.fps, config.encoder, binary=config.ffmpeg
                )
                quality = QualityMeter(  # in its own thread; a storyboard's segments each measured too
                    preset.fps, row["num_frames"], switch_frames=switch_frames(row["segments"])
                )
                prompt = clip.storyboard or clip.prompt  # a storyboard switches prompts as it goes
                stream = self.generator.stream(prompt, clip.seed, clip.num_latent_frames, clip.cache)
                self._generate(clip, started, stream, encoder, quality)
                row.update(generation_columns(stream.stats, preset))
                _warn_if_truncated(clip, stream.stats)
            # 2. Finalise outside the lock, while the next clip generates.
            signals = quality.result()
            row.update(quality_columns(signals))
            self.claims.refresh(clip.clip_id)
            encode_start = time.perf_counter()
            video = encoder.close(timeout_s=config.encode_timeout_s)
            upload_start = time.perf_counter()
            self.chaos.point("upload", clip.clip_id, started.attempts)
            stored = self.target.put_file(
                video.path,
                video_key(clip.clip_id),
                "video/mp4",
                {"clip-id": clip.clip_id, "run-id": config.run_id, "model": config.model},
                sha256=video.sha256,
            )
            row.update(video_columns(stored, upload_start - encode_start, time.perf_counter() - upload_start))
            row.update(
                store_quality_outputs(self.target, config.run_id, clip.clip_id, row["attempt"], signals)
            )
        except Exception as exc:
            if encoder is not None:
                encoder.abort()
            if started is not None and is_fatal_device_error(exc):
                exit_for_restart(
                    self.target, config.run_id, clip.clip_id, started, f"{type(exc).__name__}: {exc}"
                )
            logger.warning("clip %s failed: %s: %s", clip.clip_id, type(exc).__name__, exc)
            row.update(failure_columns(exc))
            if stream is not None and row["cache_telemetry"] is None:
                row["cache_telemetry"] = telemetry_json(stream.stats.cache_telemetry)
                row.update(prompt_columns(stream.stats))
        finally:
            if quality is not None:
                quality.close()
            local.unlink(missing_ok=True)
        row["t_total_s"] = time.perf_counter() - start
        row["finished_at"] = now()
        row = self._record(row)
        if claimed:
            self._release(clip.clip_id, row["status"])
        return row

    def _release(self, clip_id: str, status: str) -> None:
        """Mark the clip's claim with its outcome; a store that refuses leaves the claim to expire."""
        try:
            self.claims.release(clip_id, status)
        except Exception as exc:
            logger.warning("clip %s: its claim could not be marked %s (it expires): %s", clip_id, status, exc)

    def _refuse_if_it_broke_the_device(self, clip: ClipSpec, record: FaultRecord) -> None:
        """DeviceFaultError if the clip has taken the device down too often in this run."""
        config = self.config
        if record.device_faults >= config.max_device_faults:
            raise DeviceFaultError(
                f"clip {clip.clip_id} took the device down {record.device_faults} time(s) in run "
                f"{config.run_id} (last: {record.last_fault}); max_device_faults="
                f"{config.max_device_faults}, so it is not tried again in this run. Check the "
                "GPU (nvidia-smi, Xid errors in dmesg); a new run tries the clip again"
            )

    def _generate(
        self,
        clip: ClipSpec,
        started: FaultRecord,
        stream: ClipStream,
        encoder: VideoEncoder,
        quality: QualityMeter,
    ) -> None:
        """Stream the clip's chunks into the encoder, checking the deadline between chunks."""
        num_chunks = clip.num_latent_frames // self.preset.chunk_frames
        timeout_s = self.config.clip_timeout_s
        deadline = time.monotonic() + timeout_s
        self._current = (clip.clip_id, started)
        self._watchdog.watch(clip.clip_id)
        try:
            for done, frames in enumerate(stream, start=1):
                self._watchdog.beat()
                self.chaos.point("chunk", clip.clip_id, started.attempts, chunk=done)
                self.claims.refresh(clip.clip_id)
                encoder.write(frames)
                quality.update(frames)
                if done < num_chunks and time.monotonic() > deadline:
                    raise ClipTimeoutError(
                        f"clip {clip.clip_id} ran past its deadline: {done} of {num_chunks} chunks in "
                        f"{timeout_s + time.monotonic() - deadline:.1f} s, over "
                        f"clip_timeout_s={timeout_s:g}; raise --clip-timeout or render "
                        f"fewer than {clip.num_latent_frames} latent frames"
                    )
        finally:
            self._watchdog.clear()
            self._current = None
            stream.close()  # stop the generator where it is

    def _record(self, row: dict[str, Any]) -> dict[str, Any]:
        """Write the row to the metrics table; a row that cannot be written makes the clip failed."""
        try:
            write_clip_metrics(self.target, row)
        except Exception as exc:
            logger.error("metrics row for clip %s could not be written: %s", row["clip_id"], exc)
            was = "the clip rendered" if row["status"] == "ok" else f"the clip failed ({row['error_type']})"
            row.update(
                status="failed",
                error_type=type(exc).__name__,
                error=f"{was}, but its metrics row could not be written: {exc}"[:MAX_ERROR_CHARS],
            )
        return row

    def _on_hang(self, clip_id: str, silent_s: float) -> None:
        current = self._current
        record = current[1] if current is not None and current[0] == clip_id else None
        reason = f"no frames for {silent_s:.0f} s (hang_timeout_s={self.config.hang_timeout_s:g})"
        exit_for_restart(self.target, self.config.run_id, clip_id, record, f"{reason}; device presumed hung")


def _warn_if_truncated(clip: ClipSpec, stats: ClipStats) -> None:
    if stats.truncated:
        assert stats.prompt_tokens is not None
        logger.warning(
            "clip %s (line %d): its prompt is %d tokens, over the text encoder's %d: the last %d were "
            "dropped (metrics: truncated, prompt_tokens); it starts %r",
            clip.clip_id,
            clip.line,
            stats.prompt_tokens,
            stats.text_len,
            stats.prompt_tokens - stats.text_len,
            clip.prompt[:PROMPT_PREVIEW_CHARS],
        )


def _weights_folder(config: WorkerConfig) -> Path | None:
    """The local weights folder (an s3:// one is fetched once per node), or None for random weights."""
    preset = get_preset(config.model)
    if not preset.needs_weights or config.random_weights:
        return None
    if config.model_dir is None:
        raise ValueError(f"model {config.model!r} needs weights; pass --model-dir (a folder or s3:// URI)")
    return model_folder(config.model_dir, config.s3)


def _configure_logging(level: str) -> None:
    """Actors start with an unconfigured root logger; give the pipeline's loggers a handler once."""
    pipeline_logger = logging.getLogger("pipeline")
    pipeline_logger.setLevel(level)
    if not logging.getLogger().handlers and not pipeline_logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        pipeline_logger.addHandler(handler)
