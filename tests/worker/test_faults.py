"""pipeline/worker/faults.py: fault records on a real target, the hang watchdog, fatal CUDA errors."""

import threading
import time

import pytest

from pipeline.storage import OutputTarget
from pipeline.worker.faults import (
    FaultRecord,
    HangWatchdog,
    fault_record_key,
    is_fatal_device_error,
    read_fault_record,
    write_fault_record,
)


def test_a_fault_record_round_trips_and_a_missing_one_reads_as_none_yet(target: OutputTarget) -> None:
    assert read_fault_record(target, "run-1", "fox") == FaultRecord()
    record = FaultRecord().next_attempt().with_fault("no frames for 901 s" + "!" * 600)
    write_fault_record(target, "run-1", "fox", record)
    assert read_fault_record(target, "run-1", "fox") == record == FaultRecord(1, 1, record.last_fault)
    assert len(record.last_fault) == 500
    assert (
        target.list_keys("attempts/")
        == [fault_record_key("run-1", "fox")]
        == ["attempts/run_id=run-1/fox.json"]
    )


def test_the_watchdog_fires_once_for_a_silent_clip_and_never_for_a_beating_or_finished_one() -> None:
    fired: list[tuple[str, float]] = []
    done = threading.Event()

    def on_hang(clip_id: str, silent_s: float) -> None:
        fired.append((clip_id, silent_s))
        done.set()

    watchdog = HangWatchdog(0.2, on_hang)
    try:
        watchdog.watch("beating")
        for _ in range(6):
            time.sleep(0.1)
            watchdog.beat()
        watchdog.clear()
        time.sleep(0.4)  # nothing watched between clips
        assert fired == []
        watchdog.watch("silent")
        assert done.wait(5)
        assert [clip for clip, _ in fired] == ["silent"] and fired[0][1] > 0.2
    finally:
        watchdog.close()


@pytest.mark.parametrize(
    ("error", "fatal"),
    [
        (RuntimeError("CUDA error: an illegal memory access was encountered"), True),
        (RuntimeError("CUDA error: device-side assert triggered"), True),
        (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), False),
        (ValueError("an illegal memory access"), False),
    ],
)
def test_only_cuda_errors_that_leave_the_context_unusable_are_fatal(error: Exception, fatal: bool) -> None:
    assert is_fatal_device_error(error) is fatal
