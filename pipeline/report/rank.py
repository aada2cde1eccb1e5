"""The clips worst on one signal: most drifting, least dynamic, most flickering, as records and a table."""

from __future__ import annotations

from typing import Any

from pipeline.quality import Signal
from pipeline.report.data import Row

PROMPT_CHARS = 60  # prompt shown per line of the text table


def worst(rows: list[Row], signal: Signal, top: int) -> list[Row]:
    """The `top` ok clips with the signal measured, worst first (ties by run and clip id)."""
    measured = [row for row in rows if row["status"] == "ok" and row[signal.name] is not None]
    measured.sort(key=lambda row: (-signal.badness(row[signal.name]), row["run_id"], row["clip_id"]))
    return measured[:top]


def records(rows: list[Row], signal: Signal, top: int) -> list[dict[str, Any]]:
    """JSON-ready: rank, the signal's value, and what finds the clip (ids, prompt, video, thumbnails)."""
    return [
        {
            "rank": rank,
            "signal": signal.name,
            "value": row[signal.name],
            "run_id": row["run_id"],
            "clip_id": row["clip_id"],
            "cache_policy": row["cache_policy"],
            "prompt": row["prompt"],
            "video_uri": row["video_uri"],
            "thumbnails": [
                row[f"thumb_{p}_uri"] for p in ("first", "middle", "last") if row[f"thumb_{p}_uri"]
            ],
        }
        for rank, row in enumerate(worst(rows, signal, top), start=1)
    ]


def table(ranked: list[dict[str, Any]], signal: Signal) -> str:
    """A fixed-width text table of `records` output."""
    header = ["rank", signal.name, "clip_id", "run_id", "cache_policy", "prompt", "video_uri"]
    lines = [
        [
            str(r["rank"]),
            f"{r['value']:.4g}",
            r["clip_id"],
            r["run_id"],
            r["cache_policy"],
            _shorten(r["prompt"]),
            r["video_uri"] or "",
        ]
        for r in ranked
    ]
    widths = [max(len(cells[i]) for cells in [header, *lines]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True)).rstrip()
        for cells in [header, *lines]
    )


def _shorten(prompt: str) -> str:
    flat = " ".join(prompt.split())
    return flat if len(flat) <= PROMPT_CHARS else flat[: PROMPT_CHARS - 3] + "..."
