"""Multi-GPU throughput of the real Ray driver: clips per hour of `jobs/render.py` on 1, 2, ... GPUs.

Run on the device machine once Ray is installed (two calls, see benchmarks/README.md):

    python3 benchmarks/bench_scaling.py --gpus 1,2 --clips-per-gpu 4 --latent-frames 42 \\
        --out $OUT/scaling.json

For each GPU count n: a prompt file of n x K distinct prompts, rendered by `python jobs/render.py` in a
subprocess (its log beside --out) with CUDA_VISIBLE_DEVICES set to the first n GPUs, so that the local
Ray the driver starts sees exactly n GPUs and the driver starts one actor per GPU; `deep-forcing`, local
output in a temp folder, RAY_AUTH_MODE set explicitly as tests/conftest.py does, and the driver's
--random-weights (seeded random weights at full size: real cost, noise for pixels).

From the metrics table the job wrote:
- wall clips/h: ok clips over the subprocess's wall time (Ray start, model loads, torch.compile,
  every clip, compaction);
- steady clips/h: per actor (node, worker_pid), its clips after the first (which carries the model
  load and the torch.compile warm-up) over the time from its first clip's finish to its last clip's
  finish, summed over the actors; scaling = steady(n) / (n x steady(1)).

Checked on a CPU-only machine with fake GPUs (Ray is told the node has n GPUs; the actors find no
CUDA and render on the CPU, as in tests/test_render_job.py):

    PYTHONPATH=. python benchmarks/bench_scaling.py --preset tiny --fake-gpus --gpus 1,2 --clips-per-gpu 3 \\
        --latent-frames 6 --out out/scaling.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from pipeline.metrics import read_metrics
from pipeline.spec.model import get_preset
from pipeline.storage import open_target

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_POLICY = "deep-forcing"
PROMPTS = (
    "Several giant wooly mammoths tread through a snowy meadow.",
    "Waves crash against the cliffs of Big Sur at golden hour.",
    "A stylish woman strolls down a neon-lit Tokyo street at night.",
    "A red kite climbs over wind-swept sand dunes.",
    "A paper boat drifts down a rain-filled gutter.",
    "A fox trots across a frozen lake under the northern lights.",
)
LOG_TAIL_LINES = 30  # driver log lines printed when a run fails
END_WINDOW = 0.10  # the run's last tenth, where idle GPUs show a tail that groups leave unbalanced


def write_prompts(path: Path, count: int, tag: str) -> None:
    lines = [
        {"id": f"{tag}-{i:03d}", "prompt": f"{PROMPTS[i % len(PROMPTS)]} Take {i}."} for i in range(count)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def idle_at_the_end(rows: list[dict[str, Any]], end: Any, window_s: float) -> float:
    """Seconds of the last `window_s` before `end` in which none of these clips (one actor's) was
    rendering: the time that actor's GPU waited while others finished the run."""
    start = end - datetime.timedelta(seconds=window_s)
    busy_s, covered = 0.0, start
    for row in sorted(rows, key=lambda row: row["started_at"]):
        lo, hi = max(row["started_at"], covered), min(row["finished_at"], end)
        if hi > lo:  # an actor renders two clips at once (encode overlaps generation): count the union
            busy_s += (hi - lo).total_seconds()
            covered = hi
    return max(0.0, window_s - busy_s)  # not -0.0 from rounding


def summarize_run(gpus: int, rows: list[dict[str, Any]], wall_s: float) -> dict[str, Any]:
    """Wall and steady clips per hour from the metrics rows of one run."""
    ok = [row for row in rows if row["status"] == "ok"]
    failed = [row for row in rows if row["status"] != "ok"]
    by_actor: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for row in ok:
        by_actor[(row["node"], row["worker_pid"])].append(row)
    actors = []
    for (node, pid), clips in sorted(by_actor.items()):
        clips.sort(key=lambda row: row["started_at"])
        first, rest = clips[0], clips[1:]
        steady_s = (clips[-1]["finished_at"] - first["finished_at"]).total_seconds()
        measured = bool(rest) and steady_s > 0
        actors.append(
            {
                "node": node,
                "worker_pid": pid,
                "clips": len(clips),
                "load_s": first["t_load_s"],  # charged to the first clip an actor process renders
                "first_clip_s": first["t_total_s"],
                "steady_s_per_clip": steady_s / len(rest) if measured else None,
                "steady_clips_per_hour": len(rest) / steady_s * 3600 if measured else None,
                # DiT + VAE time of a steady clip: the rest of steady_s_per_clip is text encoding,
                # cache/encoder set-up and waiting on Ray
                "gen_decode_s_per_clip": (
                    statistics.fmean(row["t_generate_s"] + row["t_decode_s"] for row in rest)
                    if rest
                    else None
                ),
            }
        )
    rates = [actor["steady_clips_per_hour"] for actor in actors]
    span_s = (
        (max(row["finished_at"] for row in ok) - min(row["started_at"] for row in ok)).total_seconds()
        if ok
        else None
    )
    if span_s:
        end = max(row["finished_at"] for row in ok)
        for actor in actors:
            mine = by_actor[(actor["node"], actor["worker_pid"])]
            actor["idle_last_10pct_s"] = idle_at_the_end(mine, end, END_WINDOW * span_s)
    return {
        "gpus": gpus,
        "clips_ok": len(ok),
        "clips_failed": len(failed),
        "first_error": f"{failed[0]['error_type']}: {failed[0]['error']}"[:500] if failed else None,
        "gpu": next((row["gpu"] for row in ok if row["gpu"]), None),
        "actors": len(actors),
        "wall_s": wall_s,
        "wall_clips_per_hour": len(ok) / wall_s * 3600,
        "span_s": span_s,  # first clip's start to last clip's finish
        "steady_clips_per_hour": None if not rates or None in rates else sum(rates),
        # the GPU time the run's tail wastes: each actor's idle seconds in the last 10% of the span
        "end_window_s": END_WINDOW * span_s if span_s else None,
        "max_idle_last_10pct_s": max((a.get("idle_last_10pct_s", 0.0) for a in actors), default=None),
        "per_actor": actors,
    }


def run_driver(gpus: int, args: argparse.Namespace) -> dict[str, Any]:
    """Render gpus x --clips-per-gpu clips with jobs/render.py on the first `gpus` GPUs; its summary."""
    log_path = args.out.with_name(f"{args.out.stem}-{gpus}gpu.log")
    run_id = f"scaling-{gpus}gpu"
    with tempfile.TemporaryDirectory(prefix=f"{run_id}-") as tmp:
        prompts, out = Path(tmp) / "prompts.jsonl", Path(tmp) / "out"
        write_prompts(prompts, gpus * args.clips_per_gpu, tag=f"g{gpus}")
        command = [
            sys.executable,
            str(REPO_ROOT / "jobs" / "render.py"),
            str(prompts),
            *("--out", str(out), "--run-id", run_id, "--model", args.preset),
            "--random-weights",
            *("--latent-frames", str(args.latent_frames), "--cache-policy", CACHE_POLICY),
            *("--clips-per-forward", args.clips_per_forward),
        ]
        env = {
            **os.environ,
            "RAY_AUTH_MODE": "disabled",
            "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(gpus)),
        }
        env.pop("RAY_ADDRESS", None)  # the driver starts its own local Ray
        if args.fake_gpus:
            env["RAY_OVERRIDE_RESOURCES"] = json.dumps({"GPU": gpus})
        start = time.perf_counter()
        with log_path.open("w") as log:
            code = subprocess.run(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, check=False
            ).returncode
        wall_s = time.perf_counter() - start
        rows = read_metrics(open_target(str(out)), run_id).to_pylist()
    run = summarize_run(gpus, rows, wall_s)
    run |= {"exit_code": code, "command": command, "log": log_path.name}
    if code != 0 or run["actors"] != gpus:
        tail = log_path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        print(f"{gpus} GPU(s): exit code {code}, {run['actors']} actor(s); log tail:", *tail, sep="\n")
    return run


def add_scaling(runs: list[dict[str, Any]]) -> None:
    """scaling = steady(n) / (n x steady(1)); wall_scaling likewise with wall clips/h."""
    base = next((run for run in runs if run["gpus"] == 1), None)
    for run in runs:
        for key, rate in (("scaling", "steady_clips_per_hour"), ("wall_scaling", "wall_clips_per_hour")):
            ok = base is not None and base[rate] and run[rate] is not None
            run[key] = run[rate] / (run["gpus"] * base[rate]) if base and ok else None


def save(path: Path, results: dict[str, Any]) -> None:
    """Written after every GPU count, so a run cut short by the lease still leaves its numbers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, default=str))


TABLE = (  # column title, width, run key, format
    ("gpus", 4, "gpus", "d"),
    ("actors", 6, "actors", "d"),
    ("ok", 4, "clips_ok", "d"),
    ("failed", 6, "clips_failed", "d"),
    ("wall s", 8, "wall_s", ".1f"),
    ("wall clips/h", 12, "wall_clips_per_hour", ".1f"),
    ("steady clips/h", 14, "steady_clips_per_hour", ".1f"),
    ("scaling", 7, "scaling", ".3f"),
    ("wall scaling", 12, "wall_scaling", ".3f"),
    ("max idle end s", 14, "max_idle_last_10pct_s", ".1f"),
)


def report(run: dict[str, Any] | None) -> None:
    """One table row per run; the header for None."""
    cells = [
        title if run is None else "-" if run[key] is None else format(run[key], spec)
        for title, _, key, spec in TABLE
    ]
    print(
        " ".join(cell.rjust(width) for cell, (_, width, _, _) in zip(cells, TABLE, strict=True)), flush=True
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", default="1,2", help="comma list of GPU counts, run in this order")
    parser.add_argument("--clips-per-gpu", type=int, default=4, help="K: each run renders n x K clips")
    parser.add_argument("--latent-frames", type=int, default=42, help="clip length (42: 165 frames, 10 s)")
    parser.add_argument("--preset", default="self-forcing-1.3b", help="model preset; tiny for CPU checks")
    parser.add_argument("--clips-per-forward", default="auto", help="the driver's option: N or auto")
    parser.add_argument("--fake-gpus", action="store_true", help="tell Ray the node has n GPUs (CPU checks)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    counts = [int(n) for n in args.gpus.split(",")]
    if args.clips_per_gpu < 2:
        parser.error("--clips-per-gpu must be >= 2: steady rates exclude each actor's first clip")
    if not args.fake_gpus and torch.cuda.device_count() < max(counts):
        parser.error(
            f"--gpus {args.gpus} but {torch.cuda.device_count()} CUDA device(s); on CPUs add --fake-gpus"
        )

    preset = get_preset(args.preset)
    results: dict[str, Any] = {
        "gpu": None,  # from the metrics rows (the actors' device); null on CPU
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "preset": preset.name,
        "cache_policy": CACHE_POLICY,
        "latent_frames": args.latent_frames,
        "frames_per_clip": preset.pixel_frames(args.latent_frames),
        "clips_per_gpu": args.clips_per_gpu,
        "clips_per_forward": args.clips_per_forward,
        "fake_gpus": args.fake_gpus,
        "runs": [],
    }
    save(args.out, results)

    report(None)
    for gpus in counts:
        run = run_driver(gpus, args)
        results["runs"].append(run)
        add_scaling(results["runs"])
        results["gpu"] = results["gpu"] or run["gpu"]
        save(args.out, results)
        report(run)


if __name__ == "__main__":
    main()
