"""pipeline/storage.py against a local folder, moto's S3 server and SeaweedFS (all real, on loopback)."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from pipeline.storage import (
    LocalTarget,
    OutputTarget,
    S3Settings,
    S3Target,
    StorageError,
    download_tree,
    open_target,
    read_text,
    s3_error,
)

MIB = 1024 * 1024


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def write_file(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------------------------------------
# Round trips common to both targets
# ---------------------------------------------------------------------------------------------


def test_put_file_then_exists_read_list_delete_round_trip(target: OutputTarget, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    src = write_file(tmp_path / "src" / "clip.mp4", data)

    stored = target.put_file(src, "clips/abc.mp4", "video/mp4", {"clip-id": "abc"})

    assert stored.uri == target.url_for("clips/abc.mp4")
    assert (stored.bytes, stored.sha256) == (len(data), sha256_hex(data))
    assert target.exists("clips/abc.mp4")
    assert not target.exists("clips/other.mp4")
    assert target.read_bytes("clips/abc.mp4") == data
    assert target.list_keys("clips/") == ["clips/abc.mp4"]

    target.delete("clips/abc.mp4")
    target.delete("clips/abc.mp4")  # deleting a missing object is not an error
    assert not target.exists("clips/abc.mp4")
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
    filesystem, base = target.arrow_filesystem()

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
            target.exists(bad)


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


def test_local_put_file_refuses_a_digest_that_does_not_match_the_file(tmp_path: Path) -> None:
    target = LocalTarget(tmp_path / "out")
    target.put_bytes(b"earlier good attempt", "clips/a.mp4", "video/mp4")
    src = write_file(tmp_path / "a.mp4", b"actual content")

    with pytest.raises(ValueError, match="the file changed after it was hashed"):
        target.put_file(src, "clips/a.mp4", "video/mp4", {}, sha256=sha256_hex(b"other content"))
    assert target.read_bytes("clips/a.mp4") == b"earlier good attempt"  # left as it was
    assert target.list_keys("") == ["clips/a.mp4"]  # and no temp file shows


# ---------------------------------------------------------------------------------------------
# S3 specifics on moto
# ---------------------------------------------------------------------------------------------


def test_s3_upload_sets_content_type_sha256_metadata_and_store_checksum(s3_moto, tmp_path: Path) -> None:
    bucket = s3_moto.make_bucket()
    target = S3Target(bucket, "run1", s3_moto.settings())
    data = os.urandom(200_000)
    src = write_file(tmp_path / "clip.mp4", data)

    stored = target.put_file(src, "clips/abc.mp4", "video/mp4", {"clip-id": "abc", "run-id": "run1"})

    head = s3_moto.client().head_object(Bucket=bucket, Key="run1/clips/abc.mp4")
    assert head["ContentType"] == "video/mp4"
    assert head["Metadata"] == {"sha256": sha256_hex(data), "clip-id": "abc", "run-id": "run1"}
    assert stored.uri == f"s3://{bucket}/run1/clips/abc.mp4"
    assert stored.checksum == sha256_b64(data)  # single-part upload: the store's SHA-256 of the object


def test_s3_upload_uses_the_caller_digest_without_rehashing(s3_moto, tmp_path: Path) -> None:
    bucket = s3_moto.make_bucket()
    target = S3Target(bucket, "", s3_moto.settings())
    src = write_file(tmp_path / "clip.mp4", b"frames")

    stored = target.put_file(src, "clips/a.mp4", "video/mp4", {}, sha256=sha256_hex(b"frames"))

    assert stored.sha256 == sha256_hex(b"frames")
    assert stored.uri == f"s3://{bucket}/clips/a.mp4"  # empty prefix: keys sit at the bucket root


def test_s3_multipart_upload_round_trips(s3_moto, tmp_path: Path) -> None:
    bucket = s3_moto.make_bucket()
    settings = s3_moto.settings(multipart_threshold_mb=5, multipart_chunk_mb=5)
    target = S3Target(bucket, "run1", settings)
    data = os.urandom(11 * MIB)  # 5 + 5 + 1 MiB parts
    src = write_file(tmp_path / "big.mp4", data)

    stored = target.put_file(src, "clips/big.mp4", "video/mp4", {})

    head = s3_moto.client().head_object(Bucket=bucket, Key="run1/clips/big.mp4")
    assert head["ETag"].endswith('-3"')  # a multipart object: S3 ETags end in -<parts>
    assert head["Metadata"]["sha256"] == sha256_hex(data)
    assert stored.bytes == 11 * MIB
    assert target.read_bytes("clips/big.mp4") == data


def test_s3_delete_many_removes_every_key(s3_moto) -> None:
    target = S3Target(s3_moto.make_bucket(), "p", s3_moto.settings())
    keys = [f"metrics/run_id=r/part-{i}.parquet" for i in range(5)]
    for key in keys:
        target.put_bytes(b"x", key, "application/octet-stream")

    target.delete_many(keys[:4])

    assert target.list_keys("metrics/") == keys[4:]


def test_s3_target_uses_the_injected_client(s3_moto) -> None:
    bucket = s3_moto.make_bucket()
    client = s3_moto.client()
    target = S3Target(bucket, "a/b/", s3_moto.settings(endpoint_url=None), client=client)

    target.put_bytes(b"x", "k.txt", "text/plain")  # settings point at AWS; the client at moto

    assert target.client is client
    assert target.uri == f"s3://{bucket}/a/b"
    assert client.get_object(Bucket=bucket, Key="a/b/k.txt")["Body"].read() == b"x"


# ---------------------------------------------------------------------------------------------
# read_text, open_target, download_tree
# ---------------------------------------------------------------------------------------------


def test_read_text_reads_local_and_s3_files(s3_moto, tmp_path: Path) -> None:
    text = '{"prompt": "a cat surfing at dawn, ünïcode ok"}\n'
    local = write_file(tmp_path / "prompts.jsonl", text.encode())
    bucket = s3_moto.make_bucket()
    s3_moto.client().put_object(Bucket=bucket, Key="in/prompts.jsonl", Body=text.encode())

    assert read_text(str(local)) == text
    assert read_text(f"s3://{bucket}/in/prompts.jsonl", s3_moto.settings()) == text


def test_read_text_errors_name_the_file(s3_moto, tmp_path: Path) -> None:
    bucket = s3_moto.make_bucket()
    with pytest.raises(FileNotFoundError) as excinfo:
        read_text(f"s3://{bucket}/in/missing.jsonl", s3_moto.settings())
    assert str(excinfo.value) == f"no object s3://{bucket}/in/missing.jsonl at {s3_moto.endpoint_url}"

    latin1 = write_file(tmp_path / "p.txt", "café".encode("latin-1"))
    with pytest.raises(ValueError, match=r"p.txt is not UTF-8 text .*; save it as UTF-8"):
        read_text(str(latin1))

    with pytest.raises(ValueError) as bad_uri:
        read_text(f"s3://{bucket}", s3_moto.settings())
    assert str(bad_uri.value) == (
        f"S3 URI 's3://{bucket}' names a bucket but no object; use s3://bucket/path/prompts.jsonl"
    )


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


def test_s3_settings_validate_their_values() -> None:
    with pytest.raises(ValueError) as excinfo:
        S3Settings(multipart_chunk_mb=4)
    assert str(excinfo.value) == (
        "S3Settings.multipart_chunk_mb=4 is below S3's minimum part size; use 5 or more"
    )
    with pytest.raises(ValueError) as excinfo:
        S3Settings(endpoint_url="127.0.0.1:8333")
    assert str(excinfo.value) == (
        "S3Settings.endpoint_url='127.0.0.1:8333' must look like http(s)://host:port with no path, "
        "e.g. 'http://127.0.0.1:8333'"
    )
    with pytest.raises(ValueError) as excinfo:
        S3Settings(request_checksum_calculation="never")
    assert str(excinfo.value) == (
        "S3Settings.request_checksum_calculation='never' is not one of 'when_supported', 'when_required'"
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


# ---------------------------------------------------------------------------------------------
# Errors name the bucket, the key and the endpoint
# ---------------------------------------------------------------------------------------------


def test_missing_bucket_errors_name_the_bucket(s3_moto, tmp_path: Path) -> None:
    target = S3Target("no-such-bucket-here", "run1", s3_moto.settings())
    endpoint = s3_moto.endpoint_url
    fix = f"bucket 'no-such-bucket-here' does not exist at {endpoint}; create it or fix the URI"

    with pytest.raises(StorageError) as excinfo:
        target.put_bytes(b"x", "clips/a.mp4", "video/mp4")
    assert str(excinfo.value) == (
        f"S3 PutObject failed for s3://no-such-bucket-here/run1/clips/a.mp4 at {endpoint}: NoSuchBucket: "
        f"The specified bucket does not exist; {fix}"
    )
    assert excinfo.value.code == "NoSuchBucket"

    src = write_file(tmp_path / "a.mp4", b"x")
    with pytest.raises(StorageError) as excinfo:
        target.put_file(src, "clips/a.mp4", "video/mp4", {})
    assert str(excinfo.value) == (
        f"S3 upload_file failed for s3://no-such-bucket-here/run1/clips/a.mp4 at {endpoint}: NoSuchBucket: "
        f"The specified bucket does not exist; {fix}"
    )

    with pytest.raises(StorageError) as excinfo:
        target.exists("clips/a.mp4")  # HEAD answers a bare 404; the target asks about the bucket
    assert (
        str(excinfo.value)
        == f"S3 HeadBucket failed for s3://no-such-bucket-here at {endpoint}: NoSuchBucket; {fix}"
    )

    with pytest.raises(StorageError, match="NoSuchBucket"):
        target.list_keys("clips/")


def test_unreachable_endpoint_error_names_the_endpoint() -> None:
    with socket_closed_port() as port:
        endpoint = f"http://127.0.0.1:{port}"
        settings = S3Settings(endpoint_url=endpoint, region="us-east-1", max_attempts=1, connect_timeout_s=2)
        target = S3Target("some-bucket", "", settings)
        with pytest.raises(StorageError) as excinfo:
            target.read_bytes("clips/a.mp4")
    assert str(excinfo.value) == (
        f"S3 GetObject failed for s3://some-bucket/clips/a.mp4 at {endpoint}: EndpointConnectionError: "
        f'Could not connect to the endpoint URL: "{endpoint}/some-bucket/clips/a.mp4"; cannot reach '
        f"{endpoint}; check S3Settings.endpoint_url and the network"
    )


class socket_closed_port:
    """A loopback port with nothing listening (bound then closed)."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def __exit__(self, *exc: object) -> None:
        return None


