"""S3 and S3-compatible stores as an output target (boto3), with errors that name the object, the store
and the fix.

Facts this module relies on (docs/ecosystem.md §3):
- ``upload_file`` + ``TransferConfig`` reads parts in parallel and retries per part.
- boto3 >= 1.36 sends checksums on every request by default; some S3-compatible stores reject
  them, hence ``request_checksum_calculation="when_required"``.
- A multipart upload's checksum is per part: SeaweedFS returns a composite ``<b64>-<parts>``, so our
  own whole-file SHA-256 lives in the object's ``Metadata["sha256"]`` for end-to-end checks.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from pipeline.digest import file_sha256
from pipeline.storage.settings import MIB, S3Client, S3Settings, parse_s3_uri
from pipeline.storage.target import (
    SHA256_METADATA_KEY,
    OutputTarget,
    StorageError,
    StoredObject,
    check_key,
    check_metadata,
    check_prefix,
)

log = logging.getLogger(__name__)

_CREDENTIAL_CODES = {
    "AccessDenied",
    "403",
    "Forbidden",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
}
_CHECKSUM_CODES = {"BadDigest", "XAmzContentSHA256Mismatch", "InvalidDigest"}
# A conditional write that lost: the object exists (If-None-Match) or moved on (If-Match), or another
# conditional write to it is in flight (S3 answers 409 then).
_LOST_RACE_CODES = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}


def _hint(code: str, bucket: str, settings: S3Settings) -> str:
    if code in ("NoSuchBucket", "NoSuchBucketAtEndpoint"):
        return f"bucket {bucket!r} does not exist at {settings.endpoint_label}; create it or fix the URI"
    if code in _CREDENTIAL_CODES:
        return (
            "check the credentials of the standard AWS chain (AWS_PROFILE, AWS_ACCESS_KEY_ID/"
            f"AWS_SECRET_ACCESS_KEY, instance profile) and the policy of bucket {bucket!r}"
        )
    if code == "NoCredentialsError":
        return (
            "no credentials in the standard AWS chain; set AWS_PROFILE or AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY, or attach an instance profile. A `ray job submit` job has the "
            "environment of `ray start`, not of the submitting shell: pass "
            """--runtime-env-json '{"env_vars": {"AWS_PROFILE": "..."}}'"""
        )
    if code in (
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionClosedError",
    ):
        return f"cannot reach {settings.endpoint_label}; check --s3-endpoint-url and the network"
    if code in ("PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"):
        return f"bucket {bucket!r} is in another region; pass it as --s3-region"
    checksum_fix = (
        "if it rejects boto3>=1.36 default checksums pass --checksum-mode when_required "
        "or --checksum-algorithm none"
    )
    if code in _CHECKSUM_CODES:
        return f"the store rejected the request's checksum; {checksum_fix}"
    if code == "InvalidArgument":  # how OVH, among others, rejects the checksum headers
        return f"the store rejected an argument; {checksum_fix}"
    return ""


class S3Target(OutputTarget):
    def __init__(
        self, bucket: str, prefix: str, settings: S3Settings, client: S3Client | None = None
    ) -> None:
        self.bucket, self.prefix = parse_s3_uri(f"s3://{bucket}/{prefix}")
        self.settings = settings
        self.client = client if client is not None else settings.boto3_client()
        self._transfer = settings.transfer_config()
        self.uri = f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def _full_key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def url_for(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._full_key(key)}"

    @contextlib.contextmanager
    def _errors(self, operation: str, full_key: str) -> Iterator[None]:
        try:
            yield
        except (ClientError, BotoCoreError, S3UploadFailedError) as exc:
            raise s3_error(exc, operation, self.bucket, full_key, self.settings) from exc

    def put_file(
        self,
        local_path: Path,
        key: str,
        content_type: str,
        metadata: Mapping[str, str],
        sha256: str | None = None,
    ) -> StoredObject:
        full = self._full_key(key)
        local_path = Path(local_path)
        size = local_path.stat().st_size  # FileNotFoundError names the path
        digest = sha256 or file_sha256(local_path)
        extra: dict[str, Any] = {
            "ContentType": content_type,
            "Metadata": {**check_metadata(metadata), SHA256_METADATA_KEY: digest},
        }
        if self.settings.checksum_algorithm:
            extra["ChecksumAlgorithm"] = self.settings.checksum_algorithm
        start = time.monotonic()
        self._abort_unfinished_uploads(full)
        with self._errors("upload_file", full):
            # Same key on a retry: S3 PUT/CompleteMultipartUpload replace the object atomically.
            self.client.upload_file(
                str(local_path), self.bucket, full, ExtraArgs=extra, Config=self._transfer
            )
            head = self.client.head_object(Bucket=self.bucket, Key=full, ChecksumMode="ENABLED")
        seconds = time.monotonic() - start
        if head["ContentLength"] != size or head.get("Metadata", {}).get(SHA256_METADATA_KEY) != digest:
            raise StorageError(
                f"s3://{self.bucket}/{full} at {self.settings.endpoint_label} holds "
                f"{head['ContentLength']} bytes with sha256 metadata "
                f"{head.get('Metadata', {}).get(SHA256_METADATA_KEY)!r} right after uploading {size} bytes "
                f"with sha256={digest}; another writer raced this key, or the store dropped metadata",
                code="VerifyFailed",
                uri=f"s3://{self.bucket}/{full}",
                endpoint=self.settings.endpoint_label,
            )
        log.info(
            "uploaded s3://%s/%s: %d bytes in %.2f s (%.1f MiB/s)",
            self.bucket,
            full,
            size,
            seconds,
            size / MIB / max(seconds, 1e-6),
        )
        return StoredObject(
            uri=f"s3://{self.bucket}/{full}", bytes=size, sha256=digest, checksum=self._checksum_of(head)
        )

    def _abort_unfinished_uploads(self, full: str) -> None:
        """Abort multipart uploads to this key that a killed writer left: their parts cost storage and
        no one will complete them. Only a clip's claimant uploads its key (worker/claims.py)."""
        with self._errors("ListMultipartUploads", full):
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=full
            )
            for upload in (u for page in pages for u in page.get("Uploads", []) if u["Key"] == full):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload["UploadId"])
                log.info(
                    "aborted an unfinished upload of s3://%s/%s (%s)", self.bucket, full, upload["UploadId"]
                )

    def _checksum_of(self, response: Mapping[str, Any]) -> str | None:
        algorithm = self.settings.checksum_algorithm
        return response.get(f"Checksum{algorithm}") if algorithm else None

    def put_bytes(self, data: bytes, key: str, content_type: str) -> StoredObject:
        full = self._full_key(key)
        digest = hashlib.sha256(data).hexdigest()
        extra: dict[str, Any] = {"ContentType": content_type, "Metadata": {SHA256_METADATA_KEY: digest}}
        if self.settings.checksum_algorithm:
            extra["ChecksumAlgorithm"] = self.settings.checksum_algorithm
        with self._errors("PutObject", full):
            response = self.client.put_object(Bucket=self.bucket, Key=full, Body=data, **extra)
        return StoredObject(
            uri=f"s3://{self.bucket}/{full}",
            bytes=len(data),
            sha256=digest,
            checksum=self._checksum_of(response),
        )

    def read_versioned(self, key: str) -> tuple[bytes, str]:
        full = self._full_key(key)
        try:
            with self._errors("GetObject", full):
                response = self.client.get_object(Bucket=self.bucket, Key=full)
                return response["Body"].read(), response["ETag"]
        except StorageError as exc:
            if exc.code in ("NoSuchKey", "404"):
                raise FileNotFoundError(
                    f"no object s3://{self.bucket}/{full} at {self.settings.endpoint_label}"
                ) from None
            raise

    def put_bytes_if(self, data: bytes, key: str, content_type: str, version: str | None) -> str | None:
        full = self._full_key(key)
        condition = {"IfNoneMatch": "*"} if version is None else {"IfMatch": version}
        try:
            with self._errors("PutObject", full):
                response = self.client.put_object(
                    Bucket=self.bucket, Key=full, Body=data, ContentType=content_type, **condition
                )
        except StorageError as exc:
            if exc.code in _LOST_RACE_CODES:
                return None
            raise
        return str(response["ETag"])

    def read_bytes(self, key: str) -> bytes:
        full = self._full_key(key)
        try:
            with self._errors("GetObject", full):
                return self.client.get_object(Bucket=self.bucket, Key=full)["Body"].read()
        except StorageError as exc:
            if exc.code in ("NoSuchKey", "404"):
                raise FileNotFoundError(
                    f"no object s3://{self.bucket}/{full} at {self.settings.endpoint_label}"
                ) from None
            raise

    def list_keys(self, prefix: str) -> list[str]:
        check_prefix(prefix)
        full_prefix = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        with self._errors("ListObjectsV2", full_prefix):
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=full_prefix
            ):
                keys.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        return sorted(keys)

    def delete(self, key: str) -> None:
        full = self._full_key(key)
        with self._errors("DeleteObject", full):
            self.client.delete_object(Bucket=self.bucket, Key=full)

    def delete_many(self, keys: Iterable[str]) -> None:
        full_keys = [self._full_key(k) for k in keys]
        for i in range(0, len(full_keys), 1000):  # DeleteObjects takes at most 1000 keys
            batch = full_keys[i : i + 1000]
            with self._errors("DeleteObjects", batch[0]):
                response = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
                )
            if errors := response.get("Errors"):
                first = errors[0]
                raise StorageError(
                    f"S3 DeleteObjects failed for {len(errors)} of {len(batch)} keys in bucket "
                    f"{self.bucket!r} at {self.settings.endpoint_label}, first s3://{self.bucket}/"
                    f"{first.get('Key')}: {first.get('Code')}: {first.get('Message')}",
                    code=str(first.get("Code")),
                    uri=f"s3://{self.bucket}/{first.get('Key')}",
                    endpoint=self.settings.endpoint_label,
                )


def s3_error(exc: BaseException, operation: str, bucket: str, key: str, settings: S3Settings) -> StorageError:
    """Turn a boto3/botocore failure into a StorageError naming the object, the endpoint and a fix."""
    cause = exc
    if isinstance(exc, S3UploadFailedError) and isinstance(exc.__context__, ClientError):
        cause = exc.__context__  # s3transfer wraps the ClientError and keeps it only as context
    if isinstance(cause, ClientError):
        error = cause.response.get("Error", {})
        code = str(error.get("Code") or cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode"))
        detail = error.get("Message") or str(cause)
    elif isinstance(cause, NoCredentialsError):
        code, detail = "NoCredentialsError", str(cause)
    else:
        code, detail = type(cause).__name__, str(cause)
    uri = f"s3://{bucket}/{key}"
    hint = _hint(code, bucket, settings)
    message = f"S3 {operation} failed for {uri} at {settings.endpoint_label}: {code}: {detail}"
    return StorageError(
        f"{message}; {hint}" if hint else message, code=code, uri=uri, endpoint=settings.endpoint_label
    )
