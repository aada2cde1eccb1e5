"""pipeline/report/__main__.py: the report and `rank` on a local folder and on S3, and their errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from synthetic_run import RUN_ID, write_run

from pipeline.metrics import write_clip_metrics
from pipeline.report.__main__ import main
from pipeline.storage import OutputTarget
from pipeline.storage.local import LocalTarget
from pipeline.storage.s3 import S3Target

pytestmark = pytest.mark.slow


def out_args(target: OutputTarget) -> list[str]:
    """How a user names the target on the command line."""
    if isinstance(target, LocalTarget):
        return [str(target.root)]
    assert isinstance(target, S3Target) and target.settings.endpoint_url is not None
    return [target.uri, "--s3-endpoint-url", target.settings.endpoint_url, "--s3-addressing-style", "path"]


@pytest.fixture(scope="module")
def local_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "out"
    write_run(LocalTarget(out))
    return out


def test_the_report_is_one_self_contained_file(target: OutputTarget, tmp_path: Path) -> None:
    write_run(target)
    html = tmp_path / "report.html"

    assert main([*out_args(target), "--run-id", RUN_ID, "-o", str(html)]) == 0

    text = html.read_text()
    sources = re.findall(r'src="([^"]*)"', text)
    assert sources and all(
        src.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")) for src in sources
    )
    assert not re.search(r'(href|src)="(https?:)?//', text) and "<script" not in text and "<link" not in text
    assert (
        sum(src.startswith("data:image/jpeg") for src in sources) == 12 * 5 * 3
    )  # 12 signals x 5 x 3 frames
    for section in ("summary", "throughput", "failures", "signals", "policies"):
        assert f'<section id="{section}">' in text
    assert "pass --usd-per-gpu-hour" in text  # no price given: no made-up cost


def test_a_run_where_every_clip_failed_still_reports(tmp_path: Path) -> None:
    out = tmp_path / "out"
    target = LocalTarget(out)
    for row in write_run(target):
        if row["status"] == "failed":
            write_clip_metrics(target, row | {"run_id": "all-failed"})
    html = tmp_path / "report.html"

    assert main([str(out), "--run-id", "all-failed", "-o", str(html)]) == 0

    text = html.read_text()
    assert text.count("No ok clip has this signal measured.") == 12 and "EncodeError" in text
    assert "data:image/jpeg" not in text and "Signals by policy" not in text  # no ok clip to compare


@pytest.mark.parametrize(
    ("signal", "first"),
    [
        ("saturation_drift", "sat-sunset"),
        ("sharpness_drift", "blur-fog"),
        ("flicker_spikes", "flash-storm"),
        ("rollback", "loop-carousel"),
        ("motion_decay", "stop-train"),
        ("motion_level", "sat-sunset"),  # a hue gradient that only changes saturation: nothing to track
    ],
)
def test_rank_finds_the_clip_built_to_fail_on_each_signal(
    local_out: Path, capsys: pytest.CaptureFixture[str], signal: str, first: str
) -> None:
    assert main(["rank", str(local_out), "--by", signal, "--top", "3", "--json"]) == 0

    records = json.loads(capsys.readouterr().out)
    assert [r["rank"] for r in records] == [1, 2, 3] and records[0]["clip_id"] == first
    assert records[0]["signal"] == signal and len(records[0]["thumbnails"]) == 3
    assert records[0]["video_uri"] == str(local_out / "clips" / f"{first}.mp4")


def test_rank_prints_a_table_on_s3(target: OutputTarget, capsys: pytest.CaptureFixture[str]) -> None:
    write_run(target)

    assert main(["rank", *out_args(target), "--by", "rollback", "--top", "2"]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "rank",
        "rollback",
        "clip_id",
        "run_id",
        "cache_policy",
        "prompt",
        "video_uri",
    ]
    assert lines[1].split()[:3] == ["1", lines[1].split()[1], "loop-carousel"] and len(lines) == 3


def test_errors_name_what_is_wrong(local_out: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = local_out
    assert main([str(out), "--run-id", "run-nope", "-o", str(tmp_path / "r.html")]) == 2
    assert f"no metrics or run record for run(s) run-nope under {out}; its runs are: {RUN_ID}" in caplog.text
    assert main(["rank", str(tmp_path), "--by", "rollback"]) == 2
    assert f"no metrics under {tmp_path}" in caplog.text
    assert main([str(tmp_path / "missing"), "-o", str(tmp_path / "r.html")]) == 2
    assert "is not a folder" in caplog.text
    with pytest.raises(SystemExit) as exited:
        main(["rank", str(out), "--by", "drift"])
    assert exited.value.code == 2
    with pytest.raises(SystemExit):
        main(["rank", str(out), "--by", "rollback", "--top", "0"])
