"""The Ray Data actor that renders clips end to end: prompt -> frames -> mp4 -> object store -> metrics row.

`RenderWorker` is a callable class for `Dataset.map_batches`: `__init__` loads the model once per actor,
`__call__` renders the clips of a batch (the driver sends one per batch) and returns their metrics rows.
It knows nothing of Ray itself, so tests call it in-process too.

Overlap. The driver runs the actor with two concurrent calls (`ActorPoolStrategy(
max_concurrent_calls_per_actor=2, enable_true_multi_threading=True)`). A call holds `_device_lock`
only while its clip generates; frames stream chunk by chunk into the ffmpeg encoder as they come. It
then releases the lock and finalises (waits for ffmpeg, uploads, writes metrics) while the other call,
already queued on the lock, generates the next clip. The device never waits for encode or upload,
and at most one clip is on the device at a time.

Failures. Whatever goes wrong with one clip (bad policy parameter, encoder failure, upload failure,
the clip's deadline) becomes a `status='failed'` row, written to the metrics table like any other,
never an exception: Ray Data ends the whole dataset on one (`max_errored_blocks=0`).

Watchdog. The deadline (`clip_timeout_s`) is checked between chunks and fails only that clip. A device
that stops making progress altogether (no chunk for `hang_timeout_s`; a CUDA call that never returns
cannot be interrupted from Python) or a fatal CUDA error (the context is unusable afterwards) ends the
process with `os._exit(1)`: Ray restarts the actor and retries its in-flight clips (actor pools run
with max_restarts=-1, max_task_retries=-1). So that a clip which breaks the device every time does not
loop forever, each fault is counted first in `attempts/run_id=<run>/<clip_id>.json` on the output
target; a clip with `max_device_faults` faults comes back as a failed row without running again.
Ray's retries are at-least-once, so everything a clip writes goes to a deterministic key.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from pipeline.cache import KVCache, make_cache
from pipeline.encode import EncoderSettings, VideoEncoder
from pipeline.generate import ClipGenerator, ClipStats
from pipeline.metrics import rows_to_table, video_key, write_clip_metrics
from pipeline.model.bundle import (
    DIT_FILE,
    TEXT_ENCODER_FILE,
    VAE_FILE,
    ModelBundle,
    find_weights,
    resolve_model_dir,
)
from pipeline.model.presets import get_preset
from pipeline.model.speed import SpeedConfig, accelerate
from pipeline.quality import QualityMeter
from pipeline.storage import OutputTarget, S3Settings, file_sha256, open_target

logger = logging.getLogger(__name__)

MAX_ERROR_CHARS = 4000  # error text kept in a metrics row (encoder errors carry an ffmpeg stderr tail)
FAULT_RECORD_TIMEOUT_S = 30.0  # how long a dying actor tries to record the fault before exiting anyway
# Messages of CUDA errors after which the context is unusable: the process must go (Ray PR #60145).
FATAL_CUDA_ERRORS = (
    "illegal memory access",
    "unspecified launch failure",
    "device-side assert",
    "misaligned address",
    "uncorrectable ECC error",
)


@dataclass(frozen=True)
class WorkerConfig:
    out: str  # output target: local folder or s3://bucket/prefix
    run_id: str  # metrics partition: metrics/run_id=<run_id>/
    model: str = "tiny"  # preset name (pipeline.model.presets)
    model_dir: str | None = None  # weights folder or s3:// URI; None for presets without weights
    random_weights: bool = False  # seeded random weights even for presets that need real ones
    weights_seed: int = 0  # seed of the random weights (tiny, or random_weights)
    s3: S3Settings = field(default_factory=S3Settings)
    encoder: EncoderSettings = field(default_factory=EncoderSettings)
    ffmpeg: str | None = None  # ffmpeg binary; None: $FFMPEG_BINARY, imageio-ffmpeg's, PATH
    clip_timeout_s: float = 3600.0  # per-clip deadline, checked between chunks (H100: ~66 s per minute)
    hang_timeout_s: float = 900.0  # no chunk for this long: the device is presumed hung -> restart
    max_device_faults: int = 2  # hangs/fatal CUDA errors on one clip before it is failed for good
    encode_timeout_s: float = 600.0  # wait for ffmpeg to finish after the last chunk
    tmp_dir: str | None = None  # local folder for mp4s before upload; None: the system temp folder
    log_level: str = "INFO"  # for the worker's own loggers (pipeline.*)

    def __post_init__(self) -> None:
        for name in ("clip_timeout_s", "hang_timeout_s", "encode_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"WorkerConfig.{name}={getattr(self, name)} must be > 0 seconds")
        if self.max_device_faults < 1:
            raise ValueError(f"WorkerConfig.max_device_faults={self.max_device_faults} must be >= 1")


@dataclass(frozen=True)
class ClipTask:
    """One row of the driver's dataset (pipeline.prompts.ClipSpec.row)."""

    clip_id: str
    prompt: str
    seed: int
    num_latent_frames: int
    cache_policy: str
    cache_params: dict[str, Any]
    config_hash: str

    @classmethod
    def from_batch(cls, batch: dict[str, np.ndarray], i: int) -> ClipTask:
        return cls(
            clip_id=str(batch["clip_id"][i]),
            prompt=str(batch["prompt"][i]),
            seed=int(batch["seed"][i]),
            num_latent_frames=int(batch["num_latent_frames"][i]),
            cache_policy=str(batch["cache_policy"][i]),
            cache_params=json.loads(str(batch["cache_params"][i])),
            config_hash=str(batch["config_hash"][i]),
        )


