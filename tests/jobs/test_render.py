"""jobs/render.py end to end: checking a run before it starts, then whole runs on a real local Ray with
fake GPUs, the tiny model, real ffmpeg and a real S3 server (moto, on loopback) or a local folder;
finally `ray job submit` against a `ray start --head` cluster.

The driver is called through `main(argv)`, exactly as `python jobs/render.py ...` calls it. Faults are
injected as users meet them: an invalid line, a cache parameter out of range, an ffmpeg that fails,
a clip that stalls longer than the hang timeout.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import readme
from conftest import REPO_ROOT, S3Server, render_module, s3_cli_args
from video_probe import probe_video

from pipeline.metrics import read_metrics
from pipeline.report.__main__ import main as report_main
from pipeline.runs import read_run_record
from pipeline.spec.cache import POLICY_PARAMS, policy_parameters
from pipeline.storage import open_target
from pipeline.worker.faults import read_fault_record

POLICY_NAMES = ", ".join(sorted(POLICY_PARAMS))
NOTHING_RENDERED = "nothing was rendered: fix the above and run the same command again"


render = render_module()


def write_lines(path: Path, *lines: object) -> Path:
    """One line per item: strings as they are, anything else as JSON."""
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


RAY_CLI = str(Path(sys.executable).parent / "ray")
# Actors on the fake-GPU test cluster reserve one CPU each (4 logical CPUs, 2 fake GPUs).
RUN_ARGS = ["--cpus-per-worker", "1", "--progress-interval", "600"]


# =============================================================================================
# 1. Prompt files (no Ray)
# =============================================================================================


def test_every_invalid_line_is_reported_with_its_number_and_nothing_starts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    prompts = write_lines(
        tmp_path / "prompts.jsonl",
        {"prompt": "a fox in the snow", "latent_frames": 3},
        '{"prompt": "an unterminated line"',
        {"id": "two"},
        "",  # blank lines are skipped, but still counted
        {"prompt": "  ", "seed": "7"},
        {"prompt": "a heron", "seconds": 2, "latent_frames": 6},
        {"prompt": "a heron", "latent_frames": 7},
        {"prompt": "a heron", "cache_policy": "deep_forcing"},
        {"prompt": "a heron", "cache_policy": "fifo", "layout": "paper"},
        {"prompt": "a heron", "cache_policy": "fifo", "window_frames": "21"},
        {"prompt": "a heron", "id": "no/slashes"},
        ["a list"],
        {"prompt": "a heron", "cache_policy": "sink", "sink_frames": -1},
    )
    out = tmp_path / "out"

    code = render.main([str(prompts), "--out", str(out)])

    assert code == render.EXIT_INVALID
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [
        f"{prompts}: 11 invalid line(s):\n"
        "  line 2: not valid JSON (Expecting ',' delimiter at column 34); each line must be one JSON object "
        'such as {"prompt": "a fox in the snow"}\n'
        '  line 3: "prompt" is missing; every line needs a non-empty "prompt" string\n'
        '  line 5: "prompt" must be a non-empty string, got "  "; '
        '"seed" must be an integer from 0 to 2**63-1, got "7"\n'
        '  line 6: give "seconds" or "latent_frames", not both\n'
        '  line 7: "latent_frames": num_latent_frames=7 must be a positive multiple of chunk_frames=3; '
        "use 6 or 9\n"
        f'  line 8: unknown cache policy "deep_forcing"; choose one of {POLICY_NAMES}\n'
        "  line 9: unknown field(s) layout; a line takes prompt, prompts, id, seed, seconds, latent_frames, "
        "cache_policy, recache and the parameters of its cache policy (fifo: window_frames)\n"
        "  line 10: cache policy 'fifo' parameter 'window_frames' must be an integer (default 21), "
        'got "21"\n'
        '  line 11: "id" must be 1-128 letters, digits, "_", "." or "-", not starting with "." (it names '
        "the file clips/<id>.mp4), "
        'got "no/slashes"\n'
        '  line 12: expected a JSON object such as {"prompt": "..."}, got a list\n'
        "  line 13: cache policy 'sink': sink_frames=-1 is out of range: valid is 1..18 "
        "(window_frames=21 less one chunk of 3 frames; fifo has no sink)\n"
        "fix them, or pass --skip-invalid to render the 1 valid line(s)",
        NOTHING_RENDERED,
    ]
    assert not out.exists() or not any(out.rglob("*.mp4"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--cache-param", "bogus=1"],
            "unknown --cache-param bogus; the cache policy takes (deep-forcing: "
            f"{', '.join(sorted(policy_parameters('deep-forcing')))})",
        ),
        (
            ["--cache-param", "layout"],
            "--cache-param 'layout' must look like NAME=VALUE, e.g. --cache-param window_frames=15",
        ),
        (
            ["--latent-frames", "4"],
            "num_latent_frames=4 must be a positive multiple of chunk_frames=3; use 3 or 6",
        ),
        (
            ["--model", "self-forcing-1.3b"],
            "--model self-forcing-1.3b needs weights: pass --model-dir (a folder or s3:// URI), "
            "or --random-weights to measure throughput",
        ),
        (
            ["--model", "self-forcing-1.3b", "--random-weights", "--model-dir", "/models/sf"],
            "--random-weights and --model-dir exclude each other; pass one",
        ),
        (
            ["--clips-per-forward", "0"],
            "--clips-per-forward '0' must be a whole number >= 1 or 'auto'; e.g. --clips-per-forward 2, "
            "or leave it out for auto",
        ),
        (
            ["--model-dir", "/models/sf"],
            "--model-dir was given but --model tiny uses random weights; add --model "
            "self-forcing-1.3b to render with the weights in --model-dir",
        ),
    ],
)
def test_bad_run_wide_options_are_reported_before_anything_starts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, args: list[str], message: str
) -> None:
    prompts = write_lines(tmp_path / "prompts.jsonl", {"prompt": "a fox"})
    assert render.main([str(prompts), "--out", str(tmp_path / "out"), *args]) == render.EXIT_INVALID
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [message, NOTHING_RENDERED]


def test_a_prompt_file_on_s3_is_read_and_checked_like_a_local_one(
    s3_moto: S3Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bucket = s3_moto.make_bucket()
    body = '{"prompt": "a fox", "latent_frames": 3}\n{"prompt": ""}\n'
    s3_moto.client().put_object(Bucket=bucket, Key="in/prompts.jsonl", Body=body.encode())
    uri = f"s3://{bucket}/in/prompts.jsonl"

    code = render.main([uri, "--out", str(tmp_path / "out"), *s3_cli_args(s3_moto.endpoint_url)])

    assert code == render.EXIT_INVALID
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [
        f'{uri}: 1 invalid line(s):\n  line 2: "prompt" must be a non-empty string, got ""\n'
        "fix them, or pass --skip-invalid to render the 1 valid line(s)",
        NOTHING_RENDERED,
    ]


def test_a_dry_run_checks_everything_prints_the_plan_and_renders_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    prompts = write_lines(
        tmp_path / "prompts.jsonl", {"prompt": "a fox", "seconds": 60}, {"prompt": "a heron", "seconds": 30}
    )
    out = tmp_path / "out"

    code = render.main([str(prompts), "--out", str(out), "--run-id", "dry", "--dry-run", "--model", "tiny"])

    assert code == render.EXIT_OK
    plan = next(m for m in caplog.messages if m.startswith("plan for run dry"))
    assert plan == (
        f"plan for run dry -> {out} (model tiny):\n"
        "  to render        2 clip(s), 1434 frames, 1.5 min of video\n"
        "  done             0 clip(s), skipped (--force renders them again)\n"
        "  GPU time   unknown: no measured throughput for model tiny on a GPU\n"
        "nothing was rendered (--dry-run)"
    )
    assert [p for p in out.rglob("*") if p.is_file()] == []


def test_a_dry_run_estimates_gpu_hours_from_the_benchmark_figure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    prompts = write_lines(
        tmp_path / "prompts.jsonl", *({"prompt": f"take {i}", "seconds": 60} for i in range(100))
    )
    args = [str(prompts), "--out", str(tmp_path / "out"), "--dry-run"]

    assert render.main([*args, "--model", "self-forcing-1.3b", "--random-weights", "--run-id", "d"]) == 0

    plan = next(m for m in caplog.messages if m.startswith("plan for run d "))
    assert (
        "  GPU time   1.05 GPU-hours at 25.4 frames/s per GPU (the benchmark figure in benchmarks/README.md)"
        in plan
    )


# =============================================================================================
# 2. Whole runs on a local Ray with fake GPUs
# =============================================================================================


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_a_run_to_s3_renders_every_clip_a_rerun_skips_them_and_force_renders_again(
    ray_local: dict[str, float], s3_moto: S3Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert ray_local["GPU"] == 2
    bucket = s3_moto.make_bucket()
    client = s3_moto.client()
    lines = [
        {"prompt": "A drone view of waves crashing against rugged cliffs.", "latent_frames": 6},
        {"prompt": "A fluffy monster beside a melting candle.", "id": "monster", "seed": 7},
        {"prompt": "Two pirate ships in a cup of coffee.", "cache_policy": "sink", "sink_frames": 3},
        {  # a storyboard: one clip like any other
            "id": "story",
            "prompts": [
                {"prompt": "A fox walks through snow.", "latent_frames": 3},
                {"prompt": "The fox reaches a frozen lake.", "latent_frames": 3},
            ],
        },
    ]
    client.put_object(Bucket=bucket, Key="prompts.jsonl", Body="\n".join(map(json.dumps, lines)).encode())
    out = f"s3://{bucket}/renders"
    args = [
        f"s3://{bucket}/prompts.jsonl",
        "--out",
        out,
        "--latent-frames",
        "3",
        *s3_cli_args(s3_moto.endpoint_url),
        *RUN_ARGS,
    ]
    target = open_target(out, s3_moto.settings())

    assert render.main([*args, "--run-id", "first"]) == render.EXIT_OK

    rows = read_metrics(target, "first").to_pylist()
    assert len(rows) == 4 and {row["status"] for row in rows} == {"ok"}
    assert {row["num_latent_frames"] for row in rows if row["clip_id"] != "monster"} == {3, 6}
    story = next(row for row in rows if row["clip_id"] == "story")
    assert [(s["first_frame"], s["last_frame"]) for s in story["segments"]] == [(0, 8), (9, 20)]
    for row in rows:
        key = f"renders/clips/{row['clip_id']}.mp4"
        obj = client.get_object(Bucket=bucket, Key=key)
        data = obj["Body"].read()
        assert row["video_uri"] == f"s3://{bucket}/{key}"
        assert (
            (row["bytes"], row["sha256"])
            == (len(data), sha256_hex(data))
            == (
                obj["ContentLength"],
                obj["Metadata"]["sha256"],
            )
        )
        local = tmp_path / f"{row['clip_id']}.mp4"
        local.write_bytes(data)
        info = probe_video(local)
        assert (info.frames, info.codec, info.pix_fmt) == (row["num_frames"], "h264", "yuv420p")
        assert row["node"] and row["worker_pid"] > 0 and row["attempt"] == 1
    assert target.list_keys("metrics/run_id=first/") == ["metrics/run_id=first/compacted-1.parquet"]
    assert sorted(
        key.rsplit("/", 1)[1] for key in target.list_keys("clips/") if key.endswith(".mp4")
    ) == sorted(f"{row['clip_id']}.mp4" for row in rows)
    first_written = {row["clip_id"]: row["finished_at"] for row in rows}

    caplog.clear()
    assert render.main([*args, "--run-id", "second"]) == render.EXIT_OK
    assert read_metrics(target, "second").num_rows == 0
    assert (
        f"4 of 4 clip(s) already done in {out}, skipped (pass --force to render them again)"
        in caplog.messages
    )
    first_record, second_record = read_run_record(target, "first"), read_run_record(target, "second")
    assert first_record is not None and second_record is not None
    assert (first_record.prompt_lines, first_record.ok, first_record.skipped, first_record.workers) == (
        4,
        4,
        0,
        2,
    )
    assert (second_record.clips, second_record.skipped, second_record.to_render) == (4, 4, 0)
    html = tmp_path / "second.html"
    assert report_main([out, "--run-id", "second", *s3_cli_args(s3_moto.endpoint_url), "-o", str(html)]) == 0
    assert '<td class="num" id="skipped">4</td>' in html.read_text()  # the report reads it on S3

    assert render.main([*args, "--run-id", "third", "--force"]) == render.EXIT_OK
    again = read_metrics(target, "third").to_pylist()
    assert {row["clip_id"]: row["status"] for row in again} == {clip_id: "ok" for clip_id in first_written}
    assert all(row["started_at"] > first_written[row["clip_id"]] for row in again)


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_failing_clips_become_failed_rows_the_others_render_and_the_exit_code_says_so(
    ray_local: dict[str, float], tmp_path: Path, failing_ffmpeg: str, caplog: pytest.LogCaptureFixture
) -> None:
    prompts = write_lines(
        tmp_path / "prompts.jsonl",
        {"prompt": "A lighthouse on a calm evening.", "id": "fine"},
        {"prompt": "A lighthouse in a storm.", "id": "bad-layout", "layout": "sideways"},
        {"prompt": "A kite over the dunes."},  # derived id
        {"id": "no-prompt"},
        {"prompt": "A tram in the rain.", "id": "broken-encoder"},
    )
    out = tmp_path / "out"

    args = [str(prompts), "--out", str(out), "--latent-frames", "3", "--skip-invalid"]
    code = render.main([*args, "--ffmpeg", failing_ffmpeg, "--run-id", "faults", *RUN_ARGS])

    assert code == render.EXIT_FAILED
    rows = {row["clip_id"]: row for row in read_metrics(open_target(str(out)), "faults").to_pylist()}
    kite = next(clip_id for clip_id in rows if clip_id not in ("fine", "broken-encoder"))
    assert {clip_id: (row["status"], row["error_type"]) for clip_id, row in rows.items()} == {
        "fine": ("ok", None),
        kite: ("ok", None),
        "broken-encoder": ("failed", "EncodeError"),
    }
    assert "simulated encoder crash" in rows["broken-encoder"]["error"]
    assert sorted(p.name for p in (out / "clips").glob("*.mp4")) == sorted(["fine.mp4", f"{kite}.mp4"])
    skipped = [m for m in caplog.messages if "skipped (--skip-invalid)" in m]
    assert skipped == [
        f"{prompts} line 2 skipped (--skip-invalid): cache policy 'deep-forcing': layout='sideways' is not "
        "one of ['reference', 'paper']",
        f'{prompts} line 4 skipped (--skip-invalid): "prompt" is missing; every line needs a non-empty '
        '"prompt" string',
    ]
    summary = next(m for m in caplog.messages if m.startswith("summary\n"))
    assert "failed: line 5, clip broken-encoder: EncodeError: encoding " in summary
    record = read_run_record(open_target(str(out)), "faults")
    assert record is not None and record.exit_code == render.EXIT_FAILED
    assert (record.prompt_lines, record.clips, record.ok, record.failed, record.lost) == (5, 3, 2, 1, 0)
    assert "rerun the same command to retry failed clips; finished ones are skipped" in summary


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_clips_that_can_share_forwards_render_in_groups_and_a_failing_one_fails_alone(
    ray_local: dict[str, float], tmp_path: Path, failing_ffmpeg: str
) -> None:
    """The driver orders the clips so that each batch is one group; the worker renders it in lockstep."""
    prompts = write_lines(
        tmp_path / "prompts.jsonl",
        {"prompt": "A lighthouse on a calm evening.", "id": "lighthouse"},
        {"prompt": "A short clip.", "id": "short", "latent_frames": 3},
        {"prompt": "A tram in the rain.", "id": "broken-encoder"},
        {"prompt": "A kite over the dunes.", "id": "kite"},
        {"prompt": "A heron in the reeds.", "id": "heron"},
    )
    out = tmp_path / "out"

    args = [str(prompts), "--out", str(out), "--latent-frames", "6", "--clips-per-forward", "2"]
    code = render.main([*args, "--workers", "1", "--ffmpeg", failing_ffmpeg, "--run-id", "groups", *RUN_ARGS])

    assert code == render.EXIT_FAILED
    rows = {row["clip_id"]: row for row in read_metrics(open_target(str(out)), "groups").to_pylist()}
    # The four 6-latent-frame clips come first, in two groups of two; the short one renders alone.
    assert {clip_id: (row["status"], row["clips_per_forward"]) for clip_id, row in rows.items()} == {
        "lighthouse": ("ok", 2),
        "broken-encoder": ("failed", 2),
        "kite": ("ok", 2),
        "heron": ("ok", 2),
        "short": ("ok", 1),
    }
    assert rows["broken-encoder"]["error_type"] == "EncodeError"
    for clip_id, frames in (("lighthouse", 21), ("kite", 21), ("heron", 21), ("short", 9)):
        assert probe_video(out / "clips" / f"{clip_id}.mp4").frames == frames


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_a_clip_that_stalls_the_device_restarts_the_worker_and_is_failed_after_two_faults(
    ray_local: dict[str, float], tmp_path: Path
) -> None:
    """--hang-timeout far below one chunk's time makes every chunk look like a hung GPU: the worker records
    the fault and exits, Ray restarts it and retries the clip, and the third try gives up."""
    prompts = write_lines(
        tmp_path / "prompts.jsonl", {"prompt": "A clip the GPU never finishes.", "id": "stall"}
    )
    out = tmp_path / "out"

    args = [str(prompts), "--out", str(out), "--latent-frames", "3", "--hang-timeout", "0.02"]
    code = render.main([*args, "--run-id", "hang", *RUN_ARGS])

    assert code == render.EXIT_FAILED
    target = open_target(str(out))
    [row] = read_metrics(target, "hang").to_pylist()
    assert (row["status"], row["error_type"], row["attempt"]) == ("failed", "DeviceFaultError", 2)
    assert row["error"].startswith(
        "clip stall took the device down 2 time(s) in run hang (last: no frames for "
    )
    record = read_fault_record(target, "hang", "stall")
    assert (record.attempts, record.device_faults) == (2, 2)
    assert list((out / "clips").glob("*.mp4")) == []


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(400)
def test_two_runs_on_one_output_never_render_a_clip_twice(tmp_path: Path) -> None:
    """Overlapping prompt files, two drivers at once (each with its embedded Ray): the claims decide."""
    lines = [{"prompt": f"take {i}", "id": f"take-{i}", "latent_frames": 6} for i in range(8)]
    first = write_lines(tmp_path / "first.jsonl", *lines[:6])
    second = write_lines(tmp_path / "second.jsonl", *lines[2:])
    out = tmp_path / "out"

    def driver(prompts: Path, run_id: str) -> subprocess.Popen[str]:
        command = [sys.executable, "jobs/render.py", str(prompts), "--out", str(out), "--run-id", run_id]
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        return subprocess.Popen(
            [*command, "--workers", "1", "--cpus-per-worker", "1"],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    runs = [driver(first, "first"), driver(second, "second")]
    logs = [run.communicate(timeout=360)[0] for run in runs]

    assert [run.returncode for run in runs] == [0, 0], logs
    rows = read_metrics(open_target(str(out))).to_pylist()
    ok = sorted(row["clip_id"] for row in rows if row["status"] == "ok")
    assert ok == [f"take-{i}" for i in range(8)]  # every clip once, in one run or the other
    records = [read_run_record(open_target(str(out)), run_id) for run_id in ("first", "second")]
    assert all(r is not None and r.ok + r.held + r.skipped == r.clips == 6 for r in records), records
    # The overlap: rendered by one run; the other skipped (done when it planned) or held it.
    assert sum(r.held + r.skipped for r in records if r is not None) == 12 - 8
    assert sorted(p.name for p in (out / "clips").glob("*.mp4")) == [f"take-{i}.mp4" for i in range(8)]


# =============================================================================================
# 3. `ray job submit` against `ray start --head`
# =============================================================================================


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _session_pids(session: int) -> list[int]:
    """Live (non-zombie) processes of a session, from /proc."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            if os.getsid(int(entry)) == session and stat.rsplit(")", 1)[1].split()[0] != "Z":
                pids.append(int(entry))
        except OSError:  # it exited meanwhile
            continue
    return pids


