"""S3 addresses and client settings: one frozen `S3Settings` builds every client the project uses.

An S3-compatible store is configured once: endpoint, addressing style, checksum behaviour, retries.
Credentials come only from the standard AWS chain (environment, ``~/.aws``, instance profile); they are
never arguments and never logged. boto3 is imported by the methods that build clients, so reading
settings (the driver, local runs) costs nothing. Facts behind the defaults: docs/ecosystem.md §3.
"""

from __future__ import annotations

import functools
import re
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pipeline.storage.target import check_key

if TYPE_CHECKING:
    import boto3
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config

S3Client = Any  # botocore generates the client class at runtime; there are no stubs in our deps

MIB = 1024 * 1024
S3_MIN_PART_MB = 5  # S3 rejects multipart parts below 5 MiB (except the last one)
CHECKSUM_ALGORITHMS = ("CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256")  # boto3 ChecksumAlgorithm values
_SESSION_LOCK = threading.Lock()
_BUCKET_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]")


@functools.cache
def boto3_session() -> boto3.session.Session:
    """One Session per process, as boto3.client() uses: building one costs ~0.1 s of model loading."""
    import boto3

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
                    f"--s3-endpoint-url {self.endpoint_url!r} must look like http(s)://host:port "
                    "with no path, e.g. http://127.0.0.1:8333"
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
        from botocore.config import Config

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
            return boto3_session().client("s3", endpoint_url=self.endpoint_url, config=self.botocore_config())

    def transfer_config(self) -> TransferConfig:
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(
            multipart_threshold=self.multipart_threshold_mb * MIB,
            multipart_chunksize=self.multipart_chunk_mb * MIB,
            max_concurrency=self.max_concurrency,
        )


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"S3Settings.{name}={value!r} is not one of {', '.join(repr(a) for a in allowed)}")


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
        check_key(key, what=f"in S3 URI {uri!r}, the key")
    return bucket, key
