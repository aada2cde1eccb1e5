"""What a clip's quality meter leaves beside its video: the thumbnails next to the mp4 and the clip's
rows of the per-second table; the metrics row gets the thumbnails' URIs."""

from __future__ import annotations

from typing import Any

from pipeline.metrics import JPEG_CONTENT_TYPE, thumbnail_key, write_clip_seconds
from pipeline.quality import ClipReport
from pipeline.storage import OutputTarget
from pipeline.worker.rows import second_rows


def store_quality_outputs(
    target: OutputTarget, run_id: str, clip_id: str, attempt: int, quality: ClipReport | None
) -> dict[str, Any]:
    """Upload the thumbnails and write the per-second rows; returns the row's thumb_*_uri columns."""
    if quality is None:
        return {}
    columns = {}
    for position, jpeg in quality.thumbnails.items():
        stored = target.put_bytes(jpeg, thumbnail_key(clip_id, position), JPEG_CONTENT_TYPE)
        columns[f"thumb_{position}_uri"] = stored.uri
    write_clip_seconds(target, second_rows(run_id, clip_id, attempt, quality))
    return columns
