"""Reading inputs from a local path or S3: the prompt file, and model folders mirrored to local disk."""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import time
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from pipeline.storage.local import TMP_MARK
from pipeline.storage.s3 import S3Target, s3_error
from pipeline.storage.settings import S3Client, S3Settings, parse_s3_uri
from pipeline.storage.target import check_key

log = logging.getLogger(__name__)

MODEL_CACHE_ENV = "RENDER_MODEL_CACHE"  # where model folders from S3 are kept on each node
DEFAULT_MODEL_CACHE = "~/.cache/deepforcing-render"


def read_input(uri: str, settings: S3Settings = S3Settings(), *, client: S3Client | None = None) -> bytes:
    """A whole input file (a prompt list) from a local path or s3://bucket/key."""
    if uri.startswith("s3://"):
        bucket, key = parse_s3_uri(uri)
        if not key:
            raise ValueError(
                f"S3 URI {uri!r} names a bucket but no object; use s3://bucket/path/prompts.jsonl"
            )
        return S3Target(bucket, "", settings, client=client).read_bytes(key)
    return Path(uri).expanduser().read_bytes()  # FileNotFoundError names the path


def model_folder(uri: str, settings: S3Settings = S3Settings(), cache_root: Path | None = None) -> Path:
    """A local model folder as it is; an s3:// URI mirrored (once per node) under `cache_root`, through
    the run's S3 settings (endpoint, region, checksum mode)."""
    if not uri.startswith("s3://"):
        path = Path(uri).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"model folder not found: {path}")
        return path
    root = cache_root or Path(os.environ.get(MODEL_CACHE_ENV, DEFAULT_MODEL_CACHE)).expanduser()
    dest = root / "models" / hashlib.sha256(uri.encode()).hexdigest()[:16]
    log.info("fetching model folder %s into %s", uri, dest)
    return download_tree(uri, dest, settings)


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
        relative = check_key(key[len(list_prefix) :], what=f"object key {key!r} under {uri}")
        target = dest / relative
        if target.is_file() and target.stat().st_size == size:
            skipped += 1
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}{TMP_MARK}{os.getpid()}")
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
