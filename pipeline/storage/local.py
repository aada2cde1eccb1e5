"""A local folder as an output target: atomic writes, so a reader never sees half a file."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from pipeline.storage.target import OutputTarget, StoredObject, check_key, check_metadata, check_prefix

MIB = 1024 * 1024
_COPY_BLOCK = 4 * MIB  # read size when copying files (hashing them as they go)
TMP_MARK = ".tmp-"  # local temp files are ".<name>.tmp-<hex>"; list_keys never shows them


class LocalTarget(OutputTarget):
    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def url_for(self, key: str) -> str:
        return str(self._path(key))

    def _write_atomically(
        self, dest: Path, chunks: Iterable[bytes], source: str, expect_sha256: str | None = None
    ) -> tuple[int, str]:
        """Write to a temp file beside dest, fsync, then os.replace: readers see old or new, never half."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}{TMP_MARK}{uuid.uuid4().hex[:12]}")
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
        check_metadata(metadata)
        dest = self._path(key)
        with Path(local_path).open("rb") as src:
            chunks = iter(lambda: src.read(_COPY_BLOCK), b"")
            size, digest = self._write_atomically(dest, chunks, str(local_path), expect_sha256=sha256)
        return StoredObject(uri=str(dest), bytes=size, sha256=digest, checksum=None)

    def put_bytes(self, data: bytes, key: str, content_type: str) -> StoredObject:
        dest = self._path(key)
        size, digest = self._write_atomically(dest, [data], "data")
        return StoredObject(uri=str(dest), bytes=size, sha256=digest, checksum=None)

    def read_versioned(self, key: str) -> tuple[bytes, str]:
        data = self.read_bytes(key)
        return data, hashlib.sha256(data).hexdigest()

    def put_bytes_if(self, data: bytes, key: str, content_type: str, version: str | None) -> str | None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        # The folder's lock makes compare-and-replace one step for every process of this machine (a
        # local --out is refused on clusters of several nodes).
        with _locked(dest.parent):
            try:
                current: str | None = hashlib.sha256(dest.read_bytes()).hexdigest()
            except FileNotFoundError:
                current = None
            if current != version:
                return None
            return self._write_atomically(dest, [data], "data")[1]

    def read_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"no object {key!r} in {self.uri} (looked for {path})") from None

    def list_keys(self, prefix: str) -> list[str]:
        check_prefix(prefix)
        # Walk only the deepest folder the prefix names, then filter by the string prefix.
        start = self.root / prefix.rpartition("/")[0] if "/" in prefix else self.root
        if not start.is_dir():
            return []
        keys = []
        for dirpath, _, filenames in os.walk(start):
            for name in filenames:
                if name.startswith(".") and TMP_MARK in name:
                    continue
                key = Path(dirpath, name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on a folder, held by this process until the block ends."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock
