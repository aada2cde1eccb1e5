"""The README, run as written: the query examples (shell commands and the Python blocks, each against a
local output and against an S3 output on a loopback server, moto), and the install commands against
.ci/run and infra/Dockerfile. The `ray job submit` commands run in tests/jobs/test_render.py.

Only `--out` (and the path in `connect(...)`) changes; for S3 the endpoint comes from
$AWS_ENDPOINT_URL, which boto3, and so the query path, reads like any other AWS setting.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shlex

import numpy as np
import pandas as pd
import polars as pl
import pytest
from conftest import REPO_ROOT
from quality_videos import analyse, pan
from readme import code_blocks, commands, section
from test_metrics import T0, make_row, three_clips
from test_runs import make_record

from pipeline import query
from pipeline.metrics import write_clip_metrics
from pipeline.runs import write_run_record
from pipeline.storage import OutputTarget
from pipeline.storage.local import LocalTarget
from pipeline.worker.rows import quality_columns

QUERYING = section("Querying the metrics")


def a_run_and_a_forced_clip(target: OutputTarget) -> None:
    """Run 1: clip-a ok, clip-b failed, clip-c ok; run 2 renders clip-a again (--force); only run 2 has
    a run record (run 1 is from before records were written)."""
    three_clips(target, run_id="run-1")
    write_clip_metrics(target, make_row("clip-a", run_id="run-2", finished_at=T0 + dt.timedelta(hours=1)))
    write_run_record(target, make_record("run-2", clips=3, skipped=2, to_render=1, ok=1, failed=0, lost=0))


@pytest.fixture
def out(target: OutputTarget, request: pytest.FixtureRequest) -> str:
    """The target's --out, with metrics in it; for S3 the AWS chain points at moto."""
    a_run_and_a_forced_clip(target)
    return out_of(target, request)


def out_of(target: OutputTarget, request: pytest.FixtureRequest) -> str:
    """The target as a --out; for S3 the AWS chain points at moto (for this test only)."""
    if isinstance(target, LocalTarget):
        return str(target.root)
    monkeypatch = request.getfixturevalue("monkeypatch")
    monkeypatch.setenv("AWS_ENDPOINT_URL", request.getfixturevalue("s3_moto").endpoint_url)
    return target.uri


def test_the_readme_query_commands_run_as_written(out: str, capsys: pytest.CaptureFixture[str]) -> None:
    [block] = code_blocks(QUERYING, "sh")
    lines = commands(block)
    assert len(lines) == 3
    outputs = []
    for line in lines:
        argv = shlex.split(line)
        assert argv[:3] == ["python", "-m", "pipeline.query"]
        argv[argv.index("--out") + 1] = out
        assert query.main([*argv[3:], "--format", "csv"]) == query.EXIT_OK, line
        outputs.append(capsys.readouterr().out.splitlines())

    by_status, by_run, runs = outputs
    assert sorted(by_status[1:]) == ['"failed",1,2', '"ok",2,2']  # clip-a counted once though in 2 runs
    assert by_run[1:] == ['"run-1",3', '"run-2",1']
    assert runs == [
        '"run_id","exit_code","clips","skipped","ok","failed","lost","wall_s"',
        '"run-2",1,3,2,1,0,0,1200.5',
    ]


def test_the_readme_python_block_runs_as_written(out: str) -> None:
    [block] = code_blocks(QUERYING, "python")
    assert 'connect("renders")' in block
    scope: dict[str, object] = {}
    exec(block.replace('connect("renders")', f"connect({out!r})"), scope)

    drift, failed = scope["drift"], scope["failed"]
    assert isinstance(drift, pl.DataFrame) and drift.columns == ["cache_policy", "drift"]
    assert drift["cache_policy"].to_list() == ["deep-forcing"]
    assert isinstance(failed, pd.DataFrame)
    assert failed.to_dict("records") == [
        {"clip_id": "clip-b", "error_type": "RuntimeError", "error": make_row("b", "failed")["error"]}
    ]


STORYBOARDS = section("Storyboards")