class ClipTimeoutError(RuntimeError):
    """The clip ran past its deadline (checked between chunks)."""


class DeviceFaultError(RuntimeError):
    """The clip broke the device too often (hangs, fatal CUDA errors); it is not tried again this run."""


# ---------------------------------------------------------------------------------------------
# 1. Fault records: how often a clip was started, and how often it took the device down
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaultRecord:
    attempts: int = 0  # generations started in this run (the metrics `attempt` column)
    device_faults: int = 0  # hangs and fatal CUDA errors while this clip was on the device
    last_fault: str = ""


def fault_record_key(run_id: str, clip_id: str) -> str:
    return f"attempts/run_id={run_id}/{clip_id}.json"


def read_fault_record(target: OutputTarget, run_id: str, clip_id: str) -> FaultRecord:
    try:
        data = json.loads(target.read_bytes(fault_record_key(run_id, clip_id)))
    except FileNotFoundError:
        return FaultRecord()
    return FaultRecord(data["attempts"], data["device_faults"], data.get("last_fault", ""))


def write_fault_record(target: OutputTarget, run_id: str, clip_id: str, record: FaultRecord) -> None:
    body = json.dumps(dataclasses.asdict(record), sort_keys=True).encode()
    target.put_bytes(body, fault_record_key(run_id, clip_id), "application/json")


# ---------------------------------------------------------------------------------------------
# 2. Hang watchdog
# ---------------------------------------------------------------------------------------------


class HangWatchdog:
    """Calls `on_hang(clip_id)` from its own thread when the current clip misses `timeout_s` heartbeats.

    The generating thread calls `watch(clip_id)` before the first chunk, `beat()` after each chunk and
    `clear()` when done; between clips nothing is watched (finalising has its own timeouts).
    """

    def __init__(self, timeout_s: float, on_hang: Callable[[str, float], None]):
        self.timeout_s = timeout_s
        self._on_hang = on_hang
        self._lock = threading.Lock()
        self._current: tuple[str, float] | None = None  # (clip_id, monotonic time of the last beat)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hang-watchdog", daemon=True)
        self._thread.start()

    def watch(self, clip_id: str) -> None:
        with self._lock:
            self._current = (clip_id, time.monotonic())

    def beat(self) -> None:
        with self._lock:
            if self._current is not None:
                self._current = (self._current[0], time.monotonic())

    def clear(self) -> None:
        with self._lock:
            self._current = None

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        poll_s = min(5.0, self.timeout_s / 4)
        while not self._stop.wait(poll_s):
            with self._lock:
                current = self._current
            if current is not None and (silent := time.monotonic() - current[1]) > self.timeout_s:
                self._on_hang(current[0], silent)
                return


# ---------------------------------------------------------------------------------------------
# 3. The actor
# ---------------------------------------------------------------------------------------------


