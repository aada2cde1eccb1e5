"""Everything a run needs that is not a prompt line, checked before Ray starts or a GPU is touched.

Each check tries the real thing at the smallest size: the model folder's tensor names and shapes from
the files' headers (in a subprocess, so that torch never loads into the driver), one frame through
ffmpeg with the run's encoder settings, a probe object written and removed where the run will write,
the checksum algorithm the uploads will send. Each problem comes back once, naming the option it came
from and how to fix it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
import secrets
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.driver.config import RenderConfig
from pipeline.encode import EncodeError, VideoEncoder, find_ffmpeg
from pipeline.spec.model import TOKENIZER_DIR, WEIGHTS_FILES, get_preset
from pipeline.storage import OutputTarget, S3Settings, StorageError, open_target

logger = logging.getLogger("render")

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the checkout the subprocess imports `pipeline` from
MODEL_CHECK_TIMEOUT_S = 600.0  # reading the headers of ~17 GB of weights takes seconds; a hung disk does not
# Uploads with these checksums need the AWS CRT, an optional part of botocore (`botocore[crt]`).
CRT_CHECKSUMS = ("CRC32C", "CRC64NVME")
PROBE_PREFIXES = ("clips", "metrics")  # where a run writes: a probe object goes into each
# A store that cannot be reached should fail the check in seconds, not after botocore's 10 retries.
PROBE_RETRIES, PROBE_CONNECT_TIMEOUT_S, PROBE_READ_TIMEOUT_S = 2, 5.0, 20.0


@dataclass(frozen=True)
class Problem:
    """Something the run cannot do as configured."""

    where: str  # the option (or input) it comes from, e.g. "--model-dir"
    what: str  # what is wrong, with the value
    fix: str = ""  # how to fix it ("": `what` says it already)

    def __str__(self) -> str:
        return f"{self.where}: {self.what}; {self.fix}" if self.fix else f"{self.where}: {self.what}"


def preflight(cfg: RenderConfig) -> list[Problem]:
    """Every problem the run's options would meet, in the order a run meets them (empty: none)."""
    checksum = check_checksum(cfg)
    # The output's probe uploads with the checksum too: it would only repeat that problem.
    output = [] if checksum else check_output(cfg)
    return [*check_model_folder(cfg), *check_ffmpeg(cfg), *checksum, *output]


# ---------------------------------------------------------------------------------------------
# 1. Model weights
# ---------------------------------------------------------------------------------------------

MODEL_FOLDER_FIX = (
    "pass the folder (or s3:// URI) holding self_forcing_dmd.pt, Wan2.1_VAE.pth, "
    "models_t5_umt5-xxl-enc-bf16.pth and google/umt5-xxl/tokenizer.json"
)