def _stop_session(leader: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    """What `ray stop` does, but only to the processes of the session this test started.

    `ray stop` signals every Ray process on the machine (the session's `ray_local`, other developers'
    clusters), and a SIGTERM to `ray start --block` alone drains for 30 s first.
    """
    for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
        for pid in _session_pids(leader.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while _session_pids(leader.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not _session_pids(leader.pid):
            break
    leader.wait(timeout=10)


@pytest.fixture
def ray_head(aws_test_env: dict[str, str]) -> Iterator[tuple[str, dict[str, str]]]:
    """`ray start --head --block` in its own session, token auth on; yields (dashboard URL, env for the CLI).

    RAY_AUTH_MODE and RAY_AUTH_TOKEN are set identically for `ray start` and `ray job submit`: a mismatch
    is rejected. The fake AWS credentials are node environment, as an instance profile would be.
    """
    temp_dir = Path(tempfile.mkdtemp(prefix="rayhead-", dir="/tmp"))  # short: Unix socket paths are limited
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    env.pop("RAY_ADDRESS", None)
    # The job's `python` is whatever the node's PATH finds first, as for a user: make it this
    # interpreter, so the test also passes when the venv is not activated.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    # Ray gives its raylet 30 s to register with the GCS; on a loaded 2-core machine that has run out
    # (CI, once in many runs), so a head that did not come up is started once more on fresh ports.
    for attempt in (1, 2):
        leader, dashboard_port, log = _start_ray_head(env, temp_dir / str(attempt))
        if _ray_head_is_up(leader, log, timeout_s=90):
            break
        _stop_session(leader)
    else:
        message = log.read_text(errors="replace")[-3000:]
        shutil.rmtree(temp_dir, ignore_errors=True)
        pytest.fail(f"ray start did not come up, twice:\n{message}")
    try:
        yield f"http://127.0.0.1:{dashboard_port}", env
    finally:
        _stop_session(leader)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _start_ray_head(env: dict[str, str], temp_dir: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    """`ray start --head --block` in a session of its own under `temp_dir`: (leader, dashboard port, log)."""
    temp_dir.mkdir(parents=True)
    # Every port explicit: a second Ray on the machine (the session's `ray_local`) holds the defaults,
    # and a dashboard agent that cannot bind 52365 leaves the job server with "No available agent".
    ports = [_free_port() for _ in range(7)]
    gcs_port, dashboard_port, client_port, agent_port, agent_grpc_port, metrics_port, env_agent_port = ports
    log = temp_dir / "ray-start.log"
    with log.open("wb") as log_file:
        leader = subprocess.Popen(
            [
                RAY_CLI,
                *("start", "--head", "--block", f"--temp-dir={temp_dir}", f"--port={gcs_port}"),
                *(f"--dashboard-port={dashboard_port}", f"--ray-client-server-port={client_port}"),
                *(
                    f"--dashboard-agent-listen-port={agent_port}",
                    f"--dashboard-agent-grpc-port={agent_grpc_port}",
                ),
                *(f"--metrics-export-port={metrics_port}", f"--runtime-env-agent-port={env_agent_port}"),
                *("--dashboard-host=127.0.0.1", "--num-cpus=4", "--num-gpus=2", "--disable-usage-stats"),
            ],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return leader, dashboard_port, log


def _ray_head_is_up(leader: subprocess.Popen[bytes], log: Path, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while b"will now block forever" not in log.read_bytes():
        if leader.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_ray_job_submit_renders_the_example_prompts_on_a_ray_start_cluster(
    ray_head: tuple[str, dict[str, str]], s3_moto: S3Server
) -> None:
    address, env = ray_head
    bucket = s3_moto.make_bucket()
    out = f"s3://{bucket}/job"

    command = [RAY_CLI, "job", "submit", "--address", address, "--working-dir", "."]
    command += ["--", "python", "jobs/render.py", "examples/prompts.jsonl", "--out", out, "--run-id", "job"]
    command += [*s3_cli_args(s3_moto.endpoint_url), *RUN_ARGS]

    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=240)

    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert (
        "rendering 4 clip(s) on 2 worker(s) (1 GPU, 1.0 CPU each, up to 2 clip(s) per batch, "
        "quick conv search)" in done.stdout
    )
    rows = read_metrics(open_target(out, s3_moto.settings()), "job").to_pylist()
    assert sorted((row["status"], row["num_frames"]) for row in rows) == [
        ("ok", 21),
        ("ok", 21),
        ("ok", 33),
        ("ok", 33),
    ]
    assert "big-sur-waves" in {row["clip_id"] for row in rows}
    keys = open_target(out, s3_moto.settings()).list_keys("clips/")
    assert sorted(k for k in keys if k.endswith(".mp4")) == sorted(
        f"clips/{row['clip_id']}.mp4" for row in rows
    )
    assert len(keys) == 4 * len(rows)  # each video with its first, middle and last frame


def _readme_local_head_script(dashboard_port: int, head_flags: list[str], out: str) -> tuple[str, list[str]]:
    """The README's local-head block as a bash script, with what a shared test machine needs changed:
    `ray start` gets free ports and its own temp dir, `ray job submit` that dashboard port, the S3 URI a
    fresh bucket. `ray stop` (it stops every Ray on the machine) is left out: the test stops the
    processes of its own session instead. Returns (script, the README's commands as written)."""
    [block] = readme.code_blocks(readme.section("Through `ray job submit`, on one machine"), "sh")
    written = readme.commands(block)
    assert written[-1] == "ray stop"
    script = []
    for command in written[:-1]:
        if command.startswith("ray start --head"):
            command = " ".join([command, *head_flags])
        command = command.replace("http://127.0.0.1:8265", f"http://127.0.0.1:{dashboard_port}")
        script.append(command.replace("s3://my-bucket/run1", out))
    return "\n".join(["set -euo pipefail", *script]), written


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(400)
def test_the_readme_ray_job_submit_commands_render_on_a_ray_start_head_with_token_auth(
    s3_moto: S3Server, tmp_path: Path
) -> None:
    """A fresh user: a home of their own with an AWS profile `render` (pointed at moto), no AWS or Ray
    variables in the shell; the README's commands as written, token auth on, on loopback."""
    bucket = s3_moto.make_bucket()
    home = tmp_path / "home"
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "config").write_text(
        f"[profile render]\nregion = us-east-1\nendpoint_url = {s3_moto.endpoint_url}\n"
    )
    (home / ".aws" / "credentials").write_text(
        "[render]\n"
        f"aws_access_key_id = {os.environ['AWS_ACCESS_KEY_ID']}\n"
        f"aws_secret_access_key = {os.environ['AWS_SECRET_ACCESS_KEY']}\n"
    )
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "RAY_")) and name not in ("PYTHONPATH", "HOME")
    }
    env["HOME"] = str(home)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    temp_dir = Path(tempfile.mkdtemp(prefix="rayreadme-", dir="/tmp"))  # short: Unix socket paths
    ports = [_free_port() for _ in range(7)]
    gcs, dashboard, client, agent, agent_grpc, metrics, env_agent = ports
    head_flags = [
        f"--temp-dir={temp_dir}",
        f"--port={gcs}",
        f"--dashboard-port={dashboard}",
        f"--ray-client-server-port={client}",
        f"--dashboard-agent-listen-port={agent}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--metrics-export-port={metrics}",
        f"--runtime-env-agent-port={env_agent}",
    ]
    out = f"s3://{bucket}/run1"
    script, written = _readme_local_head_script(dashboard, head_flags, out)
    assert "RAY_AUTH_MODE=token" in written[0] and any("--runtime-env-json" in c for c in written)

    shell = subprocess.Popen(
        ["bash", "-c", script],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # Ray's daemons stay in this session: stopped by PID below
    )
    try:
        output, _ = shell.communicate(timeout=330)
    finally:
        _stop_session(shell)
        shutil.rmtree(temp_dir, ignore_errors=True)

    assert shell.returncode == 0, output[-6000:]
    assert (home / ".ray" / "auth_token").is_file()  # where the README says the token lives
    assert "rendering 4 clip(s) on 2 worker(s)" in output
    rows = read_metrics(open_target(out, s3_moto.settings()), None).to_pylist()
    assert sorted(row["status"] for row in rows) == ["ok"] * 4
    # Every ERROR or WARNING line of a good run is one the README explains.
    explained = re.findall(r"^- `([^`]+)`:", readme.section("What a run prints"), re.MULTILINE)
    noise = [
        line for line in output.splitlines() if re.search(r"\bERROR\b|\bWARNING\b|\] E |\bE \d+ \d+\]", line)
    ]
    unexplained = [line for line in noise if not any(snippet in line for snippet in explained)]
    assert unexplained == [], "\n".join(unexplained)