class RenderWorker:
    """Renders clips with one model on one device. Callable with a batch of ClipSpec rows."""

    def __init__(self, config: WorkerConfig):
        _configure_logging(config.log_level)
        start = time.perf_counter()
        self.config = config
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.preset = get_preset(config.model)
        self.bundle, self.model_sha = _load_bundle(config, self.device)
        self.generator = ClipGenerator(self.bundle)
        self.target = open_target(config.out, config.s3)
        self.tmp = _make_tmp_dir(config.tmp_dir)
        self.node = socket.gethostname()
        self.gpu = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else None
        self._device_lock = threading.Lock()  # one clip generates at a time; others finalise meanwhile
        self._current: tuple[str, FaultRecord] | None = None  # clip on the device, for the fault handler
        self._watchdog = HangWatchdog(config.hang_timeout_s, self._on_hang)
        self._load_s: float | None = time.perf_counter() - start  # charged to the first clip
        logger.info(
            "render worker ready in %.1f s: model %s on %s (%s), writing to %s",
            self._load_s,
            config.model,
            self.gpu or "CPU",
            self.bundle.dit.dtype,
            self.target.uri,
        )

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        """Render each clip of the batch; one metrics row per clip, whatever happened to it.

        Returns a pyarrow Table with METRICS_SCHEMA rather than numpy columns: numpy has no nullable
        integers or time-zone-aware timestamps, so an ok row and a failed row would get different types.
        """
        rows = [self.render(ClipTask.from_batch(batch, i)) for i in range(len(batch["clip_id"]))]
        return rows_to_table(rows)

    def close(self) -> None:
        """Stop the watchdog and remove the temp folder (Ray simply ends the process instead)."""
        self._watchdog.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- one clip -------------------------------------------------------------------------------

    def render(self, clip: ClipTask) -> dict[str, Any]:
        """Render, encode, upload and record one clip; returns its metrics row (never raises)."""
        row = self._base_row(clip)
        local = self.tmp / f"{clip.clip_id}.mp4"
        encoder: VideoEncoder | None = None
        cache: KVCache | None = None
        started: FaultRecord | None = None  # set once this attempt is counted
        start = time.perf_counter()
        try:
            record = read_fault_record(self.target, self.config.run_id, clip.clip_id)
            row["attempt"] = record.attempts
            if record.device_faults >= self.config.max_device_faults:
                raise DeviceFaultError(
                    f"clip {clip.clip_id} took the device down {record.device_faults} time(s) in run "
                    f"{self.config.run_id} (last: {record.last_fault}); max_device_faults="
                    f"{self.config.max_device_faults}, so it is not tried again in this run. Check the "
                    "GPU (nvidia-smi, Xid errors in dmesg); a new run tries the clip again"
                )
            # 1. Generate under the device lock; frames go to the encoder chunk by chunk.
            with self._device_lock:
                start = time.perf_counter()
                row["started_at"] = _now()
                started = FaultRecord(record.attempts + 1, record.device_faults, record.last_fault)
                write_fault_record(self.target, self.config.run_id, clip.clip_id, started)
                row["attempt"] = started.attempts
                row["t_load_s"], self._load_s = self._load_s, None
                cache = make_cache(
                    clip.cache_policy, self.preset.cache_geometry(), self.bundle.dit.rope, **clip.cache_params
                )
                encoder = VideoEncoder(
                    local,
                    self.preset.width,
                    self.preset.height,
                    self.preset.fps,
                    self.config.encoder,
                    binary=self.config.ffmpeg,
                )
                quality = QualityMeter(self.preset.fps)
                self._current = (clip.clip_id, started)
                try:
                    stats = self._generate(clip, cache, encoder, quality)
                finally:
                    self._current = None
                row.update(self._generation_columns(stats, cache))
                if (measured := quality.result()) is not None:
                    row.update(dataclasses.asdict(measured))
            # 2. Finalise outside the lock, while the next clip generates.
            t0 = time.perf_counter()
            video = encoder.close(timeout_s=self.config.encode_timeout_s)
            t1 = time.perf_counter()
            stored = self.target.put_file(
                video.path,
                video_key(clip.clip_id),
                "video/mp4",
                {"clip-id": clip.clip_id, "run-id": self.config.run_id, "model": self.config.model},
                sha256=video.sha256,
            )
            row.update(
                status="ok",
                t_encode_s=t1 - t0,  # encoding not hidden behind generation
                t_upload_s=time.perf_counter() - t1,
                bytes=stored.bytes,
                video_uri=stored.uri,
                sha256=stored.sha256,
                checksum=stored.checksum,
            )
        except Exception as exc:
            if encoder is not None:
                encoder.abort()
            if started is not None and _is_fatal_device_error(exc):
                self._device_fault(clip.clip_id, started, f"{type(exc).__name__}: {exc}")  # does not return
            logger.warning("clip %s failed: %s: %s", clip.clip_id, type(exc).__name__, exc)
            row.update(status="failed", error_type=type(exc).__name__, error=str(exc)[:MAX_ERROR_CHARS])
            if cache is not None and row["cache_telemetry"] is None:
                row["cache_telemetry"] = _telemetry_json(cache)
        finally:
            local.unlink(missing_ok=True)
        row["t_total_s"] = time.perf_counter() - start
        row["finished_at"] = _now()
        return self._record(row)

    def _generate(
        self, clip: ClipTask, cache: KVCache, encoder: VideoEncoder, quality: QualityMeter
    ) -> ClipStats:
        """Stream the clip's chunks into the encoder, checking the deadline between chunks."""
        num_chunks = clip.num_latent_frames // self.preset.chunk_frames
        deadline = time.monotonic() + self.config.clip_timeout_s
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        chunks: Iterator[np.ndarray] = self.generator.stream(
            clip.prompt, clip.seed, clip.num_latent_frames, cache
        )
        self._watchdog.watch(clip.clip_id)
        try:
            for done, frames in enumerate(chunks, start=1):
                self._watchdog.beat()
                encoder.write(frames)
                quality.update(frames)
                if done < num_chunks and time.monotonic() > deadline:
                    raise ClipTimeoutError(
                        f"clip {clip.clip_id} ran past its deadline: {done} of {num_chunks} chunks in "
                        f"{self.config.clip_timeout_s + time.monotonic() - deadline:.1f} s, over "
                        f"clip_timeout_s={self.config.clip_timeout_s:g}; raise --clip-timeout or render "
                        f"fewer than {clip.num_latent_frames} latent frames"
                    )
        finally:
            self._watchdog.clear()
            chunks.close()  # type: ignore[attr-defined]  # a generator: stop it where it is
        return self.generator.last_stats

    def _generation_columns(self, stats: ClipStats, cache: KVCache) -> dict[str, Any]:
        generate_s, decode_s = sum(stats.dit_s), sum(stats.vae_s)
        frames = self.preset.pixel_frames(len(stats.dit_s) * self.preset.chunk_frames)
        peak = None
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device) / 1e9
        return {
            "t_generate_s": generate_s,
            "t_decode_s": decode_s,
            "gen_fps": frames / (generate_s + decode_s) if generate_s + decode_s > 0 else None,
            "peak_gpu_mem_gb": peak,
            "cache_telemetry": _telemetry_json(cache),
        }

    def _base_row(self, clip: ClipTask) -> dict[str, Any]:
        now = _now()
        return {
            "run_id": self.config.run_id,
            "clip_id": clip.clip_id,
            "attempt": 0,
            "status": "failed",
            "prompt": clip.prompt,
            "prompt_sha256": hashlib.sha256(clip.prompt.encode()).hexdigest(),
            "seed": clip.seed,
            "model": self.config.model,
            "model_sha": self.model_sha,
            "config_hash": clip.config_hash,
            "cache_policy": clip.cache_policy,
            "cache_telemetry": None,
            "num_latent_frames": clip.num_latent_frames,
            "num_frames": self.preset.pixel_frames(clip.num_latent_frames),
            "width": self.preset.width,
            "height": self.preset.height,
            "fps": float(self.preset.fps),
            "node": self.node,
            "gpu": self.gpu,
            "worker_pid": os.getpid(),
            "started_at": now,
            "finished_at": now,
        }

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

    # -- device faults --------------------------------------------------------------------------

    def _on_hang(self, clip_id: str, silent_s: float) -> None:
        current = self._current
        record = current[1] if current is not None and current[0] == clip_id else None
        reason = f"no frames for {silent_s:.0f} s (hang_timeout_s={self.config.hang_timeout_s:g})"
        self._device_fault(clip_id, record, f"{reason}; device presumed hung")

    def _device_fault(self, clip_id: str, started: FaultRecord | None, reason: str) -> None:
        """Count the fault on the clip, then end the process so that Ray restarts the actor."""
        logger.critical("clip %s: %s; ending this worker so that Ray restarts it", clip_id, reason)
        if started is not None:
            record = FaultRecord(started.attempts, started.device_faults + 1, reason[:500])
            writer = threading.Thread(
                target=write_fault_record,
                args=(self.target, self.config.run_id, clip_id, record),
                daemon=True,
            )
            writer.start()
            writer.join(FAULT_RECORD_TIMEOUT_S)  # a store that hangs too must not keep us alive
        for handler in [*logging.getLogger().handlers, *logging.getLogger("pipeline").handlers]:
            handler.flush()
        os._exit(1)


