"""Ray Data's settings for a render, chosen so that a successful run prints no Ray warnings.

Progress bars off: the driver shows its own (driver/progress.py). Ray Data then warns that they are
off, once per process; that notice is dropped here and nothing else from its logger. (ClipSpecs travel
as bytes, spec/clip.py `to_bytes`, so Ray Data has no Python objects to warn about.)

One line stays, from Ray's C++ core worker, at ERROR level although nothing is wrong: "Actor with class
name: 'MapWorker(MapBatches(RenderWorker))' ... has constructor arguments in the object store and
max_restarts > 0". Ray Data always passes its actors' arguments through the object store, and our
actors must be restartable (worker/faults.py); the line cannot be filtered without silencing every
core-worker error, so the README explains it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Ray is imported once the session is set up (driver/cluster.py)
    from ray.data import DataContext

PROGRESS_BARS_OFF_NOTICE = "Progress bars disabled."
_RAY_DATA_PROGRESS_LOGGER = "ray.data._internal.progress"


class _DropProgressBarsOffNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(PROGRESS_BARS_OFF_NOTICE)


_FILTER = _DropProgressBarsOffNotice()


def configure_ray_data(context: DataContext) -> None:
    """Progress bars off, and the notice about them dropped."""
    context.enable_progress_bars = False
    logging.getLogger(_RAY_DATA_PROGRESS_LOGGER).addFilter(_FILTER)  # the same filter once: a no-op again
