"""Where a run writes: a local folder or ``s3://bucket/prefix``, behind one small interface.

One frozen ``S3Settings`` builds every client the project uses (boto3 for objects, pyarrow for
Parquet), so an S3-compatible store is configured once: endpoint, addressing style, checksum
behaviour, retries. Credentials come only from the standard AWS chain (environment, ``~/.aws``,
instance profile); they are never arguments and never logged.

Facts this module relies on (pipeline_ecosystem.md §2):
- ``upload_file`` + ``TransferConfig`` reads parts in parallel and retries per part.
- boto3 >= 1.36 sends checksums on every request by default; some S3-compatible stores reject
  them, hence ``request_checksum_calculation="when_required"``.
- pyarrow 26 ignores ``AWS_ENDPOINT_URL``: the endpoint is passed as ``endpoint_override`` + ``scheme``.
- A multipart upload's checksum is per part: SeaweedFS returns a composite ``<b64>-<parts>``, so our
  own whole-file SHA-256 lives in the object's ``Metadata["sha256"]`` for end-to-end checks.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import logging
import os
import re
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pyarrow.fs as pafs
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

log = logging.getLogger(__name__)

S3Client = Any  # botocore generates the client class at runtime; there are no stubs in our deps

MIB = 1024 * 1024
S3_MIN_PART_MB = 5  # S3 rejects multipart parts below 5 MiB (except the last one)
CHECKSUM_ALGORITHMS = ("CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256")  # boto3 ChecksumAlgorithm values
SHA256_METADATA_KEY = "sha256"  # our whole-file digest, stored as x-amz-meta-sha256
_HASH_BLOCK = 4 * MIB  # read size when copying files (hashing them as they go)
_TMP_MARK = ".tmp-"  # local temp files are ".<name>.tmp-<hex>"; list_keys never shows them
_SESSION_LOCK = threading.Lock()


@functools.cache
def _boto3_session() -> boto3.session.Session:
    """One Session per process, as boto3.client() uses: building one costs ~0.1 s of model loading."""
    return boto3.session.Session()


@dataclass(frozen=True)
class S3Settings:
    endpoint_url: str | None = None  # S3-compatible stores / tests, e.g. "http://127.0.0.1:8333"; None = AWS
    region: str | None = None  # None: boto3's chain (AWS_DEFAULT_REGION, ~/.aws/config)
    addressing_style: str = "auto"  # "path" for IP/local endpoints, "virtual", or "auto"
    checksum_algorithm: str = "SHA256"  # sent with uploads and verified by the store; "" disables
    request_checksum_calculation: str = "when_supported"  # "when_required": stores rejecting boto3>=1.36 CRCs
    response_checksum_validation: str = "when_supported"  # "when_required" to skip validating downloads
    multipart_threshold_mb: int = 16  # files at least this big go multipart; clips are 10-50 MB
    multipart_chunk_mb: int = 16  # part size; S3 needs >= 5 MiB and <= 10,000 parts
    max_concurrency: int = 8  # parallel part uploads/downloads per transfer
    max_attempts: int = 10  # botocore retries (per request, per part)
    retry_mode: str = "standard"  # "standard" or "adaptive" (client-side rate limiting)
    connect_timeout_s: float = 10.0  # a dead endpoint fails fast instead of hanging an actor
    read_timeout_s: float = 120.0  # per socket read; a stalled part is retried

    def __post_init__(self) -> None:
        if self.endpoint_url is not None:
            parts = urlsplit(self.endpoint_url)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
                raise ValueError(
                    f"S3Settings.endpoint_url={self.endpoint_url!r} must look like http(s)://host:port "
                    "with no path, e.g. 'http://127.0.0.1:8333'"
                )
        _check_choice("addressing_style", self.addressing_style, ("auto", "path", "virtual"))
        _check_choice("checksum_algorithm", self.checksum_algorithm, ("", *CHECKSUM_ALGORITHMS))
        for name in ("request_checksum_calculation", "response_checksum_validation"):
            _check_choice(name, getattr(self, name), ("when_supported", "when_required"))
        _check_choice("retry_mode", self.retry_mode, ("standard", "adaptive", "legacy"))
        if self.multipart_chunk_mb < S3_MIN_PART_MB:
            raise ValueError(
                f"S3Settings.multipart_chunk_mb={self.multipart_chunk_mb} is below S3's minimum part size; "
                f"use {S3_MIN_PART_MB} or more"
            )
        for name in ("multipart_threshold_mb", "max_concurrency", "max_attempts"):
            if getattr(self, name) < 1:
                raise ValueError(f"S3Settings.{name}={getattr(self, name)} must be at least 1")

    @property
    def endpoint_label(self) -> str:
        """The endpoint as error messages name it."""
        return self.endpoint_url or "AWS default endpoint"

    def botocore_config(self) -> Config:
        return Config(
            region_name=self.region,
            s3={"addressing_style": self.addressing_style},
            retries={"mode": self.retry_mode, "max_attempts": self.max_attempts},
            request_checksum_calculation=self.request_checksum_calculation,
            response_checksum_validation=self.response_checksum_validation,
            max_pool_connections=max(10, self.max_concurrency + 2),  # parts + a HEAD/LIST alongside
            connect_timeout=self.connect_timeout_s,
            read_timeout=self.read_timeout_s,
        )

    def boto3_client(self) -> S3Client:
        """A thread-safe client; credentials come from the standard chain, resolved by boto3."""
        with _SESSION_LOCK:  # boto3 Sessions are not thread-safe; the clients they make are
            return _boto3_session().client(
                "s3", endpoint_url=self.endpoint_url, config=self.botocore_config()
            )

    def transfer_config(self) -> TransferConfig:
        return TransferConfig(
            multipart_threshold=self.multipart_threshold_mb * MIB,
            multipart_chunksize=self.multipart_chunk_mb * MIB,
            max_concurrency=self.max_concurrency,
        )

    def arrow_filesystem(self) -> pafs.S3FileSystem:
        """pyarrow's S3 filesystem for the same store (credentials: the AWS SDK's default chain)."""
        kwargs: dict[str, Any] = {
            "region": self.region or _boto3_session().region_name,
            "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=self.max_attempts),
            "connect_timeout": self.connect_timeout_s,
            "request_timeout": self.read_timeout_s,
            # pyarrow uses path style whenever endpoint_override is set, unless forced to virtual.
            "force_virtual_addressing": self.addressing_style == "virtual",
        }
        if self.endpoint_url is not None:
            parts = urlsplit(self.endpoint_url)
            kwargs["endpoint_override"] = parts.netloc
            kwargs["scheme"] = parts.scheme
        return pafs.S3FileSystem(**{k: v for k, v in kwargs.items() if v is not None})


@dataclass(frozen=True)
class StoredObject:
    uri: str  # where it landed: s3://bucket/key or an absolute local path
    bytes: int  # object size
    sha256: str  # hex SHA-256 of the whole content (ours, not the store's)
    checksum: str | None  # the store's Checksum<algorithm> (e.g. ChecksumSHA256); None for local


class StorageError(RuntimeError):
    """An S3 call failed; the message names the operation, the object, the endpoint and a fix."""

    def __init__(self, message: str, *, code: str, uri: str, endpoint: str) -> None:
        super().__init__(message)
        self.code = code  # S3 error code (NoSuchBucket, AccessDenied, ...) or the botocore exception name
        self.uri = uri
        self.endpoint = endpoint


# ---------------------------------------------------------------------------------------------
# 1. Validation helpers
# ---------------------------------------------------------------------------------------------

_BUCKET_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]")


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"S3Settings.{name}={value!r} is not one of {', '.join(repr(a) for a in allowed)}")


def _check_key(key: str, what: str = "object key") -> str:
    """Keys are '/'-separated relative names; this also keeps LocalTarget inside its root."""
    segments = key.split("/")
    bad_char = "\\" in key or "\0" in key
    if not key or key.startswith("/") or bad_char or any(s in ("", ".", "..") for s in segments):
        raise ValueError(
            f"{what} {key!r} must be a relative path of '/'-separated names without empty, '.' or '..' "
            "segments, e.g. 'clips/abc123.mp4'"
        )
    return key


def _check_prefix(prefix: str) -> str:
    if prefix:
        _check_key(prefix.removesuffix("/"), what="key prefix")
    return prefix


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """'s3://bucket/some/prefix' -> ('bucket', 'some/prefix'); trailing slashes are dropped."""
    if not uri.startswith("s3://"):
        raise ValueError(f"{uri!r} is not an S3 URI; use s3://bucket/prefix")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not _BUCKET_RE.fullmatch(bucket):
        raise ValueError(
            f"S3 URI {uri!r} has no valid bucket name (got {bucket!r}); use s3://bucket/prefix with a "
            "bucket of 3-255 letters, digits, '.', '-' or '_'"
        )
    key = key.strip("/")
    if key:
        _check_key(key, what=f"in S3 URI {uri!r}, the key")
    return bucket, key


def file_sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _check_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """S3 user metadata travels as HTTP headers: ASCII only, 2 KB in all."""
    for name, value in metadata.items():
        if name.lower() == SHA256_METADATA_KEY:
            raise ValueError(f"metadata key {name!r} is reserved; pass the digest as put_file(sha256=...)")
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name) or not value.isascii() or not value.isprintable():
            raise ValueError(
                f"metadata {name!r}={value[:40]!r} cannot be sent as an S3 header: keys must be "
                "[A-Za-z0-9_-]+ and values printable ASCII; put free text (prompts) in the metrics row"
            )
    if sum(len(k) + len(v) for k, v in metadata.items()) > 1900:  # 2 KB limit minus our sha256 entry
        raise ValueError(f"metadata is too large for S3 (2 KB limit): keys {sorted(metadata)}")
    return dict(metadata)


# ---------------------------------------------------------------------------------------------
# 2. The interface
# ---------------------------------------------------------------------------------------------


class OutputTarget(ABC):
    """Where a run writes: keys are relative, '/'-separated (``clips/<id>.mp4``)."""

    uri: str  # the target itself: an absolute local folder or s3://bucket/prefix

    @abstractmethod
    def url_for(self, key: str) -> str: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def put_file(
        self,
        local_path: Path,
        key: str,
        content_type: str,
        metadata: Mapping[str, str],
        sha256: str | None = None,
    ) -> StoredObject:
        """Store a file under key, replacing any object there (a retried clip rewrites its own key)."""

    @abstractmethod
    def put_bytes(self, data: bytes, key: str, content_type: str) -> StoredObject: ...

    @abstractmethod
    def read_bytes(self, key: str) -> bytes:
        """The object's content; FileNotFoundError naming it if there is none."""

    @abstractmethod
    def list_keys(self, prefix: str) -> list[str]:
        """Sorted keys that start with prefix (a plain string prefix, as S3 does)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; a missing one is not an error."""

    def delete_many(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.delete(key)

    @abstractmethod
    def arrow_filesystem(self) -> tuple[pafs.FileSystem, str]:
        """(filesystem, base path) so that f"{base}/{key}" opens key with pyarrow."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"


# ---------------------------------------------------------------------------------------------
# 3. Local folder
# ---------------------------------------------------------------------------------------------


class LocalTarget(OutputTarget):
    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def url_for(self, key: str) -> str:
        return str(self._path(key))

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def _write_atomically(
        self, dest: Path, chunks: Iterable[bytes], source: str, expect_sha256: str | None = None
    ) -> tuple[int, str]:
        """Write to a temp file beside dest, fsync, then os.replace: readers see old or new, never half."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}{_TMP_MARK}{uuid.uuid4().hex[:12]}")
        digest, size = hashlib.sha256(), 0
        try:
            with tmp.open("wb") as f:
                for chunk in chunks:
                    digest.update(chunk)
                    f.write(chunk)
                    size += len(chunk)
                f.flush()
                os.fsync(f.fileno())
            if expect_sha256 is not None and expect_sha256 != digest.hexdigest():
                raise ValueError(
                    f"{source} hashed to sha256={digest.hexdigest()} while copying to {dest}, but the caller "
                    f"passed sha256={expect_sha256}; the file changed after it was hashed"
                )
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return size, digest.hexdigest()

    def put_file(
        self,
        local_path: Path,
        key: str,
        content_type: str,
        metadata: Mapping[str, str],
        sha256: str | None = None,
    ) -> StoredObject:
        # content_type and metadata have no home on a plain filesystem; they are still validated so a
        # bad value fails on a laptop run, not first on S3.
        _check_metadata(metadata)
        dest = self._path(key)
        with Path(local_path).open("rb") as src:
            chunks = iter(lambda: src.read(_HASH_BLOCK), b"")
            size, digest = self._write_atomically(dest, chunks, str(local_path), expect_sha256=sha256)
        return StoredObject(uri=str(dest), bytes=size, sha256=digest, checksum=None)

    def put_bytes(self, data: bytes, key: str, content_type: str) -> StoredObject:
        dest = self._path(key)
        size, digest = self._write_atomically(dest, [data], "data")
        return StoredObject(uri=str(dest), bytes=size, sha256=digest, checksum=None)

    def read_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"no object {key!r} in {self.uri} (looked for {path})") from None

    def list_keys(self, prefix: str) -> list[str]:
        _check_prefix(prefix)
        # Walk only the deepest folder the prefix names, then filter by the string prefix.
        start = self.root / prefix.rpartition("/")[0] if "/" in prefix else self.root
        if not start.is_dir():
            return []
        keys = []
        for dirpath, _, filenames in os.walk(start):
            for name in filenames:
                if name.startswith(".") and _TMP_MARK in name:
                    continue
                key = Path(dirpath, name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def arrow_filesystem(self) -> tuple[pafs.FileSystem, str]:
        return pafs.LocalFileSystem(), str(self.root)


# ---------------------------------------------------------------------------------------------
# 4. S3 (and S3-compatible stores)
# ---------------------------------------------------------------------------------------------

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
            "AWS_SECRET_ACCESS_KEY, or attach an instance profile"
        )
    if code in (
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionClosedError",
    ):
        return f"cannot reach {settings.endpoint_label}; check S3Settings.endpoint_url and the network"
    if code in ("PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"):
        return f"bucket {bucket!r} is in another region; set S3Settings.region to it"
    checksum_fix = (
        "if it rejects boto3>=1.36 default checksums set "
        "S3Settings(request_checksum_calculation='when_required') or checksum_algorithm=''"
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
        self._bucket_checked = False  # set once a HEAD on the bucket succeeded
        self.uri = f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def _full_key(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def url_for(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._full_key(key)}"

    @contextlib.contextmanager
    def _errors(self, operation: str, full_key: str) -> Iterator[None]:
        try:
            yield
        except (ClientError, BotoCoreError, S3UploadFailedError) as exc:
            raise s3_error(exc, operation, self.bucket, full_key, self.settings) from exc

    def _ensure_bucket(self) -> None:
        """A HEAD on a missing object and on a missing bucket both say 404; tell them apart once."""
        if self._bucket_checked:
            return
        try:
            with self._errors("HeadBucket", ""):
                self.client.head_bucket(Bucket=self.bucket)
        except StorageError as exc:
            if exc.code not in ("404", "NotFound"):
                raise
            # HEAD responses carry no body, so the store cannot say "NoSuchBucket" itself.
            raise StorageError(
                f"S3 HeadBucket failed for s3://{self.bucket} at {self.settings.endpoint_label}: "
                f"NoSuchBucket; {_hint('NoSuchBucket', self.bucket, self.settings)}",
                code="NoSuchBucket",
                uri=f"s3://{self.bucket}",
                endpoint=self.settings.endpoint_label,
            ) from exc
        self._bucket_checked = True

    def exists(self, key: str) -> bool:
        full = self._full_key(key)
        try:
            with self._errors("HeadObject", full):
                self.client.head_object(Bucket=self.bucket, Key=full)
        except StorageError as exc:
            if exc.code not in ("404", "NoSuchKey", "NotFound"):
                raise
            self._ensure_bucket()
            return False
        return True

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
            "Metadata": {**_check_metadata(metadata), SHA256_METADATA_KEY: digest},
        }
        if self.settings.checksum_algorithm:
            extra["ChecksumAlgorithm"] = self.settings.checksum_algorithm
        start = time.monotonic()
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
        _check_prefix(prefix)
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

    def arrow_filesystem(self) -> tuple[pafs.FileSystem, str]:
        return self.settings.arrow_filesystem(), f"{self.bucket}/{self.prefix}".rstrip("/")


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


# ---------------------------------------------------------------------------------------------
# 5. Entry points: open a target, read a prompt file, fetch a model folder
# ---------------------------------------------------------------------------------------------


def open_target(
    uri: str, settings: S3Settings = S3Settings(), *, client: S3Client | None = None
) -> OutputTarget:
    """'s3://bucket/prefix' -> S3Target; a local path -> LocalTarget (the folder is created)."""
    if uri.startswith("s3://"):
        bucket, prefix = parse_s3_uri(uri)
        return S3Target(bucket, prefix, settings, client=client)
    if not uri.strip() or "://" in uri:
        raise ValueError(
            f"output URI {uri!r} is neither s3://bucket/prefix nor a local folder path; "
            "use e.g. s3://my-bucket/run1 or ./renders/run1"
        )
    root = Path(uri).expanduser()
    if root.exists() and not root.is_dir():
        raise ValueError(f"output path {uri!r} exists and is not a folder; pass a folder path")
    root.mkdir(parents=True, exist_ok=True)
    return LocalTarget(root)


def read_text(uri: str, settings: S3Settings = S3Settings(), *, client: S3Client | None = None) -> str:
    """A UTF-8 text file (a prompt list) from a local path or s3://bucket/key."""
    if uri.startswith("s3://"):
        bucket, key = parse_s3_uri(uri)
        if not key:
            raise ValueError(
                f"S3 URI {uri!r} names a bucket but no object; use s3://bucket/path/prompts.jsonl"
            )
        data = S3Target(bucket, "", settings, client=client).read_bytes(key)
    else:
        data = Path(uri).expanduser().read_bytes()  # FileNotFoundError names the path
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{uri} is not UTF-8 text ({exc}); save it as UTF-8") from None


def download_tree(
    uri: str,
    dest: Path,
    settings: S3Settings = S3Settings(),
    *,
    client: S3Client | None = None,
) -> Path:
    """Mirror every object under s3://bucket/prefix into dest (a model folder) and return dest.

    Files already present with the same size are skipped, each download lands under a temp name and
    is renamed into place, and an fcntl lock beside dest makes the actors of one node download once
    (the others wait, then find everything present).
    """
    bucket, prefix = parse_s3_uri(uri)
    dest = Path(dest).expanduser()
    client = client if client is not None else settings.boto3_client()
    list_prefix = f"{prefix}/" if prefix else ""  # "models/wan" must not match "models/wan2/..."
    dest.parent.mkdir(parents=True, exist_ok=True)
    lock_path = dest.with_name(f".{dest.name}.lock")
    with lock_path.open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process downloading %s into %s", uri, dest)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            objects = []
            try:
                for page in client.get_paginator("list_objects_v2").paginate(
                    Bucket=bucket, Prefix=list_prefix
                ):
                    objects.extend(page.get("Contents", []))
            except (ClientError, BotoCoreError) as exc:
                raise s3_error(exc, "ListObjectsV2", bucket, list_prefix, settings) from exc
            files = [(o["Key"], o["Size"]) for o in objects if not o["Key"].endswith("/")]
            if not files:
                raise FileNotFoundError(f"no objects under {uri} at {settings.endpoint_label}; check the URI")
            return _download_files(client, settings, bucket, list_prefix, files, dest, uri)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _download_files(
    client: S3Client,
    settings: S3Settings,
    bucket: str,
    list_prefix: str,
    files: list[tuple[str, int]],
    dest: Path,
    uri: str,
) -> Path:
    start, fetched, skipped, total = time.monotonic(), 0, 0, 0
    transfer = settings.transfer_config()
    for key, size in files:
        relative = _check_key(key[len(list_prefix) :], what=f"object key {key!r} under {uri}")
        target = dest / relative
        if target.is_file() and target.stat().st_size == size:
            skipped += 1
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}{_TMP_MARK}{os.getpid()}")
        try:
            client.download_file(bucket, key, str(tmp), Config=transfer)
            if tmp.stat().st_size != size:
                got = tmp.stat().st_size
                raise OSError(f"downloaded {got} bytes of s3://{bucket}/{key}, but it is listed as {size}")
            os.replace(tmp, target)
        except (ClientError, BotoCoreError) as exc:
            raise s3_error(exc, "download_file", bucket, key, settings) from exc
        finally:
            tmp.unlink(missing_ok=True)
        fetched += 1
        total += size
    log.info(
        "download_tree %s -> %s: fetched %d files (%d bytes) in %.1f s, %d already present",
        uri,
        dest,
        fetched,
        total,
        time.monotonic() - start,
        skipped,
    )
    return dest