# ---------------------------------------------------------------------------------------------
# 4. Helpers
# ---------------------------------------------------------------------------------------------


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _make_tmp_dir(root: str | None) -> Path:
    """A fresh `render-<pid>-*` folder; folders of processes that are gone (killed actors) are removed.

    Ray ends actors without running their cleanup, and one killed mid-clip leaves a partial mp4 behind.
    """
    parent = Path(root or tempfile.gettempdir())
    for folder in parent.glob("render-*-*"):
        pid = folder.name.split("-")[1]
        if pid.isdigit() and not _process_exists(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"render-{os.getpid()}-", dir=parent))


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _telemetry_json(cache: KVCache) -> str:
    return json.dumps(cache.telemetry(), sort_keys=True, default=str)


def _is_fatal_device_error(exc: BaseException) -> bool:
    text = str(exc)
    return isinstance(exc, RuntimeError) and "CUDA" in text and any(m in text for m in FATAL_CUDA_ERRORS)


def _configure_logging(level: str) -> None:
    """Actors start with an unconfigured root logger; give the pipeline's loggers a handler once."""
    pipeline_logger = logging.getLogger("pipeline")
    pipeline_logger.setLevel(level)
    if not logging.getLogger().handlers and not pipeline_logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        pipeline_logger.addHandler(handler)


