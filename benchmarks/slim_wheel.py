"""Remove files from a wheel, in place, and their lines from its RECORD, so that it stays a valid wheel
(`pip install --no-index --no-deps --target DIR` installs it). Fits Ray and boto3 into `.device_ray/`
(see README.md):

    python benchmarks/slim_wheel.py .device_ray/ray-2.60.0-*.whl 'ray/jars/*'
    python benchmarks/slim_wheel.py .device_ray/botocore-*.whl 'botocore/data/*/*' \\
        --keep 'botocore/data/s3/*' 'botocore/data/sts/*'

Patterns are fnmatch patterns on the paths inside the wheel (`*` also matches `/`).
"""

from __future__ import annotations

import argparse
import csv
import io
import zipfile
from fnmatch import fnmatch
from pathlib import Path


def slim(wheel: Path, drop: list[str], keep: list[str]) -> tuple[int, int]:
    """Rewrite `wheel` without the files matching `drop` but not `keep`; (files, compressed bytes) removed."""

    def dropped(name: str) -> bool:
        return any(fnmatch(name, p) for p in drop) and not any(fnmatch(name, p) for p in keep)

    removed, removed_bytes = 0, 0
    tmp = wheel.with_name(wheel.name + ".tmp")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as out:
        for info in src.infolist():
            if dropped(info.filename):
                removed, removed_bytes = removed + 1, removed_bytes + info.compress_size
                continue
            data = src.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                rows = [row for row in csv.reader(io.StringIO(data.decode())) if row and not dropped(row[0])]
                text = io.StringIO()
                csv.writer(text, lineterminator="\n").writerows(rows)
                data = text.getvalue().encode()
            out.writestr(info, data)  # the same name, date, permissions and compression method
    if not removed:
        tmp.unlink()
        raise SystemExit(f"{wheel}: no file matches {drop}")
    tmp.replace(wheel)
    return removed, removed_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path)
    parser.add_argument("drop", nargs="+", help="fnmatch patterns of the paths to remove")
    parser.add_argument("--keep", nargs="*", default=[], help="patterns to keep although they match drop")
    args = parser.parse_args()
    files, size = slim(args.wheel, args.drop, args.keep)
    print(f"{args.wheel.name}: removed {files} file(s), {size / 2**20:.1f} MiB compressed")


if __name__ == "__main__":
    main()
