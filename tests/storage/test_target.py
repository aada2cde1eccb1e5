"""Every OutputTarget behaves the same, on a local folder and on S3 (moto on loopback)."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import arrow_filesystem
from storage_helpers import sha256_hex, write_file

from pipeline.storage import OutputTarget


def test_put_file_then_read_list_delete_round_trip(target: OutputTarget, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    src = write_file(tmp_path / "src" / "clip.mp4", data)

    stored = target.put_file(src, "clips/abc.mp4", "video/mp4", {"clip-id": "abc"})

    assert stored.uri == target.url_for("clips/abc.mp4")
    assert (stored.bytes, stored.sha256) == (len(data), sha256_hex(data))
    assert target.read_bytes("clips/abc.mp4") == data
    assert target.list_keys("clips/") == ["clips/abc.mp4"]

    target.delete("clips/abc.mp4")
    target.delete("clips/abc.mp4")  # deleting a missing object is not an error
    assert target.list_keys("clips/") == []
    with pytest.raises(FileNotFoundError, match=r"clips/abc\.mp4"):
        target.read_bytes("clips/abc.mp4")


def test_list_keys_is_a_string_prefix_match_like_s3(target: OutputTarget) -> None:
    for key in [
        "clips/a.mp4",
        "clips/ab.mp4",
        "clips/b.mp4",
        "clipsx/c.mp4",
        "metrics/run_id=r/part-a.parquet",
    ]:
        target.put_bytes(b"x", key, "application/octet-stream")

    assert target.list_keys("clips/a") == ["clips/a.mp4", "clips/ab.mp4"]
    assert target.list_keys("clips") == ["clips/a.mp4", "clips/ab.mp4", "clips/b.mp4", "clipsx/c.mp4"]
    assert target.list_keys("metrics/run_id=r/") == ["metrics/run_id=r/part-a.parquet"]
    assert len(target.list_keys("")) == 5
    assert target.list_keys("nothing/") == []


def test_put_to_the_same_key_again_overwrites_it(target: OutputTarget, tmp_path: Path) -> None:
    first = write_file(tmp_path / "first.mp4", b"first attempt")
    second = write_file(tmp_path / "second.mp4", b"second attempt, longer")

    target.put_file(first, "clips/abc.mp4", "video/mp4", {})
    stored = target.put_file(second, "clips/abc.mp4", "video/mp4", {})

    assert target.list_keys("") == ["clips/abc.mp4"]
    assert target.read_bytes("clips/abc.mp4") == b"second attempt, longer"
    assert stored.sha256 == sha256_hex(b"second attempt, longer")


def test_put_bytes_round_trips_and_reports_sha256(target: OutputTarget) -> None:
    stored = target.put_bytes(
        b"parquet bytes", "metrics/run_id=r1/part-a.parquet", "application/vnd.apache.parquet"
    )

    assert stored.sha256 == sha256_hex(b"parquet bytes")
    assert stored.bytes == len(b"parquet bytes")
    assert target.read_bytes("metrics/run_id=r1/part-a.parquet") == b"parquet bytes"


def test_arrow_filesystem_opens_the_same_objects(target: OutputTarget) -> None:
    target.put_bytes(b"hello arrow", "metrics/x.bin", "application/octet-stream")
    filesystem, base = arrow_filesystem(target)

    with filesystem.open_input_stream(f"{base}/metrics/x.bin") as f:
        assert f.read() == b"hello arrow"


def test_keys_that_could_escape_the_target_are_rejected(target: OutputTarget) -> None:
    with pytest.raises(ValueError) as excinfo:
        target.put_bytes(b"x", "../escape.mp4", "video/mp4")
    assert str(excinfo.value) == (
        "object key '../escape.mp4' must be a relative path of '/'-separated names without empty, "
        "'.' or '..' segments, e.g. 'clips/abc123.mp4'"
    )
    for bad in ["/abs.mp4", "clips//a.mp4", "clips/./a.mp4", ""]:
        with pytest.raises(ValueError, match="must be a relative path"):
            target.read_bytes(bad)


def test_metadata_that_cannot_travel_as_s3_headers_is_rejected(target: OutputTarget, tmp_path: Path) -> None:
    src = write_file(tmp_path / "a.mp4", b"x")
    with pytest.raises(ValueError) as excinfo:
        target.put_file(src, "clips/a.mp4", "video/mp4", {"prompt": "un café"})
    assert str(excinfo.value) == (
        "metadata 'prompt'='un café' cannot be sent as an S3 header: keys must be [A-Za-z0-9_-]+ and "
        "values printable ASCII; put free text (prompts) in the metrics row"
    )
    with pytest.raises(ValueError, match="metadata key 'sha256' is reserved"):
        target.put_file(src, "clips/a.mp4", "video/mp4", {"sha256": "abc"})


def test_a_conditional_write_lands_only_where_the_writer_expected_the_object_to_be(
    target: OutputTarget,
) -> None:
    key = "claims/fox.json"
    assert target.put_bytes_if(b"first", key, "application/json", version=None)
    assert not target.put_bytes_if(b"second", key, "application/json", version=None)  # it exists now
    data, version = target.read_versioned(key)
    assert data == b"first"

    third = target.put_bytes_if(b"third", key, "application/json", version=version)
    assert third is not None and third != version
    assert not target.put_bytes_if(b"fourth", key, "application/json", version=version)  # moved on
    assert target.read_versioned(key) == (b"third", third)
    with pytest.raises(FileNotFoundError):
        target.read_versioned("claims/nobody.json")


def test_of_two_writers_racing_for_one_object_exactly_one_wins(target: OutputTarget) -> None:
    barrier = threading.Barrier(8)

    def race(i: int) -> bool:
        barrier.wait()
        return (
            target.put_bytes_if(f"writer {i}".encode(), "claims/raced.json", "application/json", None)
            is not None
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        won = list(pool.map(race, range(8)))

    assert won.count(True) == 1
    assert target.read_bytes("claims/raced.json") == f"writer {won.index(True)}".encode()
