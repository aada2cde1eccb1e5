"""Faults injected for real into whole runs of jobs/render.py: a local Ray with fake GPUs, the tiny
model, real ffmpeg, moto on loopback, and a soak with a seeded schedule of faults.

Kills, hangs and CUDA errors inside workers come from a chaos plan (pipeline/worker/chaos.py) that the
driver hands to its actors; the driver itself is killed as a process; S3 faults come from a proxy in
front of the server (tests/s3_fault_proxy.py). Every test ends with the same audit: each clip has one
row, every ok clip's video is in the bucket whole, and nothing is left half-done.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import REPO_ROOT, S3Server, render_module, s3_cli_args
from s3_fault_proxy import INTERNAL, SLOWDOWN, FaultProxy

from pipeline.metrics import read_metrics
from pipeline.storage import open_target
from pipeline.worker.chaos import CHAOS_ENV
from pipeline.worker.faults import read_fault_record

render = render_module()

pytestmark = [pytest.mark.integration, pytest.mark.slow]
RUN_ARGS = ["--cpus-per-worker", "1", "--progress-interval", "600"]


def write_prompts(
    path: Path, ids: list[str], latent_frames: int = 6, lengths: dict[str, int] | None = None
) -> Path:
    """One prompt line per id, `latent_frames` long unless `lengths` names the clip."""
    lengths = lengths or {}
    path.write_text(
        "".join(
            json.dumps({"prompt": f"{i} at dawn", "id": i, "latent_frames": lengths.get(i, latent_frames)})
            + "\n"
            for i in ids
        )
    )
    return path


def driver_command(prompts: Path, out: str, run_id: str, s3: S3Server, *options: str) -> list[str]:
    """`python jobs/render.py` for a run on `s3`, to start in a process of its own (cwd: the repository)."""
    command = [sys.executable, "jobs/render.py", str(prompts), "--out", out, "--run-id", run_id]
    return [*command, *s3_cli_args(s3.endpoint_url), *options, *RUN_ARGS]


def audit(s3: S3Server, bucket: str, prefix: str, run_id: str) -> dict[str, dict[str, Any]]:
    """Every clip has exactly one row in the run's (compacted) table, every ok clip's video is in the
    bucket whole (its content hashes to the row's and the object's sha256), and no upload is left
    unfinished. Returns the rows by clip id."""
    client = s3.client()
    target = open_target(f"s3://{bucket}/{prefix}", s3.settings())
    files = target.list_keys(f"metrics/run_id={run_id}/")
    raw = [row for key in files for row in pq.read_table(pa.BufferReader(target.read_bytes(key))).to_pylist()]
    counts = Counter(row["clip_id"] for row in raw)
    assert [clip for clip, n in counts.items() if n > 1] == [], "a clip has more than one row"
    rows = {row["clip_id"]: row for row in read_metrics(target, run_id).to_pylist()}
    for clip_id, row in rows.items():
        if row["status"] != "ok":
            continue
        obj = client.get_object(Bucket=bucket, Key=f"{prefix}/clips/{clip_id}.mp4")
        data = obj["Body"].read()
        assert hashlib.sha256(data).hexdigest() == row["sha256"] == obj["Metadata"]["sha256"], clip_id
        assert len(data) == row["bytes"] == obj["ContentLength"], clip_id
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    return rows


@pytest.fixture
def chaos(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Set the chaos plan the driver hands to its actors, for this test only."""

    def plan(*faults: dict[str, Any]) -> None:
        monkeypatch.setenv(CHAOS_ENV, json.dumps(list(faults)))

    return plan


# =============================================================================================
# 1. A worker killed, hung, or out of (device) memory mid-clip
# =============================================================================================


