"""pipeline/storage/settings.py: S3Settings refuse values no client could use, naming the fix."""

from __future__ import annotations

import pytest

from pipeline.storage import S3Settings


def test_s3_settings_validate_their_values() -> None:
    with pytest.raises(ValueError) as excinfo:
        S3Settings(multipart_chunk_mb=4)
    assert str(excinfo.value) == (
        "S3Settings.multipart_chunk_mb=4 is below S3's minimum part size; use 5 or more"
    )
    with pytest.raises(ValueError) as excinfo:
        S3Settings(endpoint_url="127.0.0.1:8333")
    assert str(excinfo.value) == (
        "--s3-endpoint-url '127.0.0.1:8333' must look like http(s)://host:port with no path, "
        "e.g. http://127.0.0.1:8333"
    )
    with pytest.raises(ValueError) as excinfo:
        S3Settings(request_checksum_calculation="never")
    assert str(excinfo.value) == (
        "S3Settings.request_checksum_calculation='never' is not one of 'when_supported', 'when_required'"
    )
