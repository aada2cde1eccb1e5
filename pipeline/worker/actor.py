"""`RenderWorker`, the Ray Data actor: the model loaded once, then per clip generate, encode, upload, row.

A callable class for `Dataset.map_batches`: `__init__` loads the model once per actor, `__call__` renders
the clips of a batch (column "clip": `ClipSpec.to_bytes`) and returns their metrics rows. It knows nothing of
Ray itself, so tests call it in-process too.

Overlap. The driver runs the actor with two concurrent calls. A call hands its clips to the worker's one
device thread and waits while they generate; frames stream chunk by chunk into each clip's ffmpeg
encoder and quality meter (each in a thread of its own) as they come. It then finalises (waits for both,
uploads the video and its thumbnails, writes the per-second rows and the metrics row) while the other
call's clips, already queued on the device thread, generate. The device never waits for encode or
upload, and at most one group of clips is on the device at a time.

One thread for all device work, not a lock around whichever thread Ray calls in: PyTorch keeps cuDNN's
benchmark results per thread (a `thread_local` cache in ATen's cuDNN convolutions), so a clip
generated on a thread that never generated before times the VAE's conv algorithms again, about 17 s on
an H200 (benchmarks/README.md, throughput).

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
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from pipeline.encode import VideoEncoder
from pipeline.metrics import read_clip_metrics, rows_to_table, video_key, write_clip_metrics
from pipeline.quality import QualityMeter
from pipeline.spec.clip import ClipSpec
from pipeline.spec.model import get_preset
from pipeline.storage import open_target
from pipeline.storage.fetch import model_folder
from pipeline.worker.chaos import ChaosPlan
from pipeline.worker.claims import ClipClaims
from pipeline.worker.compiled import CompiledKernelShare
from pipeline.worker.config import MAX_AUTO_CLIPS_PER_FORWARD, WorkerConfig
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
from pipeline.worker.groups import plan_groups
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
    from pipeline.generate import ClipRequest, ClipStats

logger = logging.getLogger(__name__)

PROMPT_PREVIEW_CHARS = 80  # of a prompt, in the warning that it was truncated


class RenderWorker:
    """Renders clips with one model on one device."""

    def __init__(self, config: WorkerConfig):
        # The model stack (torch) is imported here, in the actor's own process: the driver names this
        # class without ever loading torch.
        from pipeline.generate import ClipGenerator, ClipRequest
        from pipeline.model.bundle import ModelBundle
        from pipeline.spec.cache import WINDOW_FRAMES

        _configure_logging(config.log_level)
        start = time.perf_counter()
        self.config = config
        self.preset = get_preset(config.model)
        self.target = open_target(config.out, config.s3)
        self.claims = ClipClaims(self.target, config.run_id, config.planned_at, config.force)
        self.chaos = ChaosPlan.from_environment()  # faults for drills and soak tests; none unless asked
        self.bundle = ModelBundle.for_device(
            self.preset,
            _weights_folder(config),
            seed=config.weights_seed,
            search_all_conv_algorithms=config.search_all_conv_algorithms,
        )
        self.generator = ClipGenerator(self.bundle)
        self._request: type[ClipRequest] = ClipRequest
        self._kernels: CompiledKernelShare | None = None  # only GPUs compile (model/speed.py)
        if config.share_compiled_kernels and self.bundle.device.type == "cuda":
            self._kernels = CompiledKernelShare(self.target, self.bundle.device)
            self._kernels.prime()
        # Sized once, with the model loaded and before any clip: a group whose policy keeps a longer
        # window than the default and does not fit falls back to rendering its clips alone.
        self.clips_per_forward = config.clips_per_forward or max(
            1, self.generator.clips_that_fit(WINDOW_FRAMES, MAX_AUTO_CLIPS_PER_FORWARD)
        )
        self.generator.keep_text_encoder_resident(WINDOW_FRAMES, self.clips_per_forward)
        self.tmp = make_scratch_dir(config.tmp_dir)
        atexit.register(shutil.rmtree, self.tmp, ignore_errors=True)  # Ray ends a finished actor's process
        self.node = socket.gethostname()
        # Generation, one batch at a time, always on this thread; calls finalise on their own meanwhile
        self._device = ThreadPoolExecutor(max_workers=1, thread_name_prefix="device")
        self._current: list[tuple[str, FaultRecord | None]] = []  # clips on the device, for the fault handler
        self._watchdog = HangWatchdog(config.hang_timeout_s, self._on_hang)
        self._load_s: float | None = time.perf_counter() - start  # charged to the first clip
        logger.info(
            "render worker ready in %.1f s: model %s on %s (%s), up to %d clip(s) per forward, writing to %s",
            self._load_s,
            config.model,
            self.bundle.device_name or "CPU",
            self.bundle.dtype,
            self.clips_per_forward,
            self.target.uri,
        )

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        """Render each clip of the batch; one metrics row per clip, whatever happened to it.

        Clips that can share DiT forwards (same length, policy and parameters: `groups.plan_groups`)
        render as groups of up to `clips_per_forward`; the driver puts such clips in one batch.
        Returns a pyarrow Table with METRICS_SCHEMA rather than numpy columns: numpy has no nullable
        integers or time-zone-aware timestamps, so an ok row and a failed row would get different types.
        """
        rows: list[dict[str, Any] | None] = [None] * len(batch["clip"])
        jobs: list[tuple[int, _Job]] = []
        for index, data in enumerate(batch["clip"]):
            if isinstance(job := self._job_or_row(data), dict):
                rows[index] = job
            else:
                jobs.append((index, job))
        alone = frozenset(job.clip.clip_id for _, job in jobs if job.record.device_faults > 0)
        for group in plan_groups([job.clip for _, job in jobs], self.clips_per_forward, alone):
            indices = [jobs[member][0] for member in group]
            group_rows = self._render_jobs([jobs[member][1] for member in group])
            for index, row in zip(indices, group_rows, strict=True):
                rows[index] = row
        return rows_to_table([row for row in rows if row is not None])

    def render_safely(self, data: bytes) -> dict[str, Any]:
        """One `ClipSpec.to_bytes` rendered alone; nothing raises (a clip whose row cannot be built or
        stored gets a failed row that can)."""
        job = self._job_or_row(data)
        return job if isinstance(job, dict) else self._render_jobs([job])[0]

    def render(self, clip: ClipSpec) -> dict[str, Any]:
        """Render, encode, upload and record one clip alone; returns its metrics row (never raises)."""
        return self._render_jobs([self._job(clip)])[0]

    def close(self) -> None:
        """Stop the watchdog and remove the scratch folder (Ray simply ends the process instead)."""
        self._watchdog.close()
        self._device.shutdown()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- a group of clips -----------------------------------------------------------------------

    def _job_or_row(self, data: bytes) -> _Job | dict[str, Any]:
        """The clip of one `ClipSpec.to_bytes`, ready to render, or the failed row of a broken record."""
        clip: object = data
        try:
            clip = ClipSpec.from_bytes(data)
            return self._job(clip)
        except Exception as exc:
            return self._last_resort(clip, exc)

    def _job(self, clip: ClipSpec) -> _Job:
        """A clip's row started and its fault record read (a store that fails it fails the clip)."""
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
        job = _Job(clip, row, self.tmp / f"{clip.clip_id}.mp4")
        try:
            job.record = read_fault_record(self.target, config.run_id, clip.clip_id)
            row["attempt"] = job.record.attempts
            self._refuse_if_it_broke_the_device(clip, job.record)
        except Exception as exc:
            job.fail(exc)
        return job

    def _render_jobs(self, jobs: list[_Job]) -> list[dict[str, Any]]:
        """Generate the clips together on the device thread, then finalise each (encode, upload, row) on
        this one, while the other call's clips generate. One row per clip; nothing raises."""
        try:
            self._device.submit(self._begin_and_generate, jobs).result()
        except Exception as exc:  # a failure of the group's bookkeeping: every clip still gets its row
            for job in jobs:
                if job.error is None and not job.skipped and job.recorded is None:
                    job.fail(exc)
        for job in jobs:  # every ffmpeg drains its last frames while the clips before it are stored
            job.end_input(self.config.encode_timeout_s)
        return [self._finish(job) for job in jobs]

    def _begin_and_generate(self, jobs: list[_Job]) -> None:
        live = [job for job in jobs if job.error is None and self._begin(job)]
        if live:
            self._generate_jobs(live)
        if self._kernels is not None:  # on this thread: nothing compiles while it serialises
            self._kernels.publish_once()

    def _begin(self, job: _Job) -> bool:
        """Claim the clip, count its attempt, open its encoder and meter; False if it will not generate."""
        config, clip, row = self.config, job.clip, job.row
        try:
            # A Ray retry of a call whose process died (another clip broke the device) after this clip
            # was done: its recorded row stands, it is not rendered again.
            if self.claims.finished_in_this_plan(clip.clip_id) and (
                done := read_clip_metrics(self.target, config.run_id, clip.clip_id)
            ):
                job.recorded = done
                return False
            # Claimed only now, on the device thread: a claim waiting for it would not be refreshed.
            if (holder := self.claims.acquire(clip.clip_id)) is not None:
                row.update(skipped_columns(holder))  # not recorded: another run owns the clip
                job.skipped = True
                return False
            job.claimed = True
            job.start = time.perf_counter()
            row["started_at"] = now()
            job.started = job.record.next_attempt()
            write_fault_record(self.target, config.run_id, clip.clip_id, job.started)
            row["attempt"] = job.started.attempts
            row["t_load_s"], self._load_s = self._load_s, None
            self._open_outputs(job)
        except Exception as exc:
            job.fail(exc)
            return False
        return True

    def _open_outputs(self, job: _Job) -> None:
        preset, config = self.preset, self.config
        job.encoder = VideoEncoder(
            job.local, preset.width, preset.height, preset.fps, config.encoder, binary=config.ffmpeg
        )
        job.quality = QualityMeter(  # in its own thread; a storyboard's segments each measured too
            preset.fps, job.row["num_frames"], switch_frames=switch_frames(job.row["segments"])
        )

    def _generate_jobs(self, jobs: list[_Job]) -> None:
        """Generate the clips as one group. A group that fails as a whole (not one clip's encoder or
        chaos point, which fail that clip alone) renders its clips again one by one, so that only the
        culprit fails; a deadline fails them all (alone they would take longer still)."""
        try:
            self._generate(jobs)
        except Exception as exc:
            if is_fatal_device_error(exc):
                reason = f"{type(exc).__name__}: {exc}"
                exit_for_restart(
                    self.target, self.config.run_id, [(j.clip.clip_id, j.started) for j in jobs], reason
                )
            live = [job for job in jobs if job.error is None]
            if len(jobs) == 1 or isinstance(exc, ClipTimeoutError):
                for job in live:
                    job.fail(exc)
                return
            logger.warning(
                "a group of %d clips (%s) failed: %s: %s; rendering them one by one",
                len(jobs),
                ", ".join(job.clip.clip_id for job in jobs),
                type(exc).__name__,
                exc,
            )
            for job in live:
                job.close_outputs()
                try:
                    self._open_outputs(job)
                except Exception as reopen:
                    job.fail(reopen)
                    continue
                self._generate_jobs([job])

    def _generate(self, jobs: list[_Job]) -> None:
        """Stream the group's chunks into each clip's encoder and meter, checking the deadline between
        chunks. A clip whose consumer fails is dropped from the group and fails; the others go on."""
        clips = [job.clip for job in jobs]
        first = clips[0]
        num_chunks = first.num_latent_frames // self.preset.chunk_frames
        timeout_s = self.config.clip_timeout_s * len(jobs)  # the group does the work of its clips
        deadline = time.monotonic() + timeout_s
        label = "+".join(clip.clip_id for clip in clips)
        self._current = [(job.clip.clip_id, job.started) for job in jobs]
        self._watchdog.watch(label)
        if len(jobs) == 1:  # a storyboard switches prompts as it goes
            requests = [self._request(first.storyboard or first.prompt, first.seed)]
        else:
            requests = [self._request(clip.prompt, clip.seed) for clip in clips]
        group = self.generator.stream_group(requests, first.num_latent_frames, first.cache)
        try:
            for done, chunk in enumerate(group, start=1):
                self._watchdog.beat()
                for item, (job, frames) in enumerate(zip(jobs, chunk, strict=True)):
                    if frames is None:
                        continue
                    try:
                        assert job.started is not None and job.encoder is not None and job.quality is not None
                        self.chaos.point("chunk", job.clip.clip_id, job.started.attempts, chunk=done)
                        self.claims.refresh(job.clip.clip_id)
                        job.encoder.write(frames)
                        job.quality.update(frames)
                    except Exception as exc:
                        if is_fatal_device_error(exc) or len(jobs) == 1:
                            raise
                        logger.info("clip %s leaves its group of %d: it failed", job.clip.clip_id, len(jobs))
                        job.fail(exc)
                        job.stats = group.stats(item)
                        group.drop(item)
                if done < num_chunks and time.monotonic() > deadline:
                    shared = f" for its group of {len(jobs)} clips" if len(jobs) > 1 else ""
                    raise ClipTimeoutError(
                        f"clip {label} ran past its deadline: {done} of {num_chunks} chunks in "
                        f"{timeout_s + time.monotonic() - deadline:.1f} s, over "
                        f"clip_timeout_s={self.config.clip_timeout_s:g}{shared}; raise --clip-timeout or "
                        f"render fewer than {first.num_latent_frames} latent frames"
                    )
        finally:
            self._watchdog.clear()
            self._current = []
            group.close()  # stop the generator where it is
            for item, job in enumerate(jobs):
                if job.stats is None:
                    job.stats = group.stats(item)
        for job in jobs:
            if job.error is None:
                assert job.stats is not None
                job.generated = True
                job.row.update(generation_columns(job.stats, self.preset))
                _warn_if_truncated(job.clip, job.stats)

    def _finish(self, job: _Job) -> dict[str, Any]:
        """Finalise a generated clip (encode, upload, thumbnails, per-second rows) and record its row."""
        config, clip, row = self.config, job.clip, job.row
        if job.skipped:
            return row
        if job.recorded is not None:
            logger.info("clip %s was done before this call was retried: its row stands", clip.clip_id)
            return job.recorded
        try:
            if job.error is None:
                self._store(job)
        except Exception as exc:
            job.fail(exc)
        finally:
            if job.quality is not None:
                job.quality.close()
            job.local.unlink(missing_ok=True)
        if job.error is not None:
            if job.encoder is not None:
                job.encoder.abort()
            logger.warning("clip %s failed: %s: %s", clip.clip_id, type(job.error).__name__, job.error)
            row.update(failure_columns(job.error))
            if job.stats is not None and row["cache_telemetry"] is None:
                row["cache_telemetry"] = telemetry_json(job.stats.cache_telemetry)
                row.update(prompt_columns(job.stats), clips_per_forward=job.stats.clips_per_forward)
        row["t_total_s"] = time.perf_counter() - job.start
        row["finished_at"] = now()
        try:
            rows_to_table([row])  # fits the schema
        except Exception as exc:
            logger.error("clip %s: its metrics row could not be built: %s", clip.clip_id, exc)
            row = last_resort_row(clip, config.run_id, config.model, self.preset, self.node, exc)
        row = self._record(row)
        if job.claimed:
            self._release(clip.clip_id, row["status"])
        return row

    def _store(self, job: _Job) -> None:
        config, clip, row = self.config, job.clip, job.row
        assert job.encoder is not None and job.quality is not None and job.started is not None
        signals = job.quality.result()
        row.update(quality_columns(signals))
        self.claims.refresh(clip.clip_id)
        encode_start = time.perf_counter()
        video = job.encoder.close(timeout_s=config.encode_timeout_s)
        upload_start = time.perf_counter()
        self.chaos.point("upload", clip.clip_id, job.started.attempts)
        stored = self.target.put_file(
            video.path,
            video_key(clip.clip_id),
            "video/mp4",
            {"clip-id": clip.clip_id, "run-id": config.run_id, "model": config.model},
            sha256=video.sha256,
        )
        row.update(video_columns(stored, upload_start - encode_start, time.perf_counter() - upload_start))
        row.update(store_quality_outputs(self.target, config.run_id, clip.clip_id, row["attempt"], signals))

    def _last_resort(self, clip: object, exc: BaseException) -> dict[str, Any]:
        logger.error("clip %s: its metrics row could not be built: %s", getattr(clip, "clip_id", "?"), exc)
        row = last_resort_row(clip, self.config.run_id, self.config.model, self.preset, self.node, exc)
        return self._record(row)

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

    def _on_hang(self, label: str, silent_s: float) -> None:
        reason = f"no frames for {silent_s:.0f} s (hang_timeout_s={self.config.hang_timeout_s:g})"
        current = self._current or [(clip_id, None) for clip_id in label.split("+")]
        exit_for_restart(self.target, self.config.run_id, current, f"{reason}; device presumed hung")


