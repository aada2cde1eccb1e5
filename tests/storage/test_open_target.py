"""pipeline/storage/__init__.py: `open_target` picks the target from the URI and rejects what is neither."""

from __future__ import annotations

from pathlib import Path

import pytest
from storage_helpers import write_file

from pipeline.storage import S3Settings, open_target
from pipeline.storage.local import LocalTarget
from pipeline.storage.s3 import S3Target


def test_open_target_picks_the_target_from_the_uri(tmp_path: Path) -> None:
    local = open_target(str(tmp_path / "new" / "run1"))
    s3 = open_target(
        "s3://my-bucket/renders/run1/", S3Settings(endpoint_url="http://127.0.0.1:9", region="x")
    )

    assert isinstance(local, LocalTarget) and (tmp_path / "new" / "run1").is_dir()
    assert isinstance(s3, S3Target) and (s3.bucket, s3.prefix) == ("my-bucket", "renders/run1")
    assert s3.url_for("clips/a.mp4") == "s3://my-bucket/renders/run1/clips/a.mp4"


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        (
            "gs://bucket/run1",
            "output URI 'gs://bucket/run1' is neither s3://bucket/prefix nor a local folder path; "
            "use e.g. s3://my-bucket/run1 or ./renders/run1",
        ),
        (
            "",
            "output URI '' is neither s3://bucket/prefix nor a local folder path; "
            "use e.g. s3://my-bucket/run1 or ./renders/run1",
        ),
        (
            "s3:///run1",
            "S3 URI 's3:///run1' has no valid bucket name (got ''); use s3://bucket/prefix with a bucket "
            "of 3-255 letters, digits, '.', '-' or '_'",
        ),
        (
            "s3://bucket/a/../b",
            "in S3 URI 's3://bucket/a/../b', the key 'a/../b' must be a relative path of '/'-separated "
            "names without empty, '.' or '..' segments, e.g. 'clips/abc123.mp4'",
        ),
    ],
)
def test_open_target_rejects_bad_uris(uri: str, message: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        open_target(uri)
    assert str(excinfo.value) == message


def test_open_target_rejects_a_file_where_a_folder_is_needed(tmp_path: Path) -> None:
    path = write_file(tmp_path / "taken", b"x")
    with pytest.raises(ValueError) as excinfo:
        open_target(str(path))
    assert str(excinfo.value) == f"output path '{path}' exists and is not a folder; pass a folder path"
