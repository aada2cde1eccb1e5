"""The Ray side of a run: connect to the cluster or start an embedded local Ray, and size the actor pool."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import ray

from pipeline.driver.config import CPU_CPUS_PER_WORKER, CPU_WORKERS, GPU_CPUS_PER_WORKER, RenderConfig
from pipeline.spec.model import get_preset

logger = logging.getLogger("render")

REPO_ROOT = Path(__file__).resolve().parents[2]  # actors of an embedded Ray import this checkout


@dataclass(frozen=True)
class Resources:
    """How the actor pool is sized and what each actor asks Ray for."""

    workers: int
    num_gpus: int  # per actor: 1, or 0 on CPU-only machines
    num_cpus: float  # per actor, explicit: a GPU UDF's default of 1 CPU starves other tasks on small nodes


@contextlib.contextmanager
def ray_session(cfg: RenderConfig, clips: int) -> Iterator[Resources]:
    """Connect to the cluster ($RAY_ADDRESS, set by `ray job submit`, or --address) or start a local Ray.

    A local Ray gets more logical CPUs than its actors take, so nothing else starves, and
    PYTHONPATH pointing at this checkout so that actors import the same `pipeline`.
    """
    started = False
    if not ray.is_initialized():
        address = cfg.address or os.environ.get("RAY_ADDRESS") or None
        if address:
            ray.init(address=address, logging_level=logging.WARNING)
        else:
            workers = cfg.workers or CPU_WORKERS
            per_worker = cfg.cpus_per_worker or GPU_CPUS_PER_WORKER
            logical_cpus = max(os.cpu_count() or 1, int(workers * per_worker) + 2)
            os.environ["PYTHONPATH"] = os.pathsep.join(
                filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])
            )
            ray.init(
                address="local", num_cpus=logical_cpus, include_dashboard=False, logging_level=logging.WARNING
            )
            logger.info(
                "started an embedded local Ray (%d logical CPUs); pass --address to use a cluster",
                logical_cpus,
            )
        started = True
    try:
        resources = size_pool(cfg, ray.cluster_resources(), len(ray.nodes()), clips)
        yield resources
    finally:
        if started:
            ray.shutdown()


def size_pool(cfg: RenderConfig, cluster: dict[str, float], nodes: int, clips: int) -> Resources:
    """Actors (never more than clips) and their resources, from the options and the cluster now."""
    gpus = cfg.gpus if cfg.gpus is not None else int(cluster.get("GPU", 0))
    preset = get_preset(cfg.worker.model)
    if gpus == 0 and cfg.gpus is None and preset.needs_weights:
        raise ValueError(
            f"model {preset.name} needs GPUs but the cluster has none right now; pass --gpus N to wait for "
            "N GPU workers (autoscaling clusters start them on demand), or --gpus 0 to run on CPUs anyway"
        )
    if nodes > 1 and not cfg.worker.out.startswith("s3://"):
        raise ValueError(
            f"--out {cfg.worker.out} is a local folder but the cluster has {nodes} nodes: each would keep "
            "its own videos; pass --out s3://bucket/prefix"
        )
    if gpus > 0:
        return Resources(min(cfg.workers or gpus, clips), 1, cfg.cpus_per_worker or GPU_CPUS_PER_WORKER)
    return Resources(min(cfg.workers or CPU_WORKERS, clips), 0, cfg.cpus_per_worker or CPU_CPUS_PER_WORKER)
