"""pipeline/report/page.py: the report opened in a real headless Chromium: every section renders, every
image decodes, nothing is logged to the console and nothing is fetched from anywhere."""

from __future__ import annotations

from pathlib import Path

import pytest
from browser import visit
from synthetic_run import TRICKY_PROMPT, write_run

from pipeline.quality import SIGNALS
from pipeline.report.__main__ import main
from pipeline.storage import open_target

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

SECTIONS = ["summary", "throughput", "failures", "signals", "policies"]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("report")
    out = folder / "out"
    write_run(open_target(str(out)))
    html = folder / "report.html"
    assert main([str(out), "-o", str(html), "--usd-per-gpu-hour", "2.5", "--worst", "3"]) == 0
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
