"""Where a run reads and writes: a local folder or ``s3://bucket/prefix``, behind one small interface.

target.py     the OutputTarget interface, stored objects, storage errors, key rules
local.py      a local folder (atomic writes)
s3.py         S3 and S3-compatible stores (boto3)
settings.py   S3Settings: endpoint, addressing, checksums, retries, timeouts
fetch.py      reading a prompt file, mirroring a model folder to local disk
"""

from __future__ import annotations

from pathlib import Path

from pipeline.storage.local import LocalTarget
from pipeline.storage.settings import S3Client, S3Settings, parse_s3_uri
from pipeline.storage.target import OutputTarget, StorageError, StoredObject


def open_target(
    uri: str, settings: S3Settings = S3Settings(), *, client: S3Client | None = None
) -> OutputTarget:
    """'s3://bucket/prefix' -> S3Target; a local path -> LocalTarget (the folder is created)."""
    if uri.startswith("s3://"):
        from pipeline.storage.s3 import S3Target  # boto3 only where a target is on S3

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


__all__ = ["OutputTarget", "S3Settings", "StorageError", "StoredObject", "open_target"]
