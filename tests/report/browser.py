"""A page opened in a real headless Chromium (Debian's), through playwright, with what it logged and
every request it made."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

# No sandbox (root in a container), no GPU, and nothing that would reach out to the network.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Visit:
    page: Page
    console: list[tuple[str, str]] = field(default_factory=list)  # (type, text) of each console message
    errors: list[str] = field(default_factory=list)  # uncaught page errors
    requests: list[str] = field(default_factory=list)  # every URL the page asked for


@contextmanager
def visit(chromium: str, url: str, profile: Path, width: int = 1300) -> Iterator[Visit]:
    """Open `url` headless in a fresh profile folder, wait for it to load, yield the page."""
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": width, "height": 900},
        )
        try:
            page = context.new_page()
            seen = Visit(page)
            page.on("console", lambda message: seen.console.append((message.type, message.text)))
            page.on("pageerror", lambda error: seen.errors.append(str(error)))
            page.on("request", lambda request: seen.requests.append(request.url))
            page.goto(url, wait_until="load")
            yield seen
        finally:
            context.close()
