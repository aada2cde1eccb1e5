"""Claims: which run renders a clip now, so that two runs on one output never render it twice.

A worker claims `claims/<clip_id>.json` on the output target before it renders the clip, with a
conditional write (the object must not exist yet, or must still be the version it read, so of two
racing workers exactly one wins), refreshes the claim's heartbeat while the clip renders, and marks it
ok or failed when the clip is done. A worker of another run then leaves the clip alone while

- the claim is `rendering` and its heartbeat is fresh (that run is alive and on it), or
- the claim is `ok` and was written after this run planned (the clip was done meanwhile);

otherwise it takes the claim over: a claim whose heartbeat is older than CLAIM_TTL_S belongs to a run
that died, a failed clip may be tried again, and a rerun of the same run (same run id, or Ray retrying
a clip whose actor died) continues where it was.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from pipeline.storage import OutputTarget

logger = logging.getLogger(__name__)

CLAIM_TTL_S = 900.0  # a rendering claim not refreshed for this long belongs to a run that died
HEARTBEAT_S = 60.0  # how often a rendering clip refreshes its claim (every chunk checks if it is due)
CLAIM_CONTENT_TYPE = "application/json"
MAX_TRIES = 5  # conditional writes lost to other writers before giving the clip up for now


@dataclass(frozen=True)
class Claim:
    run_id: str
    state: str  # "rendering", "ok" or "failed"
    heartbeat_at: float  # unix time of the last write
    host: str
    pid: int


def claim_key(clip_id: str) -> str:
    return f"claims/{clip_id}.json"


class ClipClaims:
    """This run's claims on one output target (one per worker)."""

    def __init__(
        self,
        target: OutputTarget,
        run_id: str,
        planned_at: float,
        force: bool = False,
        clock: Callable[[], float] = time.time,
    ):
        self.target = target
        self.run_id = run_id
        self.planned_at = planned_at  # when this run's driver decided what to render (unix time)
        self.force = force  # --force: clips done by other runs are rendered again
        self.clock = clock
        self._held: dict[str, tuple[str, float]] = {}  # clip -> (version we wrote, when)

    def acquire(self, clip_id: str) -> str | None:
        """Claim the clip for this run: None when it is ours, else why another run has it."""
        key = claim_key(clip_id)
        for _ in range(MAX_TRIES):
            try:
                data, version = self.target.read_versioned(key)
            except FileNotFoundError:
                current, version = None, None
            else:
                current = Claim(**json.loads(data))
            if current is not None and (reason := self._reason_to_leave(current)):
                return reason
            if self._write(clip_id, "rendering", version):
                return None
        return f"other workers kept changing its claim ({MAX_TRIES} tries); a rerun tries it again"

    def finished_in_this_plan(self, clip_id: str) -> bool:
        """Whether another process of this run marked the clip done (ok or failed) after its driver
        planned: Ray retrying a call whose process died after the clip was done. A clip that a stopped run
        failed is tried again by the next invocation of that run (it plans later), and a process asked
        again renders again."""
        try:
            data, _ = self.target.read_versioned(claim_key(clip_id))
        except FileNotFoundError:
            return False
        claim = Claim(**json.loads(data))
        done = claim.state in ("ok", "failed") and claim.heartbeat_at >= self.planned_at
        other_process = (claim.host, claim.pid) != (socket.gethostname(), os.getpid())
        return claim.run_id == self.run_id and done and other_process

    def refresh(self, clip_id: str) -> None:
        """Renew the heartbeat of a clip this run renders, when it is due."""
        version, written_at = self._held[clip_id]
        if self.clock() - written_at >= HEARTBEAT_S and not self._write(clip_id, "rendering", version):
            logger.warning("clip %s: another run took over its claim while this run rendered it", clip_id)

    def release(self, clip_id: str, state: str) -> None:
        """Mark the clip done ("ok") or given up ("failed") by this run."""
        version, _ = self._held[clip_id]
        if not self._write(clip_id, state, version):
            logger.warning("clip %s: its claim changed hands before it was marked %s", clip_id, state)
        del self._held[clip_id]

    def _reason_to_leave(self, claim: Claim) -> str | None:
        if claim.run_id == self.run_id:
            return None
        age = self.clock() - claim.heartbeat_at
        if claim.state == "rendering" and age < CLAIM_TTL_S:
            return f"run {claim.run_id} renders it (on {claim.host}, heartbeat {age:.0f} s ago)"
        if claim.state == "ok" and claim.heartbeat_at >= self.planned_at and not self.force:
            return f"run {claim.run_id} rendered it after this run started"
        return None

    def _write(self, clip_id: str, state: str, version: str | None) -> bool:
        now = self.clock()
        claim = Claim(self.run_id, state, now, socket.gethostname(), os.getpid())
        written = self.target.put_bytes_if(
            json.dumps(asdict(claim)).encode(), claim_key(clip_id), CLAIM_CONTENT_TYPE, version
        )
        if written is None:
            return False
        self._held[clip_id] = (written, now)
        return True