# ---------------------------------------------------------------------------------------------
# SeaweedFS: a store that validates checksums and credentials
# ---------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_seaweed_rejects_a_wrong_checksum_so_these_tests_mean_something(s3_seaweed) -> None:
    bucket = s3_seaweed.make_bucket()
    wrong = sha256_b64(b"something else")

    with pytest.raises(ClientError) as excinfo:
        s3_seaweed.client().put_object(Bucket=bucket, Key="k", Body=b"data", ChecksumSHA256=wrong)

    error = s3_error(excinfo.value, "PutObject", bucket, "k", s3_seaweed.settings())
    assert error.code == "BadDigest"
    assert str(error).endswith(
        "; the store rejected the request's checksum; if it rejects boto3>=1.36 default checksums set "
        "S3Settings(request_checksum_calculation='when_required') or checksum_algorithm=''"
    )


@pytest.mark.integration
def test_seaweed_validates_sha256_on_single_and_multipart_uploads(s3_seaweed, tmp_path: Path) -> None:
    settings = s3_seaweed.settings(multipart_threshold_mb=5, multipart_chunk_mb=5)
    target = S3Target(s3_seaweed.make_bucket(), "run1", settings)
    small = os.urandom(100_000)
    big = os.urandom(11 * MIB)

    single = target.put_file(write_file(tmp_path / "s.mp4", small), "clips/s.mp4", "video/mp4", {})
    multi = target.put_file(write_file(tmp_path / "b.mp4", big), "clips/b.mp4", "video/mp4", {})

    assert single.checksum == sha256_b64(small)  # the server computed and checked the same digest
    assert multi.checksum is not None and multi.checksum.endswith("-3")  # composite: one per part
    assert multi.sha256 == sha256_hex(big)  # hence our own whole-file digest
    assert target.read_bytes("clips/b.mp4") == big


