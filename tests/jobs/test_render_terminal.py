"""jobs/render.py on a terminal, as a user runs it from a shell: the live progress bar, Ctrl-C typed on
the terminal, and the same command again, which resumes (tests/jobs/on_terminal.py is the terminal)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from pipeline.metrics import read_metrics
from pipeline.runs import read_run_record
from pipeline.storage import open_target

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ON_TERMINAL = Path(__file__).with_name("on_terminal.py")
CTRL_C = b"\x03"
CLIPS = 6


def plain_env() -> dict[str, str]:
    env = {**os.environ}
    env.pop("RAY_ADDRESS", None)  # an embedded local Ray, as on a laptop
    return env


@pytest.mark.timeout(400)
def test_a_terminal_shows_a_live_bar_ctrl_c_prints_one_line_and_the_same_command_resumes(
    tmp_path: Path,
) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"prompt": f"a paper boat, take {i}", "id": f"boat-{i}"}) + "\n" for i in range(CLIPS)
        )
    )
    out = tmp_path / "out"
    command = [sys.executable, "jobs/render.py", str(prompts), "--out", str(out), "--latent-frames", "3"]
    command += ["--workers", "1", "--run-id", "tty"]

    screen = bytearray()
    with subprocess.Popen(
        [sys.executable, str(ON_TERMINAL), *command],
        cwd=REPO_ROOT,
        env=plain_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    ) as terminal:
        assert terminal.stdin is not None and terminal.stdout is not None
        output = terminal.stdout

        def read_screen() -> None:
            while data := os.read(output.fileno(), 4096):
                screen.extend(data)

        reader = threading.Thread(target=read_screen)
        reader.start()
        deadline = time.monotonic() + 240
        while f"1/{CLIPS} clips |".encode() not in screen:
            assert terminal.poll() is None and time.monotonic() < deadline, bytes(screen[-3000:])
            time.sleep(0.2)
        terminal.stdin.write(CTRL_C)  # typed on the terminal: SIGINT to its foreground process group
        terminal.stdin.flush()
        code = terminal.wait(timeout=120)
        reader.join()
    text = re.sub(r"\x1b\[[0-9;]*m", "", screen.decode(errors="replace"))  # colours off

    assert code == 130, text[-3000:]
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-3000:]
    assert re.search(
        rf"\d/{CLIPS} clips \|.*\| \d\d:\d\d, ok \d \| failed 0 \| running \d \| \d+ clips/h \| ETA ", text
    )
    last = [line for line in re.split(r"[\r\n]+", text) if line.strip()][-1]
    interrupted = re.search(
        rf"WARNING interrupted after (\d) of {CLIPS} clip\(s\) of run tty \(ok \1, failed 0; their "
        rf"videos and metrics are in {re.escape(str(out))}\); rerun the same command to resume: clips "
        "already done are skipped",
        last,
    )
    assert interrupted, last
    finished = int(interrupted.group(1))
    assert finished >= 1
    record = read_run_record(open_target(str(out)), "tty")  # left by the interrupted run
    assert record is not None and record.exit_code == 130
    assert (record.to_render, record.ok, record.failed, record.lost) == (CLIPS, finished, 0, CLIPS - finished)

    again = subprocess.run(
        command, cwd=REPO_ROOT, env=plain_env(), capture_output=True, text=True, timeout=240
    )

    assert again.returncode == 0, again.stderr[-3000:]
    skipped = re.search(
        rf"(\d) of {CLIPS} clip\(s\) already done in {re.escape(str(out))}, skipped", again.stderr
    )
    assert skipped and int(skipped.group(1)) >= finished, again.stderr[-3000:]
    assert f"{CLIPS} clips |" not in again.stderr  # no terminal: plain log lines, no bar
    assert re.search(rf"\[1/{CLIPS - int(skipped.group(1))}\] ok     clip boat-\d", again.stderr)
    resumed = read_run_record(open_target(str(out)), "tty")  # replaced by the invocation that resumed
    assert resumed is not None and resumed.exit_code == 0
    assert (resumed.skipped, resumed.resumed) == (0, int(skipped.group(1)))  # this run's own clips
    assert (resumed.ok, resumed.lost) == (CLIPS - resumed.resumed, 0)
    rows = read_metrics(open_target(str(out)), "tty").to_pylist()
    assert sorted(row["clip_id"] for row in rows if row["status"] == "ok") == [
        f"boat-{i}" for i in range(CLIPS)
    ]
