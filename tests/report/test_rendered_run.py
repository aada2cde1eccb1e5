"""The report of a real render: the tiny model renders clips under three cache policies with the real
worker (ffmpeg, the quality meter, a local folder), then `python -m pipeline.report` reads it back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.metrics import compact_run, read_metrics, read_seconds
from pipeline.prompts import RenderDefaults, parse_line
from pipeline.spec.model import get_preset
from pipeline.storage import open_target
from pipeline.worker import RenderWorker, WorkerConfig

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
RUN_ID = "rendered"


def test_a_rendered_run_reports_every_clip_with_its_frames(tmp_path: Path) -> None:
    out = tmp_path / "out"
    defaults = RenderDefaults(get_preset("tiny"), latent_frames=9)
    lines = [
        {"id": "heron", "prompt": "a heron wades in the shallows", "cache_policy": "deep-forcing"},
        {"id": "kite", "prompt": "a kite over the dunes", "cache_policy": "fifo"},
        {"id": "boat", "prompt": "a paper boat on a puddle", "cache_policy": "sink"},
    ]
    worker = RenderWorker(WorkerConfig(out=str(out), run_id=RUN_ID, tmp_dir=str(tmp_path)))
    try:
        clips = [parse_line(json.dumps(line), i, defaults) for i, line in enumerate(lines, start=1)]
        batch = np.array([clip.to_bytes() for clip in clips], dtype=object)
        rows = worker({"clip": batch}).to_pylist()  # the batch Ray Data hands to map_batches
    finally:
        worker.close()
    assert [row["status"] for row in rows] == ["ok"] * 3
    target = open_target(str(out))
    compact_run(target, RUN_ID)  # as the driver does at the end of a run
    assert read_metrics(target).num_rows == 3 and read_seconds(target).num_rows == 3 * 3  # 33 frames: 3 s

    html = tmp_path / "report.html"
    report = [sys.executable, "-m", "pipeline.report", str(out), "-o", str(html), "--worst", "3"]
    done = subprocess.run(report, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    text = html.read_text()
    assert text.count("data:image/jpeg;base64,") == 12 * 3 * 3  # every signal: 3 clips x 3 frames
    assert all(f"<code>{clip}</code>" in text for clip in ("heron", "kite", "boat"))
    assert "Signals by policy" in text  # three policies: compared

    rank = [sys.executable, "-m", "pipeline.report", "rank", str(out), "--by", "motion_level", "--json"]
    ranked = json.loads(subprocess.run(rank, cwd=ROOT, capture_output=True, text=True, check=True).stdout)
    assert sorted(r["clip_id"] for r in ranked) == ["boat", "heron", "kite"]
    levels = [r["value"] for r in ranked]
    assert levels == sorted(levels)  # least motion first
