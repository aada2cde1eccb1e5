"""The S3 options every command line of the project shares (render.py, pipeline.query), and the
`S3Settings` they parse into: one spelling of each option, so error hints can name it."""

from __future__ import annotations

import argparse

from pipeline.storage.settings import CHECKSUM_ALGORITHMS, S3Settings

ADDRESSING_STYLES = ("auto", "path", "virtual")
CHECKSUM_MODES = ("when_supported", "when_required")


def add_s3_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "S3 (credentials come only from the AWS chain: env, ~/.aws, instance profile)"
    )
    group.add_argument(
        "--s3-endpoint-url",
        help="S3-compatible endpoint, e.g. http://127.0.0.1:8333 (default: AWS, or the AWS profile's "
        "endpoint_url / $AWS_ENDPOINT_URL)",
    )
    group.add_argument("--s3-region", help="bucket region (default: the AWS chain's)")
    group.add_argument(
        "--s3-addressing-style",
        default="auto",
        choices=ADDRESSING_STYLES,
        help="path: http://host/bucket/key, what most S3-compatible stores and IP endpoints need; "
        "virtual: http://bucket.host/key; auto: virtual on AWS, path for IP endpoints "
        "(default: %(default)s)",
    )
    group.add_argument(
        "--checksum-mode",
        default="when_supported",
        choices=CHECKSUM_MODES,
        help="boto3 request/response checksums; when_required for stores that reject boto3>=1.36 "
        "defaults (default: %(default)s)",
    )
    group.add_argument(
        "--checksum-algorithm",
        default="SHA256",
        help=f"checksum sent with uploads ({', '.join(CHECKSUM_ALGORITHMS)}; 'none' to send none; "
        "default: %(default)s)",
    )


def s3_settings_from_args(args: argparse.Namespace) -> S3Settings:
    algorithm = "" if args.checksum_algorithm.lower() == "none" else args.checksum_algorithm
    if algorithm not in ("", *CHECKSUM_ALGORITHMS):
        raise ValueError(
            f"--checksum-algorithm {args.checksum_algorithm!r} is not one of "
            f"{', '.join(CHECKSUM_ALGORITHMS)} or none"
        )
    return S3Settings(
        endpoint_url=args.s3_endpoint_url,
        region=args.s3_region,
        addressing_style=args.s3_addressing_style,
        checksum_algorithm=algorithm,
        request_checksum_calculation=args.checksum_mode,
        response_checksum_validation=args.checksum_mode,
    )