@dataclass
class _Job:
    """One clip on its way through the worker: its row as it fills, its outputs, how far it got."""

    clip: ClipSpec
    row: dict[str, Any]
    local: Path  # the mp4 before its upload
    record: FaultRecord = field(default_factory=FaultRecord)  # as read before this attempt
    started: FaultRecord | None = None  # set once this attempt is counted
    claimed: bool = False  # set once this run holds the clip's claim
    skipped: bool = False  # another run owns the clip: its row is reported, never recorded
    recorded: dict[str, Any] | None = None  # the row of a clip this run already finished (a retried call)
    start: float = field(default_factory=time.perf_counter)
    encoder: VideoEncoder | None = None
    quality: QualityMeter | None = None
    stats: ClipStats | None = None
    generated: bool = False
    error: Exception | None = None

    def fail(self, exc: Exception) -> None:
        if self.error is None:
            self.error = exc

    def end_input(self, timeout_s: float) -> None:
        """A generated clip's encoder gets no more frames (an encoder that fails here fails the clip)."""
        if self.generated and self.error is None and self.encoder is not None:
            try:
                self.encoder.end_input(timeout_s)
            except Exception as exc:
                self.fail(exc)

    def close_outputs(self) -> None:
        """Throw away what the encoder and meter got (the clip renders again from its first chunk)."""
        if self.encoder is not None:
            self.encoder.abort()
        if self.quality is not None:
            self.quality.close()
        self.encoder = self.quality = None


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
