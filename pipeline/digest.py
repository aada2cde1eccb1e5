"""SHA-256 digests: of files (videos, weights) and of JSON-serialisable values (clip ids, config hashes)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's content, read in blocks."""
    with Path(path).open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def json_sha256(value: Any) -> str:
    """Hex SHA-256 of `value` as canonical JSON (sorted keys; other objects by their str())."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