def a_storyboard_that_freezes_then_cuts(target: OutputTarget) -> None:
    """A storyboard whose second segment freezes and whose third is a hard cut to another scene, its
    signals measured by the real meter; beside it rows of older versions: clip-a and clip-c (before v4:
    no segments) and a storyboard of v4/v5 (segments, no segment_signals), which polars' explode of
    both lists would refuse (their lengths differ) without the block's `IS NOT NULL`."""
    moving = pan(8, px_per_frame=2)
    frozen = np.repeat(moving[63:64], 64, axis=0)
    frames = np.concatenate([moving[:64], frozen, pan(4, px_per_frame=2, seed=7)])
    report = analyse(frames, switch_frames=[64, 128])
    prompts = ["a fox walks through snow", "the fox stops at a frozen lake", "northern lights"]
    segments = [
        {"prompt": prompt, "first_frame": first, "last_frame": first + 63}
        for prompt, first in zip(prompts, (0, 64, 128), strict=True)
    ]
    three_clips(target)
    write_clip_metrics(target, make_row("story-v5", segments=segments[:2], num_frames=128))
    row = make_row("story", segments=segments, num_frames=len(frames), **quality_columns(report))
    write_clip_metrics(target, row)


def test_the_readme_segment_query_runs_as_written(
    target: OutputTarget, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    a_storyboard_that_freezes_then_cuts(target)
    out = out_of(target, request)
    [block] = code_blocks(STORYBOARDS, "sh")
    [line] = commands(block)
    argv = shlex.split(line)
    assert argv[:3] == ["python", "-m", "pipeline.query"] and "unnest(segment_signals)" in argv[3]
    argv[argv.index("--out") + 1] = out

    assert query.main([*argv[3:], "--format", "json"]) == query.EXIT_OK
    found = [json.loads(text) for text in capsys.readouterr().out.splitlines()]

    # the frozen segment (no motion) and the cut into the third; the first segment is fine
    assert [(r["clip_id"], r["prompt"], r["first_frame"], r["switch_cut"]) for r in found] == [
        ("story", "the fox stops at a frozen lake", 64, False),
        ("story", "northern lights", 128, True),
    ]
    assert found[0]["moving_fraction"] == 0.0 and found[1]["switch_ratio"] > 3


def test_the_readme_segment_polars_block_runs_as_written(
    target: OutputTarget, request: pytest.FixtureRequest
) -> None:
    a_storyboard_that_freezes_then_cuts(target)
    out = out_of(target, request)
    [block] = code_blocks(STORYBOARDS, "python")
    assert 'connect("renders")' in block
    scope: dict[str, object] = {}
    exec(block.replace('connect("renders")', f"connect({out!r})"), scope)

    frozen, cuts = scope["frozen"], scope["cuts"]
    assert isinstance(frozen, pl.DataFrame) and isinstance(cuts, pl.DataFrame)
    assert frozen.select("prompt", "first_frame").rows() == [("the fox stops at a frozen lake", 64)]
    assert cuts.select("prompt", "first_frame").rows() == [("northern lights", 128)]


# ---------------------------------------------------------------------------------------------
# Installing: the README's commands, .ci/run and infra/Dockerfile agree
# ---------------------------------------------------------------------------------------------


def test_the_readme_test_command_is_what_ci_runs_and_torch_is_pinned_alike_everywhere() -> None:
    quickstart = section("Quickstart")
    ci_command = (REPO_ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert f"\n    {ci_command}\n" in quickstart

    dockerfile = (REPO_ROOT / "infra" / "Dockerfile").read_text()
    version = re.search(r"^ARG TORCH_VERSION=(\S+)$", dockerfile, re.MULTILINE)
    index = re.search(r"^ARG TORCH_INDEX_URL=(\S+)$", dockerfile, re.MULTILINE)
    assert version and index
    pins = set(re.findall(r"torch==(\S+?)[ `]", quickstart))
    assert pins == {version.group(1)}
    rows = [
        line for line in section("Installing torch").splitlines() if "(what `infra/Dockerfile` uses)" in line
    ]
    assert len(rows) == 1 and f"--index-url {index.group(1)}`" in rows[0]
    for url in re.findall(r"--index-url (\S+)`", quickstart):
        assert re.fullmatch(r"https://download\.pytorch\.org/whl/(cpu|cu\d{3})", url)