@pytest.mark.timeout(300)
def test_a_worker_killed_mid_clip_is_restarted_and_its_clip_rendered_once_and_whole(
    ray_local: dict[str, float], s3_moto: S3Server, tmp_path: Path, chaos
) -> None:
    chaos({"clip": "victim", "attempt": 1, "at": "chunk", "chunk": 1, "fault": "kill"})
    bucket = s3_moto.make_bucket()
    prompts = write_prompts(tmp_path / "p.jsonl", ["victim", "bystander-1", "bystander-2"])
    args = [
        str(prompts),
        "--out",
        f"s3://{bucket}/run",
        "--run-id",
        "kill",
        *s3_cli_args(s3_moto.endpoint_url),
    ]

    assert render.main([*args, *RUN_ARGS]) == render.EXIT_OK

    rows = audit(s3_moto, bucket, "run", "kill")
    assert {clip: row["status"] for clip, row in rows.items()} == dict.fromkeys(rows, "ok")
    assert rows["victim"]["attempt"] == 2
    # A bystander whose call ran beside the victim's in the killed process is rendered again (attempt 2);
    # one on the other worker is not. Either way each clip has one row and one whole video (audit).
    assert sorted(rows) == ["bystander-1", "bystander-2", "victim"]
    assert all(rows[clip]["attempt"] in (1, 2) for clip in ("bystander-1", "bystander-2"))


@pytest.mark.timeout(300)
def test_a_worker_killed_during_its_upload_leaves_no_unfinished_upload(
    ray_local: dict[str, float], s3_moto: S3Server, tmp_path: Path, chaos
) -> None:
    chaos({"clip": "victim", "attempt": 1, "at": "upload", "fault": "kill"})
    bucket = s3_moto.make_bucket()
    client = s3_moto.client()
    # What a writer killed between parts leaves: an upload of the key that nobody will complete
    orphan = client.create_multipart_upload(Bucket=bucket, Key="run/clips/victim.mp4")["UploadId"]
    client.upload_part(Bucket=bucket, Key="run/clips/victim.mp4", UploadId=orphan, PartNumber=1, Body=b"x")
    prompts = write_prompts(tmp_path / "p.jsonl", ["victim"])
    args = [
        str(prompts),
        "--out",
        f"s3://{bucket}/run",
        "--run-id",
        "upload",
        *s3_cli_args(s3_moto.endpoint_url),
    ]

    assert render.main([*args, *RUN_ARGS]) == render.EXIT_OK

    assert audit(s3_moto, bucket, "run", "upload")["victim"]["attempt"] == 2


@pytest.mark.timeout(300)
def test_a_hung_clip_restarts_its_worker_and_the_retry_renders_it(
    ray_local: dict[str, float], tmp_path: Path, chaos
) -> None:
    chaos({"clip": "stuck", "attempt": 1, "at": "chunk", "chunk": 1, "fault": "hang"})
    out = tmp_path / "out"
    prompts = write_prompts(tmp_path / "p.jsonl", ["stuck", "free"])

    code = render.main(
        [str(prompts), "--out", str(out), "--run-id", "hang", "--hang-timeout", "5", *RUN_ARGS]
    )

    assert code == render.EXIT_OK
    target = open_target(str(out))
    rows = {row["clip_id"]: row for row in read_metrics(target, "hang").to_pylist()}
    assert (rows["stuck"]["status"], rows["stuck"]["attempt"]) == ("ok", 2)
    record = read_fault_record(target, "hang", "stuck")
    assert (record.attempts, record.device_faults) == (2, 1) and record.last_fault.startswith(
        "no frames for "
    )


