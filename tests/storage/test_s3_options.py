"""pipeline/storage/cli.py: the shared S3 options, and the error hints that name them."""

from __future__ import annotations

import argparse
import re

import pytest
from botocore.exceptions import ClientError, NoCredentialsError

from pipeline.storage import S3Settings
from pipeline.storage.cli import add_s3_options, s3_settings_from_args
from pipeline.storage.s3 import s3_error


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_s3_options(parser)
    return parser.parse_args(argv)


def test_the_options_parse_into_settings() -> None:
    args = parse("--s3-endpoint-url", "http://127.0.0.1:8333", "--s3-addressing-style", "path")
    assert s3_settings_from_args(args) == S3Settings(
        endpoint_url="http://127.0.0.1:8333", addressing_style="path"
    )
    none = s3_settings_from_args(parse("--checksum-algorithm", "none", "--checksum-mode", "when_required"))
    assert (none.checksum_algorithm, none.request_checksum_calculation) == ("", "when_required")


@pytest.mark.parametrize(
    ("code", "hint"),
    [
        ("PermanentRedirect", "bucket 'b' is in another region; pass it as --s3-region"),
        (
            "BadDigest",
            "the store rejected the request's checksum; if it rejects boto3>=1.36 default "
            "checksums pass --checksum-mode when_required or --checksum-algorithm none",
        ),
    ],
)
def test_s3_errors_name_the_command_line_options_that_fix_them(code: str, hint: str) -> None:
    exc = ClientError({"Error": {"Code": code, "Message": "nope"}}, "GetObject")
    message = str(s3_error(exc, "GetObject", "b", "k", S3Settings()))
    assert message.endswith(f"; {hint}")
    named = set(re.findall(r"--[a-z0-9-]+", message))
    parser = argparse.ArgumentParser()
    add_s3_options(parser)
    assert named <= set(parser._option_string_actions)


def test_missing_credentials_say_where_a_ray_job_gets_them() -> None:
    message = str(s3_error(NoCredentialsError(), "PutObject", "b", "k", S3Settings()))
    assert message.endswith(
        "A `ray job submit` job has the environment of `ray start`, not of the submitting shell: pass "
        """--runtime-env-json '{"env_vars": {"AWS_PROFILE": "..."}}'"""
    )
