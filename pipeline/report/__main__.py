"""`python -m pipeline.report`: the HTML report of a run, or the clips worst on one signal.

    python -m pipeline.report renders -o report.html
    python -m pipeline.report s3://bucket/run1 --run-id 20261121-a --usd-per-gpu-hour 2.5 -o report.html
    python -m pipeline.report rank renders --by saturation_drift --top 10 [--json]

Exit code 0, or 2 with a message naming the problem (no metrics there, an unknown run, a bad option).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.quality import SIGNALS, get_signal
from pipeline.report import page, rank
from pipeline.report.data import load_runs
from pipeline.storage import OutputTarget, S3Settings, StorageError, open_target

logger = logging.getLogger("pipeline.report")

EXIT_OK, EXIT_INVALID = 0, 2


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", help="the render's --out: a local folder or s3://bucket/prefix")
    parser.add_argument(
        "--run-id",
        action="append",
        default=[],
        metavar="RUN",
        help="a run to include (repeatable; default: all)",
    )
    s3 = parser.add_argument_group(
        "S3 (credentials come only from the AWS chain: env, ~/.aws, instance profile)"
    )
    s3.add_argument("--s3-endpoint-url", help="S3-compatible endpoint, e.g. http://127.0.0.1:8333")
    s3.add_argument("--s3-region", help="bucket region (default: the AWS chain's)")
    s3.add_argument("--s3-addressing-style", default="auto", choices=["auto", "path", "virtual"])


def report_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.report",
        description="Write one self-contained HTML report of a render's runs. "
        "'python -m pipeline.report rank --help' ranks clips by a quality signal instead.",
    )
    _common(parser)
    parser.add_argument(
        "-o", "--output", default="report.html", help="HTML file to write (default: %(default)s)"
    )
    parser.add_argument(
        "--usd-per-gpu-hour", type=float, help="price of a GPU-hour, for the cost per minute of video"
    )
    parser.add_argument(
        "--worst", type=int, default=page.DEFAULT_WORST, help="clips shown per signal (default: %(default)s)"
    )
    return parser


def rank_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.report rank",
        description="The clips worst on one quality signal (README, 'Quality signals'), as a table or JSON.",
    )
    _common(parser)
    parser.add_argument(
        "--by", required=True, choices=[signal.name for signal in SIGNALS], help="the signal to rank by"
    )
    parser.add_argument("--top", type=int, default=10, help="how many clips (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print JSON records instead of a table")
    return parser


def _target(args: argparse.Namespace) -> OutputTarget:
    if not args.out.startswith("s3://") and not Path(args.out).is_dir():
        raise ValueError(
            f"{args.out!r} is not a folder; pass the --out a render wrote to, or s3://bucket/prefix"
        )
    settings = S3Settings(
        endpoint_url=args.s3_endpoint_url, region=args.s3_region, addressing_style=args.s3_addressing_style
    )
    return open_target(args.out, settings)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(format="%(levelname)s %(message)s")
    ranking = bool(arguments) and arguments[0] == "rank"
    parser = rank_parser() if ranking else report_parser()
    args = parser.parse_args(arguments[1:] if ranking else arguments)
    count, name = (args.top, "--top") if ranking else (args.worst, "--worst")
    if count < 1:
        parser.error(f"{name}={count} must be at least 1")
    if not ranking and args.usd_per_gpu_hour is not None and args.usd_per_gpu_hour < 0:
        parser.error(f"--usd-per-gpu-hour={args.usd_per_gpu_hour} must be >= 0, e.g. 2.5")
    try:
        data = load_runs(_target(args), args.run_id)
        if ranking:
            signal = get_signal(args.by)
            records = rank.records(data.rows, signal, args.top)
            print(json.dumps(records, indent=2) if args.json else rank.table(records, signal))
        else:
            output = Path(args.output)
            output.write_text(page.render(data, args.usd_per_gpu_hour, args.worst), encoding="utf-8")
            print(f"wrote {output.resolve()} ({len(data.rows)} clips of run(s) {', '.join(data.run_ids)})")
    except (ValueError, OSError, StorageError) as exc:
        logger.error("%s", exc)
        return EXIT_INVALID
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