@pytest.mark.timeout(300)
def test_cuda_out_of_memory_fails_only_its_clip_and_a_fatal_cuda_error_restarts_the_worker(
    ray_local: dict[str, float], tmp_path: Path, chaos, monkeypatch: pytest.MonkeyPatch
) -> None:
    chaos(
        {"clip": "too-big", "attempt": 1, "at": "chunk", "chunk": 1, "fault": "oom"},
        {"clip": "poisoned", "attempt": 1, "at": "chunk", "chunk": 1, "fault": "fatal"},
    )
    out = tmp_path / "out"
    # A worker runs two calls at a time. The long clip holds the call after too-big's while after-oom
    # finishes, so the poisoned clip's call starts only once after-oom's has ended and its fatal error
    # cannot take after-oom to the restarted process (it takes the long clip, which is retried).
    ids = ["too-big", "after-oom", "long", "poisoned", "after-fatal"]
    prompts = write_prompts(tmp_path / "p.jsonl", ids, lengths={"long": 24})
    # A batch of one clip, so that the clip after each fault is a call of its own (with groups, a fatal
    # error takes the unfinished clips of both calls in flight to the restarted process)
    args = [str(prompts), "--out", str(out), "--workers", "1", "--clips-per-forward", "1", *RUN_ARGS]

    assert render.main([*args, "--run-id", "cuda"]) == render.EXIT_FAILED

    target = open_target(str(out))
    rows = {row["clip_id"]: row for row in read_metrics(target, "cuda").to_pylist()}
    assert (rows["too-big"]["status"], rows["too-big"]["error_type"]) == ("failed", "InjectedFault")
    assert rows["too-big"]["error"].startswith("CUDA out of memory.")
    # Out of memory is recoverable: the same process rendered the next clip. A fatal error is not:
    # the worker ended, Ray restarted it, and the retry rendered the clip.
    assert (
        rows["after-oom"]["status"] == "ok"
        and rows["after-oom"]["worker_pid"] == rows["too-big"]["worker_pid"]
    )
    assert (rows["poisoned"]["status"], rows["poisoned"]["attempt"]) == ("ok", 2)
    assert read_fault_record(target, "cuda", "poisoned").device_faults == 1
    assert rows["long"]["status"] == rows["after-fatal"]["status"] == "ok"

    monkeypatch.delenv(CHAOS_ENV)  # the rerun the summary asks for renders what failed
    assert render.main([*args, "--run-id", "cuda-again"]) == render.EXIT_OK
    assert [row["clip_id"] for row in read_metrics(target, "cuda-again").to_pylist()] == ["too-big"]


# =============================================================================================
# 2. The driver killed, then the same command again
# =============================================================================================


@pytest.mark.timeout(400)
def test_a_killed_driver_loses_nothing_the_same_command_finishes_the_run_and_compacts_it(
    s3_moto: S3Server, tmp_path: Path
) -> None:
    bucket = s3_moto.make_bucket()
    ids = [f"clip-{i}" for i in range(6)]
    prompts = write_prompts(tmp_path / "p.jsonl", ids)
    command = driver_command(prompts, f"s3://{bucket}/run", "again", s3_moto, "--workers", "1")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    target = open_target(f"s3://{bucket}/run", s3_moto.settings())

    driver = subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 240
    while len(target.list_keys("metrics/run_id=again/part-")) < 2:
        assert driver.poll() is None and time.monotonic() < deadline, "no clip finished"
        time.sleep(0.5)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    done_before = len(target.list_keys("metrics/run_id=again/part-"))
    assert done_before < len(ids)

    rerun = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)

    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    # The killed driver's actors live on until its reaper ends them: a clip may land after the count
    skipped = re.search(r"(\d) of 6 clip\(s\) already done", rerun.stderr)
    assert skipped and done_before <= int(skipped[1]) < len(ids), rerun.stderr[-3000:]
    rows = audit(s3_moto, bucket, "run", "again")
    assert sorted(rows) == ids and {row["status"] for row in rows.values()} == {"ok"}
    assert target.list_keys("metrics/run_id=again/") == ["metrics/run_id=again/compacted-1.parquet"]


# =============================================================================================
# 3. A node of the cluster removed mid-run
# =============================================================================================


@pytest.mark.timeout(400)
def test_a_node_removed_mid_run_and_the_run_still_completes(s3_moto: S3Server, tmp_path: Path) -> None:
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 2, "num_gpus": 0})
    nodes = [cluster.add_node(num_cpus=2, num_gpus=1) for _ in range(2)]
    bucket = s3_moto.make_bucket()
    ids = [f"clip-{i}" for i in range(6)]
    prompts = write_prompts(tmp_path / "p.jsonl", ids)
    command = driver_command(
        prompts, f"s3://{bucket}/run", "nodes", s3_moto, "--address", cluster.address, "--gpus", "2"
    )
    target = open_target(f"s3://{bucket}/run", s3_moto.settings())
    try:
        driver = subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        deadline = time.monotonic() + 240
        while not target.list_keys("metrics/run_id=nodes/part-"):
            assert driver.poll() is None and time.monotonic() < deadline, "no clip finished"
            time.sleep(0.5)
        cluster.remove_node(nodes[1])  # its actor and the clip on it go with it
        log, _ = driver.communicate(timeout=300)
    finally:
        cluster.shutdown()

    assert driver.returncode == 0, log[-4000:]
    rows = audit(s3_moto, bucket, "run", "nodes")
    assert sorted(rows) == ids and {row["status"] for row in rows.values()} == {"ok"}


