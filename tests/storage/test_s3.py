"""pipeline/storage/s3.py against moto's S3 server and SeaweedFS (both real, on loopback)."""

from __future__ import annotations

import os
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from storage_helpers import MIB, sha256_b64, sha256_hex, write_file

from pipeline.storage import S3Settings, StorageError
from pipeline.storage.s3 import S3Target, s3_error


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
        f"S3 ListMultipartUploads failed for s3://no-such-bucket-here/run1/clips/a.mp4 at {endpoint}: "
        "NoSuchBucket: "
        f"The specified bucket does not exist; {fix}"
    )

    with pytest.raises(StorageError, match="NoSuchBucket"):
        target.list_keys("clips/")


def test_unreachable_endpoint_error_names_the_endpoint(aws_test_env: dict[str, str]) -> None:
    with socket_closed_port() as port:
        endpoint = f"http://127.0.0.1:{port}"
        settings = S3Settings(endpoint_url=endpoint, region="us-east-1", max_attempts=1, connect_timeout_s=2)
        target = S3Target("some-bucket", "", settings)
        with pytest.raises(StorageError) as excinfo:
            target.read_bytes("clips/a.mp4")
    assert str(excinfo.value) == (
        f"S3 GetObject failed for s3://some-bucket/clips/a.mp4 at {endpoint}: EndpointConnectionError: "
        f'Could not connect to the endpoint URL: "{endpoint}/some-bucket/clips/a.mp4"; cannot reach '
        f"{endpoint}; check --s3-endpoint-url and the network"
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


@pytest.mark.integration
def test_seaweed_rejects_a_wrong_checksum_so_these_tests_mean_something(s3_seaweed) -> None:
    bucket = s3_seaweed.make_bucket()
    wrong = sha256_b64(b"something else")

    with pytest.raises(ClientError) as excinfo:
        s3_seaweed.client().put_object(Bucket=bucket, Key="k", Body=b"data", ChecksumSHA256=wrong)

    error = s3_error(excinfo.value, "PutObject", bucket, "k", s3_seaweed.settings())
    assert error.code == "BadDigest"
    assert str(error).endswith(
        "; the store rejected the request's checksum; if it rejects boto3>=1.36 default checksums pass "
        "--checksum-mode when_required or --checksum-algorithm none"
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


@pytest.mark.integration
def test_seaweed_honours_conditional_writes_as_claims_need(s3_seaweed) -> None:
    target = S3Target(s3_seaweed.make_bucket(), "run", s3_seaweed.settings())
    assert target.put_bytes_if(b"a", "claims/x.json", "application/json", None)
    assert not target.put_bytes_if(b"b", "claims/x.json", "application/json", None)
    _, version = target.read_versioned("claims/x.json")
    assert target.put_bytes_if(b"c", "claims/x.json", "application/json", version)
    assert not target.put_bytes_if(b"d", "claims/x.json", "application/json", version)


def test_an_upload_a_killed_writer_left_unfinished_is_aborted_before_the_key_is_written_again(
    s3_moto, tmp_path: Path
) -> None:
    bucket = s3_moto.make_bucket()
    client = s3_moto.client()
    orphan = client.create_multipart_upload(Bucket=bucket, Key="run1/clips/abc.mp4")["UploadId"]
    client.upload_part(
        Bucket=bucket, Key="run1/clips/abc.mp4", UploadId=orphan, PartNumber=1, Body=b"x" * 100
    )
    client.create_multipart_upload(Bucket=bucket, Key="run1/clips/abcd.mp4")  # another key: left alone
    target = S3Target(bucket, "run1", s3_moto.settings())

    target.put_file(write_file(tmp_path / "abc.mp4", b"frames"), "clips/abc.mp4", "video/mp4", {})

    uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [u["Key"] for u in uploads] == ["run1/clips/abcd.mp4"]
    assert target.read_bytes("clips/abc.mp4") == b"frames"