def check_model_folder(cfg: RenderConfig) -> list[Problem]:
    worker = cfg.worker
    if not get_preset(worker.model).needs_weights or worker.random_weights or worker.model_dir is None:
        return []
    if worker.model_dir.startswith("s3://"):
        return _check_s3_model_folder(cfg)
    folder = Path(worker.model_dir).expanduser()
    if not folder.is_dir():
        return [Problem("--model-dir", f"{folder} is not a folder", MODEL_FOLDER_FIX)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.model.check_folder", str(folder), worker.model],
        capture_output=True,
        text=True,
        env=env,
        timeout=MODEL_CHECK_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        return [Problem("--model-dir", f"checking {folder} failed: {tail[0]}", MODEL_FOLDER_FIX)]
    return [Problem("--model-dir", problem, MODEL_FOLDER_FIX) for problem in json.loads(done.stdout)]


def _check_s3_model_folder(cfg: RenderConfig) -> list[Problem]:
    """On S3 the files' presence is checked; their tensors are checked when a node has fetched them."""
    uri = cfg.worker.model_dir
    assert uri is not None
    try:
        keys = set(open_target(uri, _probe_settings(cfg)).list_keys(""))
    except StorageError as exc:
        return [Problem("--model-dir", str(exc))]
    missing = [
        name
        for name in WEIGHTS_FILES
        if name not in keys and str(Path(name).with_suffix(".safetensors")) not in keys
    ]
    if f"{TOKENIZER_DIR}/tokenizer.json" not in keys:
        missing.append(f"{TOKENIZER_DIR}/tokenizer.json")
    if missing:
        return [Problem("--model-dir", f"{uri} has no {', '.join(missing)}", MODEL_FOLDER_FIX)]
    return []


# ---------------------------------------------------------------------------------------------
# 2. Encoding
# ---------------------------------------------------------------------------------------------


def check_ffmpeg(cfg: RenderConfig) -> list[Problem]:
    """One black frame at the model's size through ffmpeg with the run's encoder settings."""
    worker = cfg.worker
    try:
        binary = find_ffmpeg(worker.ffmpeg)
    except (FileNotFoundError, PermissionError) as exc:
        return [
            Problem(
                "--ffmpeg", str(exc), "pass --ffmpeg /path/to/ffmpeg, or leave it out for the bundled one"
            )
        ]
    preset = get_preset(worker.model)
    settings = worker.encoder
    with tempfile.TemporaryDirectory(prefix="preflight-") as tmp:
        try:
            with VideoEncoder(
                Path(tmp) / "probe.mp4", preset.width, preset.height, preset.fps, settings, binary
            ) as enc:
                enc.write(np.zeros((1, preset.height, preset.width, 3), np.uint8))
                enc.close()
        except EncodeError as exc:
            first = exc.stderr_tail.splitlines()[0] if exc.stderr_tail else str(exc)
            return [
                Problem(
                    "--x264-preset/--crf",
                    f"ffmpeg cannot encode a frame with codec {settings.codec}, preset {settings.preset!r}, "
                    f"crf {settings.crf}: {first}",
                    "use an x264 preset (ultrafast, superfast, veryfast, faster, fast, medium, slow, slower, "
                    "veryslow) and a CRF from 0 to 51",
                )
            ]
    return []


# ---------------------------------------------------------------------------------------------
# 3. Storage
# ---------------------------------------------------------------------------------------------


def _uses_s3(cfg: RenderConfig) -> bool:
    return any(
        uri is not None and uri.startswith("s3://")
        for uri in (cfg.prompts, cfg.worker.out, cfg.worker.model_dir)
    )


def check_checksum(cfg: RenderConfig) -> list[Problem]:
    algorithm = cfg.worker.s3.checksum_algorithm
    if _uses_s3(cfg) and algorithm in CRT_CHECKSUMS and importlib.util.find_spec("awscrt") is None:
        return [
            Problem(
                "--checksum-algorithm",
                f"{algorithm} needs the AWS CRT, which is not installed",
                "pip install 'botocore[crt]', or use CRC32, SHA1 or SHA256 (the default)",
            )
        ]
    return []


def _probe_settings(cfg: RenderConfig) -> S3Settings:
    return dataclasses.replace(
        cfg.worker.s3,
        max_attempts=PROBE_RETRIES,
        connect_timeout_s=PROBE_CONNECT_TIMEOUT_S,
        read_timeout_s=PROBE_READ_TIMEOUT_S,
    )


def check_output(cfg: RenderConfig) -> list[Problem]:
    """A probe object written and removed under each prefix the run writes to."""
    out = cfg.worker.out
    try:
        target: OutputTarget = open_target(out, _probe_settings(cfg))
    except (ValueError, OSError) as exc:  # its message names the fix
        return [Problem("--out", str(exc))]
    token = f".preflight-{cfg.run_id}-{secrets.token_hex(4)}"
    for prefix in PROBE_PREFIXES:
        key = f"{prefix}/{token}"
        try:
            target.put_bytes(b"", key, "application/octet-stream")
            target.delete(key)
        except StorageError as exc:  # its message names the store's answer and the fix
            return [Problem("--out", str(exc))]
        except OSError as exc:
            return [
                Problem(
                    "--out",
                    f"cannot write {target.url_for(key)}: {exc}",
                    "pass a folder you can write to (nothing in it may be a file where a folder belongs)",
                )
            ]
    return []
