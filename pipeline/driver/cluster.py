"""The Ray side of a run: connect to the cluster or start an embedded local Ray, size the actor pool and
settle what the actors are told."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.driver.config import CPU_CPUS_PER_WORKER, CPU_WORKERS, GPU_CPUS_PER_WORKER, RenderConfig
from pipeline.spec.clip import ClipSpec
from pipeline.spec.model import get_preset
from pipeline.worker.chaos import CHAOS_ENV
from pipeline.worker.config import (
    FULL_CONV_SEARCH_SAVING_S_PER_CHUNK,
    FULL_CONV_SEARCH_WARMUP_S,
    MAX_AUTO_CLIPS_PER_FORWARD,
    WorkerConfig,
)

logger = logging.getLogger("render")

REPO_ROOT = Path(__file__).resolve().parents[2]  # actors of an embedded Ray import this checkout
LOCAL_ONLY_ENV_VAR = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
LOCAL_ONLY_ENV = {LOCAL_ONLY_ENV_VAR: "0"}  # an embedded Ray binds loopback only (see local_ray)
REAPER_EXIT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Resources:
    """How the actor pool is sized and what each actor asks Ray for."""

    workers: int
    num_gpus: int  # per actor: 1, or 0 on CPU-only machines
    num_cpus: float  # per actor, explicit: a GPU UDF's default of 1 CPU starves other tasks on small nodes


def clips_per_batch(cfg: RenderConfig, resources: Resources, clips: int) -> int:
    """Ray Data's batch size: the clips a worker may render as one group (worker/groups.py).

    --clips-per-forward N gives N; auto gives MAX_AUTO_CLIPS_PER_FORWARD on GPUs (each worker groups
    only as many as its free memory holds) and 1 on CPUs. Never so many that a worker sits idle while
    another holds clips: at most the clips per worker, rounded up.
    """
    wanted = cfg.worker.clips_per_forward
    if wanted is None:
        wanted = MAX_AUTO_CLIPS_PER_FORWARD if resources.num_gpus else 1
    return max(1, min(wanted, -(-clips // resources.workers)))


def worker_config(cfg: RenderConfig, resources: Resources, todo: Sequence[ClipSpec]) -> WorkerConfig:
    """The workers' settings for these clips: `cfg.worker`, with --conv-search resolved.

    auto searches fully when a worker's share of the planned chunks saves more decode time than the
    search adds to its warm-up (both measured, pipeline/worker/config.py).
    """
    if cfg.conv_search == "auto":
        chunks = sum(clip.num_latent_frames // cfg.defaults.preset.chunk_frames for clip in todo)
        saving_s = chunks / resources.workers * FULL_CONV_SEARCH_SAVING_S_PER_CHUNK
        full = saving_s > FULL_CONV_SEARCH_WARMUP_S
    else:
        full = cfg.conv_search == "full"
    return dataclasses.replace(cfg.worker, search_all_conv_algorithms=full)


@contextlib.contextmanager
def ray_session(cfg: RenderConfig, clips: int) -> Iterator[Resources]:
    """Connect to the cluster ($RAY_ADDRESS, set by `ray job submit`, or --address) or start a local Ray.

    A local Ray gets more logical CPUs than its actors take, so nothing else starves.
    """
    address = cfg.address or os.environ.get("RAY_ADDRESS") or None
    if not address:
        os.environ.update(LOCAL_ONLY_ENV)  # before Ray's first import in this process (local_ray)
    import ray

    if ray.is_initialized():  # a caller's own Ray (tests, notebooks): theirs to shut down
        yield size_pool(cfg, ray.cluster_resources(), len(ray.nodes()), clips)
    elif address:
        ray.init(address=address, logging_level=logging.WARNING)
        try:
            yield size_pool(cfg, ray.cluster_resources(), len(ray.nodes()), clips)
        finally:
            ray.shutdown()
    else:
        workers = cfg.workers or CPU_WORKERS
        per_worker = cfg.cpus_per_worker or GPU_CPUS_PER_WORKER
        with local_ray(max(os.cpu_count() or 1, int(workers * per_worker) + 2)):
            yield size_pool(cfg, ray.cluster_resources(), len(ray.nodes()), clips)


@contextlib.contextmanager
def local_ray(num_cpus: int, num_gpus: int | None = None) -> Iterator[None]:
    """An embedded Ray for this machine alone: it listens on loopback only, keeps Ray's token
    authentication (on by default for local clusters), imports this checkout in its actors, and
    does not outlive the driver (reaper.py).

    Loopback only is Ray's own switch for single-machine nodes (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`,
    the default on macOS and Windows); Ray reads it when it is imported, so it must be in the
    environment before `import ray` (LOCAL_ONLY_ENV, also set by the tests' conftest).
    """
    import ray

    if os.environ.get(LOCAL_ONLY_ENV_VAR) != "0":
        logger.warning(
            "%s=0 was not set before Ray was imported: the embedded Ray may listen on every interface",
            LOCAL_ONLY_ENV_VAR,
        )
    reaper = subprocess.Popen(
        [sys.executable, "-m", "pipeline.driver.reaper", str(os.getpid()), str(Path(ray.__file__).parent)],
        env={**os.environ, "PYTHONPATH": _python_path()},
        start_new_session=True,  # a Ctrl-C to the driver's group must not take the watcher along
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.environ["PYTHONPATH"] = _python_path()  # actors import the same `pipeline` as the driver
    try:
        ray.init(
            address="local",
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            include_dashboard=False,
            logging_level=logging.WARNING,
        )
        logger.info(
            "started an embedded local Ray on loopback (%d logical CPUs); pass --address to use a cluster",
            num_cpus,
        )
        yield
    finally:
        ray.shutdown()
        reaper.terminate()  # it ends what ray.shutdown() left behind, then exits
        reaper.wait(timeout=REAPER_EXIT_TIMEOUT_S)


def actor_runtime_env() -> dict[str, Any] | None:
    """The Ray runtime env of the render actors: a fault-injection plan in the driver's environment
    (worker/chaos.py) reaches them on any cluster; otherwise nothing is added."""
    if CHAOS_ENV not in os.environ:
        return None
    return {"env_vars": {CHAOS_ENV: os.environ[CHAOS_ENV]}}


def _python_path() -> str:
    return os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))


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
