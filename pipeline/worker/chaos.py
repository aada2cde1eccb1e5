"""Fault injection for drills and soak tests: a plan of faults that the worker meets at named points.

Set `RENDER_CHAOS` to a JSON list (the driver's environment reaches every actor of an embedded Ray;
on a cluster, pass it with `--runtime-env-json`), one object per fault:

    {"clip": "take-0*", "attempt": 1, "at": "chunk", "chunk": 2, "fault": "kill"}

- `clip`: a glob over clip ids; `attempt`: which attempt of the clip in its run (1 = the first try;
  absent: every attempt); `at`: "chunk" (after chunk `chunk` of the clip is generated) or "upload"
  (just before the video is stored);
- `fault`: "kill" (the process dies as an OOM killer would end it, SIGKILL), "hang" (the clip stops
  making progress, as a hung device does), "oom" (a CUDA out-of-memory error), "fatal" (a CUDA error
  after which the device is unusable), "error" (any other exception).

Nothing happens when `RENDER_CHAOS` is unset: every check is a lookup in an empty list.
"""

from __future__ import annotations

import fnmatch
import json
import os
import signal
import time
from dataclasses import dataclass

CHAOS_ENV = "RENDER_CHAOS"
POINTS = ("chunk", "upload")
FAULTS = ("kill", "hang", "oom", "fatal", "error")
HANG_S = 24 * 3600.0  # a hang outlasts any watchdog
# What the CUDA runtime says, so the worker tells recoverable from fatal faults as it does for real ones.
OOM_MESSAGE = "CUDA out of memory. Tried to allocate 2.00 GiB (injected by RENDER_CHAOS)"
FATAL_MESSAGE = "CUDA error: an illegal memory access was encountered (injected by RENDER_CHAOS)"


class InjectedFault(RuntimeError):
    """An exception a chaos plan asked for."""


@dataclass(frozen=True)
class Fault:
    clip: str
    at: str
    fault: str
    attempt: int | None = None
    chunk: int = 1

    def __post_init__(self) -> None:
        if self.at not in POINTS or self.fault not in FAULTS:
            raise ValueError(f"{CHAOS_ENV}: fault {self} needs at in {POINTS} and fault in {FAULTS}")


class ChaosPlan:
    def __init__(self, faults: list[Fault]):
        self.faults = faults

    @classmethod
    def from_environment(cls) -> ChaosPlan:
        text = os.environ.get(CHAOS_ENV)
        return cls([Fault(**item) for item in json.loads(text)] if text else [])

    def point(self, at: str, clip_id: str, attempt: int, chunk: int = 0) -> None:
        """Meet the faults planned for this point of this clip's attempt."""
        for fault in self.faults:
            if (
                fault.at == at
                and fnmatch.fnmatchcase(clip_id, fault.clip)
                and fault.attempt in (None, attempt)
                and (at != "chunk" or fault.chunk == chunk)
            ):
                _inflict(fault.fault)


def _inflict(fault: str) -> None:
    if fault == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif fault == "hang":
        time.sleep(HANG_S)
    elif fault == "oom":
        raise InjectedFault(OOM_MESSAGE)
    elif fault == "fatal":
        raise InjectedFault(FATAL_MESSAGE)
    else:
        raise InjectedFault(f"a fault injected by {CHAOS_ENV}")
