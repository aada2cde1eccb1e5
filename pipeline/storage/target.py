"""The interface every output target implements, and the key rules all of them enforce."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

SHA256_METADATA_KEY = "sha256"  # our whole-file digest, stored as x-amz-meta-sha256


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


def check_key(key: str, what: str = "object key") -> str:
    """Keys are '/'-separated relative names; this also keeps LocalTarget inside its root."""
    segments = key.split("/")
    bad_char = "\\" in key or "\0" in key
    if not key or key.startswith("/") or bad_char or any(s in ("", ".", "..") for s in segments):
        raise ValueError(
            f"{what} {key!r} must be a relative path of '/'-separated names without empty, '.' or '..' "
            "segments, e.g. 'clips/abc123.mp4'"
        )
    return key


def check_prefix(prefix: str) -> str:
    if prefix:
        check_key(prefix.removesuffix("/"), what="key prefix")
    return prefix


def check_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
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


class OutputTarget(ABC):
    """Where a run writes: keys are relative, '/'-separated (``clips/<id>.mp4``)."""

    uri: str  # the target itself: an absolute local folder or s3://bucket/prefix

    @abstractmethod
    def url_for(self, key: str) -> str: ...

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
    def read_versioned(self, key: str) -> tuple[bytes, str]:
        """The object's content and a tag of this version of it, for `put_bytes_if`."""

    @abstractmethod
    def put_bytes_if(self, data: bytes, key: str, content_type: str, version: str | None) -> str | None:
        """Store `data` only if the object is still at `version` (None: only if there is none yet), and
        return the new version's tag.

        None, and nothing written, when another writer came first: of writers racing for one object,
        exactly one wins. This is what keeps two runs from rendering the same clip (worker/claims.py).
        """

    @abstractmethod
    def list_keys(self, prefix: str) -> list[str]:
        """Sorted keys that start with prefix (a plain string prefix, as S3 does)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; a missing one is not an error."""

    def delete_many(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.delete(key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"
