"""pipeline/driver/preflight.py: the mistakes users make most, each found before Ray starts, named once.

Every check runs the real thing: the model folder's headers through a subprocess, one frame through the
real ffmpeg, a probe object on a real local folder or S3 server.
"""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import pytest
import torch
from conftest import S3Server, s3_cli_args
from model_folder import write_official_folder

from pipeline.driver.options import config_from_args, parse_args
from pipeline.driver.preflight import Problem, preflight
from pipeline.model.bundle import ModelBundle
from pipeline.spec.model import TINY

pytestmark = pytest.mark.integration  # ffmpeg, subprocesses, S3 servers


def problems(tmp_path: Path, *args: str) -> list[str]:
    out = ["--out", str(tmp_path / "out")] if "--out" not in args else []
    return [str(problem) for problem in preflight(config_from_args(parse_args(["p.jsonl", *out, *args])))]


def test_a_run_that_can_go_ahead_has_no_problems_and_leaves_no_probe_behind(tmp_path: Path) -> None:
    assert problems(tmp_path) == []
    assert [p for p in (tmp_path / "out").rglob("*") if p.is_file()] == []


def test_a_missing_model_folder_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder"
    assert problems(tmp_path, "--model", "self-forcing-1.3b", "--model-dir", str(missing)) == [
        f"--model-dir: {missing} is not a folder; pass the folder (or s3:// URI) holding "
        "self_forcing_dmd.pt, "
        "Wan2.1_VAE.pth, models_t5_umt5-xxl-enc-bf16.pth and google/umt5-xxl/tokenizer.json"
    ]


@pytest.mark.slow
def test_weights_of_another_model_and_a_missing_file_are_found_from_the_headers(tmp_path: Path) -> None:
    """The tiny preset's files in a folder given for the 1.3B model: every network is named."""
    folder = write_official_folder(ModelBundle.random(TINY, "cpu", torch.float32), tmp_path / "model")
    (folder / "Wan2.1_VAE.pth").unlink()

    found = problems(tmp_path, "--model", "self-forcing-1.3b", "--model-dir", str(folder))

    assert len(found) == 3
    assert found[0].startswith(
        f"--model-dir: {folder}/self_forcing_dmd.pt does not match CausalWanDiT (825 tensors expected):\n"
    )
    assert found[1].startswith(
        f"--model-dir: model folder {folder} has neither Wan2.1_VAE.pth nor Wan2.1_VAE.safetensors; "
    )
    assert found[2].startswith(
        f"--model-dir: {folder}/models_t5_umt5-xxl-enc-bf16.pth does not match UMT5Encoder (242 tensors "
        "expected):"
    )


def test_an_s3_model_folder_without_its_files_is_named(tmp_path: Path, s3_moto: S3Server) -> None:
    bucket = s3_moto.make_bucket()
    s3_moto.client().put_object(Bucket=bucket, Key="models/sf/self_forcing_dmd.safetensors", Body=b"x")
    uri = f"s3://{bucket}/models/sf"

    found = problems(
        tmp_path, "--model", "self-forcing-1.3b", "--model-dir", uri, *s3_cli_args(s3_moto.endpoint_url)
    )

    assert found == [
        f"--model-dir: {uri} has no Wan2.1_VAE.pth, models_t5_umt5-xxl-enc-bf16.pth, "
        "google/umt5-xxl/tokenizer.json; pass the folder (or s3:// URI) holding self_forcing_dmd.pt, "
        "Wan2.1_VAE.pth, models_t5_umt5-xxl-enc-bf16.pth and google/umt5-xxl/tokenizer.json"
    ]


def test_an_encoder_ffmpeg_rejects_is_found_with_one_frame_and_x264s_own_words(tmp_path: Path) -> None:
    # --x264-preset takes only x264's names; a config built in code (or an ffmpeg without them) may not.
    cfg = config_from_args(parse_args(["p.jsonl", "--out", str(tmp_path / "out")]))
    encoder = dataclasses.replace(cfg.worker.encoder, preset="ultrafastx")
    cfg = dataclasses.replace(cfg, worker=dataclasses.replace(cfg.worker, encoder=encoder))
    assert [str(problem) for problem in preflight(cfg)] == [
        "--x264-preset/--crf: ffmpeg cannot encode a frame with codec libx264, preset 'ultrafastx', crf 18: "
        "x264 [error]: invalid preset 'ultrafastx'; use an x264 preset (ultrafast, superfast, veryfast, "
        "faster, fast, medium, slow, slower, veryslow) and a CRF from 0 to 51"
    ]


def test_a_missing_ffmpeg_binary_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "bin" / "ffmpeg"
    assert problems(tmp_path, "--ffmpeg", str(missing)) == [
        f"--ffmpeg: ffmpeg binary {str(missing)!r} from binary argument does not exist; point it at an "
        "ffmpeg "
        "executable or leave it unset to use the imageio-ffmpeg wheel; pass --ffmpeg /path/to/ffmpeg, or "
        "leave it out for the bundled one"
    ]


def test_an_output_folder_that_cannot_hold_the_run_is_found_with_a_probe(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "clips").write_text("a file where the clips folder belongs")

    found = problems(tmp_path, "--out", str(out))

    assert len(found) == 1 and found[0].startswith(f"--out: cannot write {out}/clips/.preflight-")
    assert found[0].endswith(
        "pass a folder you can write to (nothing in it may be a file where a folder belongs)"
    )


def test_a_missing_bucket_is_named_with_the_store(tmp_path: Path, s3_moto: S3Server) -> None:
    found = problems(tmp_path, "--out", "s3://no-such-bucket-here/run1", *s3_cli_args(s3_moto.endpoint_url))
    assert len(found) == 1
    assert found[0].startswith(
        "--out: S3 PutObject failed for s3://no-such-bucket-here/run1/clips/.preflight-"
    )
    assert found[0].endswith(
        f"NoSuchBucket: The specified bucket does not exist; bucket 'no-such-bucket-here' does not exist at "
        f"{s3_moto.endpoint_url}; create it or fix the URI"
    )


def test_an_unreachable_store_is_named_in_seconds(tmp_path: Path, aws_test_env: dict[str, str]) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    found = problems(tmp_path, "--out", "s3://bucket/run1", "--s3-endpoint-url", endpoint, "--s3-region", "x")
    assert len(found) == 1 and found[0].startswith("--out: S3 PutObject failed for s3://bucket/run1/clips/")
    assert f"cannot reach {endpoint}" in found[0]


def test_a_checksum_that_needs_the_aws_crt_is_refused_when_it_is_missing(
    tmp_path: Path, s3_moto: S3Server
) -> None:
    bucket = s3_moto.make_bucket()
    found = problems(
        tmp_path,
        "--out",
        f"s3://{bucket}/run1",
        "--checksum-algorithm",
        "CRC32C",
        *s3_cli_args(s3_moto.endpoint_url),
    )
    assert found[0] == (
        "--checksum-algorithm: CRC32C needs the AWS CRT, which is not installed; pip install "
        "'botocore[crt]', "
        "or use CRC32, SHA1 or SHA256 (the default)"
    )


def test_problems_read_as_option_what_and_fix() -> None:
    assert str(Problem("--out", "x is a file", "pass a folder")) == "--out: x is a file; pass a folder"
