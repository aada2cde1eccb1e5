"""The render worker: a Ray Data actor that renders clips end to end.

    actor.py     RenderWorker: load once, then per clip generate -> encode -> upload -> metrics row
    config.py    WorkerConfig: output, model, encoder, timeouts
    faults.py    fault records, the hang watchdog, the exit that makes Ray restart the actor
    rows.py      the metrics row of a clip, column group by column group
    scratch.py   the local folder where mp4s wait for their upload

Importing this package does not import torch: the model stack loads inside the actor.
"""

from pipeline.worker.actor import RenderWorker
from pipeline.worker.config import WorkerConfig

__all__ = ["RenderWorker", "WorkerConfig"]
