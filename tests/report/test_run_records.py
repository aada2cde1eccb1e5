"""The run summary of real runs, from their run records: the driver renders a prompt file on a local Ray
(fake GPUs, the tiny model) into a folder, then renders it again into the same folder, which skips
every clip; the report counts the skipped clips, and a run from before records were written shows them
as unknown. Opened in a real headless Chromium."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from browser import visit
from conftest import render_module
from synthetic_run import RUN_ID, write_run

from pipeline.report.__main__ import main as report
from pipeline.runs import read_run_record
from pipeline.storage import open_target
from pipeline.storage.local import LocalTarget

# The driver runs in this process, with its embedded Ray: with the other tests that start Ray (conftest)
pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.xdist_group("ray"),
]

render = render_module()
CLIPS = 3
RUN_ARGS = ["--latent-frames", "3", "--cpus-per-worker", "1", "--progress-interval", "600"]


@pytest.fixture(scope="module")
def rendered_twice(ray_local: dict[str, float], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The --out of run `first` (renders every clip) and run `again` (the same command: skips them)."""
    folder = tmp_path_factory.mktemp("twice")
    prompts = folder / "prompts.jsonl"
    lines = [json.dumps({"prompt": f"a paper boat, take {i}", "id": f"boat-{i}"}) for i in range(CLIPS)]
    prompts.write_text("\n".join(lines) + "\n\n")  # a blank last line: counted, not a clip
    out = folder / "out"
    for run_id in ("first", "again"):
        args = [str(prompts), "--out", str(out), "--run-id", run_id, *RUN_ARGS]
        assert render.main(args) == render.EXIT_OK
    return out


def test_the_second_run_records_every_clip_as_skipped(rendered_twice: Path) -> None:
    target = open_target(str(rendered_twice))
    first, again = read_run_record(target, "first"), read_run_record(target, "again")
    assert first is not None and again is not None
    assert (first.prompt_lines, first.clips, first.skipped, first.to_render, first.ok) == (4, CLIPS, 0, 3, 3)
    assert (first.failed, first.held, first.lost, first.exit_code, first.workers) == (0, 0, 0, 0, 2)
    assert (again.clips, again.skipped, again.resumed, again.to_render, again.ok) == (CLIPS, CLIPS, 0, 0, 0)
    assert (again.exit_code, again.workers, again.model, again.cache_policy) == (0, 0, "tiny", "deep-forcing")
    assert again.prompts.endswith("prompts.jsonl") and first.finished_at <= again.started_at
    assert 0 < again.wall_s < first.wall_s


def test_the_report_shows_the_skipped_clips_in_its_run_summary(
    rendered_twice: Path, chromium_bin: str, tmp_path: Path
) -> None:
    html = tmp_path / "report.html"
    assert report([str(rendered_twice), "-o", str(html)]) == 0

    with visit(chromium_bin, html.as_uri(), tmp_path / "profile") as seen:
        summary = seen.page.locator("#summary table").first
        assert summary.is_visible()
        text = summary.inner_text()
        assert f"ok\t{CLIPS}" in text and "failed\t0" in text
        assert f"skipped (done by an earlier run)\t{CLIPS}" in text
        assert "held" not in text and "lost" not in text  # none: their rows are left out
        runs = seen.page.locator("#runs tr")
        assert runs.count() == 3  # the header, first, again
        assert runs.nth(2).inner_text().split("\t")[:1] == ["again"]
        assert seen.page.locator("#unrecorded").count() == 0
        assert seen.errors == [] and [m for m in seen.console if m[0] in ("error", "warning")] == []


def test_a_run_that_rendered_nothing_reports_alone(rendered_twice: Path, tmp_path: Path) -> None:
    html = tmp_path / "again.html"
    assert report([str(rendered_twice), "--run-id", "again", "-o", str(html)]) == 0

    text = html.read_text()
    assert f'<td class="num" id="skipped">{CLIPS}</td>' in text
    assert "No clip was rendered in these runs." in text


def test_a_run_without_a_record_shows_skipped_as_unknown_and_says_why(
    tmp_path: Path, chromium_bin: str
) -> None:
    out = tmp_path / "out"
    write_run(LocalTarget(out))  # the metrics of a run from before run records were written
    html = tmp_path / "report.html"
    assert report([str(out), "-o", str(html)]) == 0

    with visit(chromium_bin, html.as_uri(), tmp_path / "profile") as seen:
        text = seen.page.locator("#summary table").first.inner_text()
        assert "skipped (done by an earlier run)\tunknown" in text
        note = seen.page.locator("#unrecorded").inner_text()
        assert f"run(s) {RUN_ID} have no run record (runs/<run_id>.json)" in note
        assert seen.page.locator("#runs").count() == 0
