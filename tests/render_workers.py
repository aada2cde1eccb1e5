"""Render workers on the CPU for tests: a factory that closes what it made, and Ray Data's batches."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.spec.clip import ClipSpec
from pipeline.worker import RenderWorker, WorkerConfig

WorkerFactory = Callable[..., RenderWorker]


@contextlib.contextmanager
def worker_factory(tmp_path: Path, run_id: str) -> Iterator[WorkerFactory]:
    """Workers writing under `tmp_path / "out"` for `run_id` (any WorkerConfig field overridden); all
    closed at the end."""
    workers: list[RenderWorker] = []

    def factory(**overrides: Any) -> RenderWorker:
        fields = {"out": str(tmp_path / "out"), "run_id": run_id, "tmp_dir": str(tmp_path), **overrides}
        workers.append(RenderWorker(WorkerConfig(**fields)))
        return workers[-1]

    try:
        yield factory
    finally:
        for worker in workers:
            worker.close()


def batch_of(*clips: ClipSpec) -> dict[str, np.ndarray]:
    """The numpy batch Ray Data hands to map_batches for these rows."""
    return {"clip": np.array([clip.to_bytes() for clip in clips], dtype=object)}
