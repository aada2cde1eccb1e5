"""pipeline/storage/local.py: writes are atomic, and nothing half-written ever shows."""

from __future__ import annotations

from pathlib import Path

import pytest
from storage_helpers import sha256_hex, write_file

from pipeline.storage.local import LocalTarget


def test_local_put_file_refuses_a_digest_that_does_not_match_the_file(tmp_path: Path) -> None:
    target = LocalTarget(tmp_path / "out")
    target.put_bytes(b"earlier good attempt", "clips/a.mp4", "video/mp4")
    src = write_file(tmp_path / "a.mp4", b"actual content")

    with pytest.raises(ValueError, match="the file changed after it was hashed"):
        target.put_file(src, "clips/a.mp4", "video/mp4", {}, sha256=sha256_hex(b"other content"))
    assert target.read_bytes("clips/a.mp4") == b"earlier good attempt"  # left as it was
    assert target.list_keys("") == ["clips/a.mp4"]  # and no temp file shows
