"""What a render worker needs to know: where to write, which model, how to encode, when to give up."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.encode import EncoderSettings
from pipeline.storage import S3Settings

# Most clips that share DiT forwards when the group size is automatic (`clips_per_forward=None`): the
# memory of the device may allow more, but the gain per clip flattens out beyond (benchmarks/README.md)
# while a group's clips all finish late, at once.
MAX_AUTO_CLIPS_PER_FORWARD = 2

# cuDNN timing every algorithm for the VAE's full-resolution convs (steady chunks), against PyTorch's
# default of its first ten, measured in a warm H200 process (benchmarks/README.md): 12.1 s more warm-up in
# every actor process, 6.7 ms less decode per chunk from then on. Automatic: full only where a worker's
# share of the run decodes enough chunks to pay it back (about 23 minute-long clips).
FULL_CONV_SEARCH_WARMUP_S = 12.1
FULL_CONV_SEARCH_SAVING_S_PER_CHUNK = 0.0067
CONV_SEARCHES = ("auto", "full", "quick")


@dataclass(frozen=True)
class WorkerConfig:
    out: str  # output target: local folder or s3://bucket/prefix
    run_id: str  # metrics partition: metrics/run_id=<run_id>/
    model: str = "tiny"  # preset name (pipeline.spec.model)
    model_dir: str | None = None  # weights folder or s3:// URI; None for presets without weights
    random_weights: bool = False  # seeded random weights even for presets that need real ones
    weights_seed: int = 0  # seed of the random weights (tiny, or random_weights)
    s3: S3Settings = field(default_factory=S3Settings)
    encoder: EncoderSettings = field(default_factory=EncoderSettings)
    ffmpeg: str | None = None  # ffmpeg binary; None: $FFMPEG_BINARY, imageio-ffmpeg's, PATH
    clip_timeout_s: float = 3600.0  # per-clip deadline, checked between chunks
    hang_timeout_s: float = 900.0  # no chunk for this long: the device is presumed hung -> restart
    max_device_faults: int = 2  # hangs/fatal CUDA errors on one clip before it is failed for good
    encode_timeout_s: float = 600.0  # wait for ffmpeg to finish after the last chunk
    tmp_dir: str | None = None  # local folder for mp4s before upload; None: the system temp folder
    planned_at: float = 0.0  # unix time the driver planned the run: clips other runs finish later are theirs
    force: bool = False  # render clips again even if another run finished them meanwhile
    log_level: str = "INFO"  # for the worker's own loggers (pipeline.*)
    # Clips of one length and policy that render as one batch (worker/groups.py); None: as many as the
    # device's free memory holds, at most MAX_AUTO_CLIPS_PER_FORWARD (always 1 on CPUs)
    clips_per_forward: int | None = None
    # Let cuDNN time every conv algorithm for the VAE's full-resolution convs: faster decode for the
    # whole life of the actor, for seconds of warm-up in each process (the driver's --conv-search decides)
    search_all_conv_algorithms: bool = True
    # GPU workers share their compiled kernels under the output (worker/compiled.py): a fresh node's
    # first actor loads them instead of compiling cold
    share_compiled_kernels: bool = True

    def __post_init__(self) -> None:
        for name in ("clip_timeout_s", "hang_timeout_s", "encode_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"WorkerConfig.{name}={getattr(self, name)} must be > 0 seconds")
        if self.max_device_faults < 1:
            raise ValueError(f"WorkerConfig.max_device_faults={self.max_device_faults} must be >= 1")
        if self.clips_per_forward is not None and self.clips_per_forward < 1:
            raise ValueError(
                f"WorkerConfig.clips_per_forward={self.clips_per_forward} must be >= 1 (or None: automatic)"
            )
