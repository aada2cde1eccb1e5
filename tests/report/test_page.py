"""pipeline/report/page.py: the report opened in a real headless Chromium: every section renders, every
image decodes, nothing is logged to the console and nothing is fetched from anywhere."""

from __future__ import annotations

from pathlib import Path

import pytest
from browser import visit
from synthetic_run import TRICKY_PROMPT, storyboard_clips, write_run

from pipeline.quality import SIGNALS
from pipeline.report.__main__ import main
from pipeline.storage import open_target

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

SECTIONS = ["summary", "throughput", "failures", "signals", "storyboards", "policies"]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("report")
    out = folder / "out"
    write_run(open_target(str(out)))
    html = folder / "report.html"
    assert main([str(out), "-o", str(html), "--usd-per-gpu-hour", "2.5", "--worst", "3"]) == 0
    return html


@pytest.fixture(scope="module")
def storyboard_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("storyboard-report")
    out = folder / "out"
    write_run(open_target(str(out)), storyboard_clips())
    html = folder / "report.html"
    assert main([str(out), "-o", str(html)]) == 0
    return html


def test_every_section_renders_every_image_decodes_and_the_console_stays_quiet(
    report: Path, chromium_bin: str, tmp_path: Path
) -> None:
    with visit(chromium_bin, report.as_uri(), tmp_path / "profile") as seen:
        page = seen.page
        for section in SECTIONS + [f"signal-{signal.name}" for signal in SIGNALS]:
            located = page.locator(f"#{section}")
            assert located.count() == 1 and located.is_visible(), section
            assert located.bounding_box()["height"] > 50, f"section {section} is empty"  # type: ignore[index]
        images = page.evaluate(
            """async () => Promise.all(Array.from(document.images).map(async (img) => {
                   try { await img.decode(); return [img.alt, img.naturalWidth, img.naturalHeight]; }
                   catch (e) { return [img.alt, 0, 0]; } }))"""
        )
        thumbnails = [alt for alt, *_ in images if " frame of " in alt]
        # 12 signals x 3 worst clips x 3 frames, a figure per signal and its curves, throughput, policies
        assert len(thumbnails) == len(SIGNALS) * 3 * 3
        assert len(images) == len(thumbnails) + 2 * len(SIGNALS) + 2
        undecoded = [alt for alt, width, height in images if not (width > 0 and height > 0)]
        assert not undecoded, f"images that did not decode: {undecoded}"
        assert seen.errors == [] and [m for m in seen.console if m[0] in ("error", "warning")] == []
        assert seen.requests == [report.as_uri()], "the page fetched something besides itself"
        screenshot = tmp_path / "report.png"
        page.screenshot(path=str(screenshot), full_page=True)
        print(f"report screenshot: {screenshot}")  # kept under pytest's tmp dir as the test's artefact
        assert screenshot.stat().st_size > 100_000


def test_the_worst_clips_are_the_ones_built_to_fail_and_prompts_show_as_text(
    report: Path, chromium_bin: str, tmp_path: Path
) -> None:
    expected = {
        "saturation_drift": "sat-sunset",
        "sharpness_drift": "blur-fog",
        "flicker_spikes": "flash-storm",
        "rollback": "loop-carousel",
        "motion_decay": "stop-train",
    }
    with visit(chromium_bin, report.as_uri(), tmp_path / "profile") as seen:
        page = seen.page
        for signal, clip_id in expected.items():
            first = page.locator(f"#signal-{signal} .clip").first
            assert clip_id in first.inner_text(), signal
        assert page.get_by_text(TRICKY_PROMPT).count() >= 1  # escaped, shown as typed
        assert page.locator("b", has_text="bold").count() == 0  # never markup
        failures = page.locator("#failures").inner_text()
        assert "EncodeError\t2" in failures and "ClipTimeoutError\t1" in failures
        summary = page.locator("#summary").inner_text()
        assert "GPU-hours\t0.500" in summary and "at $2.50/GPU-hour" in summary
        assert page.locator("#policies img").count() == 1  # three policies: the comparison figure


def test_a_storyboard_shows_its_segments_and_switches_where_its_curves_are(
    storyboard_report: Path, chromium_bin: str, tmp_path: Path
) -> None:
    with visit(chromium_bin, storyboard_report.as_uri(), tmp_path / "profile") as seen:
        page = seen.page
        for section in SECTIONS:
            assert page.locator(f"#{section}").is_visible(), section
        # the least moving clip is the storyboard; its card lists its segments with their own values
        card = page.locator("#signal-moving_fraction .clip").first
        assert "fox-story" in card.inner_text()
        cells = [row.locator("td").all_inner_texts() for row in card.locator("table.segments tr").all()[1:]]
        assert [(c[1], c[2], c[3], c[4]) for c in cells] == [
            ("a fox trots through snow", "0–63", "0.00 s", "1"),
            ("the fox stops", "64–127", "4.00 s", "0"),
            ("northern lights", "128–191", "8.00 s", "1"),
        ]
        assert cells[0][5] == "clip start" and cells[1][5].startswith("smooth, jump")
        assert cells[2][5].startswith("cut, jump")
        # a clip of one prompt keeps its prompt line and has no segments table
        plain = page.locator("#signal-moving_fraction .clip").nth(1)
        assert "pan-river" in plain.inner_text() and plain.locator("table.segments").count() == 0
        # the switches, the cut first
        storyboards = page.locator("#storyboards")
        assert "1 storyboard clip with 2 switches, 1 of them cuts" in storyboards.inner_text()
        rows = [r.locator("td").all_inner_texts() for r in storyboards.locator("tr").all()[1:]]
        assert [(r[0], r[2], r[3], r[4], r[8]) for r in rows] == [
            ("fox-story", "3", "northern lights", "128", "cut"),
            ("fox-story", "2", "the fox stops", "64", "smooth"),
        ]
        images = page.evaluate(
            """async () => Promise.all(Array.from(document.images).map(async (img) => {
                   try { await img.decode(); return img.naturalWidth; } catch (e) { return 0; } }))"""
        )
        assert images and all(width > 0 for width in images)
        assert seen.errors == [] and [m for m in seen.console if m[0] in ("error", "warning")] == []
        assert seen.requests == [storyboard_report.as_uri()]
        screenshot = tmp_path / "storyboard-report.png"
        page.screenshot(path=str(screenshot), full_page=True)
        print(f"storyboard report screenshot: {screenshot}")