def _load_bundle(config: WorkerConfig, device: torch.device) -> tuple[ModelBundle, str | None]:
    """The model on `device` (bf16 on GPUs, float32 on CPUs) and its weights digest (None if random)."""
    preset = get_preset(config.model)
    on_gpu = device.type == "cuda"
    dtype = torch.bfloat16 if on_gpu else torch.float32
    # On GPUs the 11.4 GB UMT5 lives in pinned host memory and is lent to the GPU per prompt
    # (0.23 s on an H100), which keeps generation, decode and cache within 20 GB.
    text_placement = "offload" if on_gpu else "device"
    digest = None
    if not preset.needs_weights or config.random_weights:
        bundle = ModelBundle.random(preset, device, dtype, config.weights_seed, text_placement)
    elif config.model_dir is None:
        raise ValueError(f"model {config.model!r} needs weights; pass --model-dir (a folder or s3:// URI)")
    else:
        model_dir = resolve_model_dir(config.model_dir, settings=config.s3)
        bundle = ModelBundle.load(preset, model_dir, device, dtype, text_placement=text_placement)
        digest = weights_digest(model_dir)
    if on_gpu:  # compiled DiT blocks and VAE, channels-last VAE: 17.3 -> 22.2 FPS on an H100 (benchmarks/)
        accelerate(bundle, SpeedConfig())
    return bundle, digest


def weights_digest(model_dir: Path) -> str:
    """sha256 over the three weights files' sha256s; each file's digest is cached beside it.

    A cached digest is reused while the file's size and mtime are unchanged, so the actors of a node
    hash the ~17 GB once (the first actor may be joined by others hashing in parallel; same result).
    """
    parts = []
    for name in (DIT_FILE, VAE_FILE, TEXT_ENCODER_FILE):
        path = find_weights(model_dir, name)
        stat = path.stat()
        stamp = f"{stat.st_size}:{stat.st_mtime_ns}"
        sidecar = path.with_name(f".{path.name}.sha256")
        try:
            cached_stamp, digest = sidecar.read_text().split()
        except (OSError, ValueError):
            cached_stamp, digest = "", ""
        if cached_stamp != stamp:
            digest = file_sha256(path)
            try:
                tmp = sidecar.with_name(f"{sidecar.name}.{os.getpid()}")
                tmp.write_text(f"{stamp} {digest}\n")
                os.replace(tmp, sidecar)
            except OSError:  # a read-only model folder: hash again next time
                pass
        parts.append(f"{path.name} {digest}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()
