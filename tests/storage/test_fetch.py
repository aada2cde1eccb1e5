"""pipeline/storage/fetch.py: the prompt file from a path or S3, model folders mirrored to local disk."""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from storage_helpers import MIB, write_file

from pipeline.storage.fetch import download_tree, read_input


def test_read_input_reads_local_and_s3_files(s3_moto, tmp_path: Path) -> None:
    text = '{"prompt": "a cat surfing at dawn, ünïcode ok"}\n'
    local = write_file(tmp_path / "prompts.jsonl", text.encode())
    bucket = s3_moto.make_bucket()
    s3_moto.client().put_object(Bucket=bucket, Key="in/prompts.jsonl", Body=text.encode())

    assert read_input(str(local)) == text.encode()
    assert read_input(f"s3://{bucket}/in/prompts.jsonl", s3_moto.settings()) == text.encode()


def test_read_input_errors_name_the_file(s3_moto, tmp_path: Path) -> None:
    bucket = s3_moto.make_bucket()
    with pytest.raises(FileNotFoundError) as excinfo:
        read_input(f"s3://{bucket}/in/missing.jsonl", s3_moto.settings())
    assert str(excinfo.value) == f"no object s3://{bucket}/in/missing.jsonl at {s3_moto.endpoint_url}"

    with pytest.raises(FileNotFoundError, match=r"missing\.jsonl"):
        read_input(str(tmp_path / "missing.jsonl"))

    with pytest.raises(ValueError) as bad_uri:
        read_input(f"s3://{bucket}", s3_moto.settings())
    assert str(bad_uri.value) == (
        f"S3 URI 's3://{bucket}' names a bucket but no object; use s3://bucket/path/prompts.jsonl"
    )


@pytest.fixture
def model_bucket(s3_moto) -> str:
    """A model folder on S3, with the nested tokenizer folder and a sibling that must not be fetched."""
    bucket = s3_moto.make_bucket("models")
    client = s3_moto.client()
    objects = {
        "wan/self_forcing_dmd.pt": os.urandom(6 * MIB),  # above the 5 MiB threshold: ranged GETs
        "wan/Wan2.1_VAE.pth": os.urandom(1000),
        "wan/google/umt5-xxl/tokenizer.json": b'{"model": {}}',
        "wan/google/umt5-xxl/spiece.model": os.urandom(500),
        "wan2/not-this-model.pt": b"sibling prefix",
    }
    for key, body in objects.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)
    return bucket


def test_download_tree_fetches_nested_files_once_and_skips_them_next_time(
    s3_moto, model_bucket: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = s3_moto.settings(multipart_threshold_mb=5, multipart_chunk_mb=5)
    dest = tmp_path / "cache" / "wan"
    client = s3_moto.client()
    caplog.set_level(logging.INFO, logger="pipeline.storage")

    assert download_tree(f"s3://{model_bucket}/wan", dest, settings) == dest
    files = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert files == [
        "Wan2.1_VAE.pth",
        "google/umt5-xxl/spiece.model",
        "google/umt5-xxl/tokenizer.json",
        "self_forcing_dmd.pt",
    ]
    for name in files:
        remote = client.get_object(Bucket=model_bucket, Key=f"wan/{name}")["Body"].read()
        assert (dest / name).read_bytes() == remote
    inodes = {name: (dest / name).stat().st_ino for name in files}

    caplog.clear()
    download_tree(f"s3://{model_bucket}/wan/", dest, settings)

    assert {name: (dest / name).stat().st_ino for name in files} == inodes  # nothing rewritten
    assert "fetched 0 files (0 bytes)" in caplog.text and "4 already present" in caplog.text
    assert not any(p.name.startswith(".") for p in dest.rglob("*"))  # no temp files left behind


def test_download_tree_refetches_a_file_whose_size_differs(
    s3_moto, model_bucket: str, tmp_path: Path
) -> None:
    dest = tmp_path / "wan"
    download_tree(f"s3://{model_bucket}/wan", dest, s3_moto.settings())
    (dest / "Wan2.1_VAE.pth").write_bytes(b"truncated")

    download_tree(f"s3://{model_bucket}/wan", dest, s3_moto.settings())

    remote = s3_moto.client().get_object(Bucket=model_bucket, Key="wan/Wan2.1_VAE.pth")["Body"].read()
    assert (dest / "Wan2.1_VAE.pth").read_bytes() == remote


def test_concurrent_download_tree_calls_download_each_file_once(
    s3_moto, model_bucket: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dest = tmp_path / "wan"
    caplog.set_level(logging.INFO, logger="pipeline.storage")
    start = threading.Barrier(3)

    def fetch() -> Path:
        start.wait()
        return download_tree(f"s3://{model_bucket}/wan", dest, s3_moto.settings())

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda _: fetch(), range(3)))

    assert results == [dest, dest, dest]
    summaries = [r.getMessage() for r in caplog.records if r.getMessage().startswith("download_tree")]
    assert sorted(s.split(": ")[1].split(" (")[0] for s in summaries) == [
        "fetched 0 files",
        "fetched 0 files",
        "fetched 4 files",
    ]


def test_download_tree_of_an_empty_prefix_says_so(s3_moto, model_bucket: str, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as excinfo:
        download_tree(f"s3://{model_bucket}/nope", tmp_path / "x", s3_moto.settings())
    assert str(excinfo.value) == (
        f"no objects under s3://{model_bucket}/nope at {s3_moto.endpoint_url}; check the URI"
    )