# =============================================================================================
# 4. Soak: 200 clips through the whole pipeline under a seeded schedule of faults
# =============================================================================================

SOAK_CLIPS, SOAK_SEED = 200, 20261201


def soak_schedule(ids: list[str], seed: int) -> tuple[list[dict[str, Any]], set[str]]:
    """(chaos plan, clips whose encoder fails): worker kills and hangs on first attempts, CUDA errors,
    and ffmpeg failures, each on a few percent of the clips."""
    rng = random.Random(seed)
    plan: list[dict[str, Any]] = []
    broken_encoder: set[str] = set()
    for clip_id in ids:
        roll = rng.random()
        if roll < 0.03:
            plan.append({"clip": clip_id, "attempt": 1, "at": "chunk", "chunk": 1, "fault": "kill"})
        elif roll < 0.05:
            plan.append({"clip": clip_id, "attempt": 1, "at": "upload", "fault": "kill"})
        elif roll < 0.07:
            plan.append({"clip": clip_id, "attempt": 1, "at": "chunk", "chunk": 1, "fault": "oom"})
        elif roll < 0.09:
            broken_encoder.add(clip_id)
    return plan, broken_encoder


@pytest.mark.last
@pytest.mark.timeout(900)
def test_soak_200_clips_with_seeded_faults_lose_nothing_and_duplicate_nothing(
    ray_local: dict[str, float], s3_moto: S3Server, tmp_path: Path, chaos, failing_ffmpeg: str
) -> None:
    ids = [f"soak-{i:03d}" for i in range(SOAK_CLIPS)]
    plan, broken = soak_schedule(ids, SOAK_SEED)
    chaos(*plan)
    # ffmpeg fails for outputs whose name contains "broken": those clips get such ids
    ids = [f"{clip_id}-broken" if clip_id in broken else clip_id for clip_id in ids]
    rng = random.Random(SOAK_SEED + 1)
    proxy = FaultProxy(
        s3_moto.endpoint_url,
        policy=lambda method, path: (
            SLOWDOWN if rng.random() < 0.03 else INTERNAL if rng.random() < 0.01 else None
        ),
    )
    bucket = s3_moto.make_bucket()
    prompts = write_prompts(tmp_path / "p.jsonl", ids, latent_frames=3)  # 9 frames a clip
    args = [
        str(prompts),
        "--out",
        f"s3://{bucket}/soak",
        "--run-id",
        "soak",
        *s3_cli_args(proxy.endpoint_url),
    ]
    try:
        # One clip per forward: an OOM inside a group of two sends its clips to render alone, where the
        # planned OOM clip may then succeed (groups are tested in tests/worker/test_groups.py)
        code = render.main(
            [*args, "--ffmpeg", failing_ffmpeg, "--hang-timeout", "60", "--clips-per-forward", "1", *RUN_ARGS]
        )
    finally:
        proxy.close()

    assert code == render.EXIT_FAILED  # the broken encoders and the OOMs fail their clips
    rows = audit(s3_moto, bucket, "soak", "soak")
    assert len(rows) == SOAK_CLIPS  # rendered + failed = submitted: nothing lost
    failed = {clip for clip, row in rows.items() if row["status"] == "failed"}
    oom = {fault["clip"] for fault in plan if fault["fault"] == "oom"}
    # A planned OOM fires on a clip's first attempt. A clip in flight beside a planned kill dies with
    # its worker before it gets there and renders on its second attempt, where nothing is planned.
    oom_hit = {clip for clip in oom if rows[clip]["attempt"] == 1}
    assert len(oom_hit) >= len(oom) / 2, f"only {sorted(oom_hit)} of {sorted(oom)} met their OOM"
    assert failed == {clip for clip in ids if "broken" in clip} | oom_hit
    killed = {fault["clip"] for fault in plan if fault["fault"] == "kill"}
    assert {clip for clip in killed if rows[clip]["attempt"] < 2} == set()
