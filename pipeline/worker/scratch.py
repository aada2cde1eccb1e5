"""The worker's scratch folder, where each mp4 is written before its upload.

Ray ends actors without running their cleanup, and one killed mid-clip leaves a partial mp4 behind, so a
new worker removes the folders of processes that are gone.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def make_scratch_dir(root: str | None) -> Path:
    """A fresh `render-<pid>-*` folder under `root` (default: the system temp folder)."""
    parent = Path(root or tempfile.gettempdir())
    for folder in parent.glob("render-*-*"):
        pid = folder.name.split("-")[1]
        if pid.isdigit() and not _process_exists(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"render-{os.getpid()}-", dir=parent))


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
