"""When a clip breaks the device: per-clip fault records on the output target, a hang watchdog, and the
exit that makes Ray restart the actor.

A device that stops making progress (no chunk for `hang_timeout_s`; a CUDA call that never returns
cannot be interrupted from Python) or a fatal CUDA error (the context is unusable afterwards) ends the
process with `os._exit(1)`: Ray restarts the actor and retries its in-flight clips (actor pools run
with max_restarts=-1, max_task_retries=-1). So that a clip which breaks the device every time does not
loop forever, each fault is counted first in `attempts/run_id=<run>/<clip_id>.json`; a clip with
`max_device_faults` faults comes back as a failed row without running again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

from pipeline.storage import OutputTarget

logger = logging.getLogger(__name__)

FAULT_RECORD_TIMEOUT_S = 30.0  # how long a dying actor tries to record the fault before exiting anyway
# Messages of CUDA errors after which the context is unusable: the process must go (Ray PR #60145).
FATAL_CUDA_ERRORS = (
    "illegal memory access",
    "unspecified launch failure",
    "device-side assert",
    "misaligned address",
    "uncorrectable ECC error",
)


class ClipTimeoutError(RuntimeError):
    """The clip ran past its deadline (checked between chunks)."""


class DeviceFaultError(RuntimeError):
    """The clip broke the device too often (hangs, fatal CUDA errors); it is not tried again this run."""


def is_fatal_device_error(exc: BaseException) -> bool:
    text = str(exc)
    return isinstance(exc, RuntimeError) and "CUDA" in text and any(m in text for m in FATAL_CUDA_ERRORS)


# ---------------------------------------------------------------------------------------------
# 1. Fault records: how often a clip was started, and how often it took the device down
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaultRecord:
    attempts: int = 0  # generations started in this run (the metrics `attempt` column)
    device_faults: int = 0  # hangs and fatal CUDA errors while this clip was on the device
    last_fault: str = ""

    def next_attempt(self) -> FaultRecord:
        return dataclasses.replace(self, attempts=self.attempts + 1)

    def with_fault(self, reason: str) -> FaultRecord:
        return dataclasses.replace(self, device_faults=self.device_faults + 1, last_fault=reason[:500])


def fault_record_key(run_id: str, clip_id: str) -> str:
    return f"attempts/run_id={run_id}/{clip_id}.json"


def started_clip_ids(target: OutputTarget, run_id: str) -> set[str]:
    """Clips whose first attempt in this run has begun (each gets its record as it starts generating)."""
    prefix = f"attempts/run_id={run_id}/"
    return {key.removeprefix(prefix).removesuffix(".json") for key in target.list_keys(prefix)}


def read_fault_record(target: OutputTarget, run_id: str, clip_id: str) -> FaultRecord:
    try:
        data = json.loads(target.read_bytes(fault_record_key(run_id, clip_id)))
    except FileNotFoundError:
        return FaultRecord()
    return FaultRecord(data["attempts"], data["device_faults"], data.get("last_fault", ""))


def write_fault_record(target: OutputTarget, run_id: str, clip_id: str, record: FaultRecord) -> None:
    body = json.dumps(dataclasses.asdict(record), sort_keys=True).encode()
    target.put_bytes(body, fault_record_key(run_id, clip_id), "application/json")


def exit_for_restart(
    target: OutputTarget, run_id: str, clips: Sequence[tuple[str, FaultRecord | None]], reason: str
) -> NoReturn:
    """Count the fault on each clip that was on the device (those whose attempt was recorded), then end
    the process so that Ray restarts the actor.

    Clips that shared forwards all count it: which of them broke the device cannot be told, and each then
    renders alone (`groups.plan_groups`), so only the culprit meets `max_device_faults`."""
    names = ", ".join(clip_id for clip_id, _ in clips)
    logger.critical("clip(s) %s: %s; ending this worker so that Ray restarts it", names, reason)
    writers = [
        threading.Thread(
            target=write_fault_record,
            args=(target, run_id, clip_id, started.with_fault(reason)),
            daemon=True,
        )
        for clip_id, started in clips
        if started is not None
    ]
    for writer in writers:
        writer.start()
    deadline = time.monotonic() + FAULT_RECORD_TIMEOUT_S  # a store that hangs too must not keep us alive
    for writer in writers:
        writer.join(max(0.0, deadline - time.monotonic()))
    for handler in [*logging.getLogger().handlers, *logging.getLogger("pipeline").handlers]:
        handler.flush()
    os._exit(1)


# ---------------------------------------------------------------------------------------------
# 2. Hang watchdog
# ---------------------------------------------------------------------------------------------


class HangWatchdog:
    """Calls `on_hang(clip_id, silent_s)` from its own thread when the current clip misses `timeout_s`
    of heartbeats.

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
