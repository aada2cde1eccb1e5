"""pipeline/worker/scratch.py: a new worker's scratch folder, and the leftovers of killed workers."""

import os
from pathlib import Path

from pipeline.worker.scratch import make_scratch_dir


def test_a_new_scratch_folder_removes_those_of_workers_that_were_killed(tmp_path: Path) -> None:
    dead = tmp_path / "render-4294967-x1"  # above Linux's pid_max: no such process
    dead.mkdir()
    (dead / "partial.mp4").write_bytes(b"half a clip")
    alive = tmp_path / f"render-{os.getpid()}-x2"
    alive.mkdir()
    unrelated = tmp_path / "render-notes"
    unrelated.mkdir()

    scratch = make_scratch_dir(str(tmp_path))

    assert not dead.exists() and alive.exists() and unrelated.exists()
    assert scratch.parent == tmp_path and scratch.name.startswith(f"render-{os.getpid()}-")
    assert list(scratch.iterdir()) == []
