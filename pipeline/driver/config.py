"""What one run of the driver does: prompt file, run-wide clip defaults, the worker's settings, cluster."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.prompts import RenderDefaults
from pipeline.worker import WorkerConfig

GPU_CPUS_PER_WORKER = 4  # x264 threads + upload + the Python loop beside each GPU (docs/ecosystem.md §5.2)
CPU_CPUS_PER_WORKER = 1  # a CPU-only actor: torch runs on this many threads
CPU_WORKERS = 2  # default actors on a machine without GPUs


@dataclass(frozen=True)
class RenderConfig:
    prompts: str  # prompt file: local path or s3:// URI
    defaults: RenderDefaults  # run-wide values for fields a line leaves out
    worker: WorkerConfig  # everything a RenderWorker needs (output, model, encoder, timeouts)
    force: bool = False  # render clips that are already done
    skip_invalid: bool = False  # render the valid lines of a file with invalid ones
    dry_run: bool = False  # check everything and print the plan, render nothing
    address: str | None = None  # Ray cluster; None: $RAY_ADDRESS, else an embedded local Ray
    workers: int | None = None  # actors; None: one per GPU, or CPU_WORKERS without GPUs
    gpus: int | None = None  # GPUs to use; None: those the cluster has now (autoscaling: pass it)
    cpus_per_worker: float | None = None  # None: GPU_CPUS_PER_WORKER, or CPU_CPUS_PER_WORKER without GPUs
    no_progress_timeout_s: float | None = None  # Ray Data gives up after this long without a clip
    progress_interval_s: float = 60.0  # a heartbeat line when no clip finished for this long
    log_level: str = "INFO"
    # "full": cuDNN times every algorithm of the VAE's full-resolution convs; "quick": PyTorch's default;
    # "auto": full where a worker's share of the run pays its warm-up back (pipeline/worker/config.py)
    conv_search: str = "auto"

    @property
    def run_id(self) -> str:
        return self.worker.run_id
