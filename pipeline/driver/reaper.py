"""`python -m pipeline.driver.reaper <driver pid> <ray package dir>`: end an embedded Ray with its driver.

Ray ends the GCS and the raylet with the driver that started them, but its dashboard and runtime-env
agents outlive a driver that was killed: they notice, then wait a minute on a call to the dead GCS,
listening all the while. The driver starts this watcher beside the Ray it embeds. While the driver
lives, the watcher notes the Ray processes among its descendants (by name, or by a command line in the
Ray package); when the driver is gone, or tells the watcher to stop with SIGTERM after
`ray.shutdown()`, it kills those that are still running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

import psutil

POLL_S = 0.5
RAY_BINARIES = ("gcs_server", "raylet")
RAY_TITLE = "ray::"  # Ray's workers and agents rename themselves ray::IDLE, ray::DashboardAgent, ...


def is_ray(process: psutil.Process, ray_dir: str) -> bool:
    name = process.name()
    return (
        name in RAY_BINARIES or name.startswith(RAY_TITLE) or any(ray_dir in arg for arg in process.cmdline())
    )


def ray_descendants(driver: psutil.Process, ray_dir: str) -> dict[int, float]:
    """{pid: start time} of the driver's descendants that are Ray's."""
    found = {}
    for child in driver.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if child.pid != os.getpid() and is_ray(child, ray_dir):  # the watcher is the driver's child too
                found[child.pid] = child.create_time()
    return found


def reap(known: dict[int, float]) -> None:
    """Kill the noted processes that still run (a pid reused by another process is left alone)."""
    for pid, started in known.items():
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(pid)
            if process.create_time() == started:
                process.kill()


def watch(driver_pid: int, ray_dir: str) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    known: dict[int, float] = {}
    with contextlib.suppress(psutil.Error):  # the driver gone: reap what was noted so far
        driver = psutil.Process(driver_pid)
        while not stop.is_set() and driver.status() != psutil.STATUS_ZOMBIE:
            known.update(ray_descendants(driver, ray_dir))
            stop.wait(POLL_S)
    reap(known)


if __name__ == "__main__":
    watch(int(sys.argv[1]), sys.argv[2])