@pytest.mark.integration
@pytest.mark.parametrize("algorithm", ["SHA256", ""])
def test_seaweed_works_with_checksums_only_when_required(s3_seaweed, tmp_path: Path, algorithm: str) -> None:
    settings = s3_seaweed.settings(
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        checksum_algorithm=algorithm,
        multipart_threshold_mb=5,
        multipart_chunk_mb=5,
    )
    target = S3Target(s3_seaweed.make_bucket(), "run1", settings)
    big = os.urandom(6 * MIB)

    stored = target.put_file(write_file(tmp_path / "b.mp4", big), "clips/b.mp4", "video/mp4", {})
    target.put_bytes(b"row", "metrics/run_id=r/part-b.parquet", "application/vnd.apache.parquet")

    assert stored.sha256 == sha256_hex(big)
    assert (stored.checksum is not None) == bool(algorithm)
    assert target.read_bytes("clips/b.mp4") == big
    target.delete_many(target.list_keys(""))  # DeleteObjects needs a checksum header even so
    assert target.list_keys("") == []


@pytest.mark.integration
def test_seaweed_wrong_credentials_error_names_the_bucket_and_the_fix(s3_seaweed) -> None:
    bucket = s3_seaweed.make_bucket()
    settings = s3_seaweed.settings(max_attempts=1)
    intruder = boto3.session.Session(aws_access_key_id="not-a-key", aws_secret_access_key="nope").client(
        "s3", endpoint_url=s3_seaweed.endpoint_url, config=Config(region_name="us-east-1")
    )
    target = S3Target(bucket, "run1", settings, client=intruder)

    with pytest.raises(StorageError) as excinfo:
        target.list_keys("clips/")

    assert excinfo.value.code == "InvalidAccessKeyId"
    assert str(excinfo.value).startswith(f"S3 ListObjectsV2 failed for s3://{bucket}/run1/clips/ at ")
    assert str(excinfo.value).endswith(
        "check the credentials of the standard AWS chain (AWS_PROFILE, AWS_ACCESS_KEY_ID/"
        f"AWS_SECRET_ACCESS_KEY, instance profile) and the policy of bucket '{bucket}'"
    )
    assert "not-a-key" not in str(excinfo.value) and "nope" not in str(excinfo.value)
