"""Steady throughput per GPU of the real worker, per group size (clips per DiT forward).

Run on the device machine (one call, one GPU, `.device` carried; see benchmarks/README.md):

    . benchmarks/device_env.sh && python3 benchmarks/bench_throughput.py --clips-per-forward 1,2 \\
        --out $OUT/throughput.json

What it measures, in one process, with the `RenderWorker` users run (random full-size weights, mp4s
encoded by ffmpeg into a local folder, metrics rows written there, `deep-forcing`):

1. the worker's construction (model drawn on the GPU, speed settings): `load_s`;
2. per group size n, in this order: a warm-up batch of n short clips (`--warmup-latent-frames`), which
   compiles the shapes of that group size, then `--steady-batches` batches of n clips of
   `--latent-frames` (60 s by default), two calls at a time as Ray runs an actor (one generates while
   the other encodes and uploads);
3. right after group size 1, a second process on the same compile caches (inductor and Triton, on this
   node's disk): its load and its first (warm-up) clip, as a second actor on a node that has rendered
   before would meet them, with where its threads spent that time (`--quick-search-process`: and a
   third that leaves cuDNN's conv search at PyTorch's default, `quick_search_process`, its warm-up and
   steady VAE decode against the shipped full search; `--fresh-node-process`: and one on empty compile
   caches that only has the compiled kernels the first process published under the output,
   `fresh_node_process`, as the first actor on a new node meets them).

Fields per group size: `steady_fps_per_gpu` (frames of the steady clips over the wall time from the
first steady call to the last one's return), `period_fps_per_gpu` (the rate a long run approaches:
frames of the batches after the first to return, over the time from its return to the last one's, so
the run's start and its last batch's tail, paid once per run, are left out), `dit_chunk_s` (median DiT
seconds per clip per chunk once the cache is full, the clip's share of the group's forwards; CUDA
events), `dit_group_chunk_s` (the group's), `vae_chunk_s` (median decode per clip per chunk after the
first), `first_frames_s` (median over the steady clips), `text_s` (a clip's share of its group's prompt
encoding, median), `text_placement` (where UMT5 lives: `device` where the group fits beside it, else
`offload`), `peak_mem_gb` (GiB, max allocated while generating, UMT5 included when resident),
`warmup_s` (the warm-up batch's wall time over what its frames take at the steady rate). Top level:
`warmup_cold_s` (the first process's warm-up at group size 1, compile caches empty), `warmup_warm_s`
(the second process's), `load_cold_s`, `load_warm_s`, `attention_choices` (the self-attention kernel
timed fastest per call shape, clips x queries x keys, with every candidate's time). The JSON is
rewritten after every phase, so a call cut short still returns what it measured.

Checked on a CPU with the tiny preset:

    PYTHONPATH=. python benchmarks/bench_throughput.py --preset tiny --latent-frames 12 \\
        --warmup-latent-frames 6 --full-cache-chunk 1 --clips-per-forward 1,2 --out out/throughput.json
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench_scaling import CACHE_POLICY, PROMPTS  # noqa: E402  (beside this script: the same clips)

from pipeline.generate import ClipRequest, ClipStats, GroupStream  # noqa: E402
from pipeline.model.attention import FastestAttention  # noqa: E402
from pipeline.prompts import RenderDefaults, parse_line  # noqa: E402
from pipeline.spec.cache import PolicyParams  # noqa: E402
from pipeline.spec.clip import ClipSpec  # noqa: E402
from pipeline.spec.model import get_preset  # noqa: E402
from pipeline.worker import RenderWorker, WorkerConfig  # noqa: E402

CALLS_PER_ACTOR = 2  # as jobs/render.py runs an actor: one call generates while the other finalises
CACHE_ENV = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")
ROW_TIMINGS = (
    "clip_id",
    "t_generate_s",
    "t_decode_s",
    "t_encode_s",
    "t_upload_s",
    "t_quality_s",
    "t_total_s",
)
SAMPLE_S = 0.1  # the stack sampler's period
COMPILER_FILES = (
    "/torch/_dynamo/",
    "/torch/_inductor/",
    "/torch/_functorch/",
    "/torch/fx/",
    "/triton/",
    "/sympy/",
)


class Bench:
    """One worker, clips made as the driver makes them, and the group streams it renders."""

    def __init__(self, args: argparse.Namespace, tag: str):
        self.args = args
        self.tag = tag
        self.preset = get_preset(args.preset)
        self.defaults = RenderDefaults(self.preset, cache_policy=CACHE_POLICY)
        self.made = 0
        config = WorkerConfig(
            out=str(args.videos),
            run_id=f"throughput-{tag}",
            model=args.preset,
            random_weights=self.preset.needs_weights,
            clips_per_forward=1,
            clip_timeout_s=24 * 3600.0,
            hang_timeout_s=24 * 3600.0,
            log_level="WARNING",
            search_all_conv_algorithms=not args.quick_conv_search,
        )
        start = time.perf_counter()
        self.worker = RenderWorker(config)
        self.load_s = time.perf_counter() - start
        # Each group's ClipStats, which the generator completes in place; never the streams themselves,
        # whose caches would stay allocated.
        self.groups: list[list[ClipStats]] = []
        stream_group = self.worker.generator.stream_group

        def recording(clips: Sequence[ClipRequest], latent_frames: int, cache: PolicyParams) -> GroupStream:
            stream = stream_group(clips, latent_frames, cache)
            self.groups.append([stream.stats(clip) for clip in range(len(stream))])
            return stream

        self.worker.generator.stream_group = recording  # type: ignore[method-assign,assignment]

    def batch(self, size: int, latent_frames: int) -> list[ClipSpec]:
        clips = []
        for _ in range(size):
            index = self.made
            self.made += 1
            line = {
                "id": f"{self.tag}-{index:03d}",
                "prompt": f"{PROMPTS[index % len(PROMPTS)]} Take {index}.",
                "latent_frames": latent_frames,
            }
            clips.append(parse_line(json.dumps(line), index + 1, self.defaults))
        return clips

    def run(
        self, batches: list[list[ClipSpec]], calls: int
    ) -> tuple[float, list[dict[str, Any]], list[float]]:
        """Wall seconds for the batches, `calls` at a time, every clip's metrics row (all ok), and when each
        batch's call returned (seconds from the start)."""
        start = time.perf_counter()

        def call(batch: list[ClipSpec]) -> tuple[list[dict[str, Any]], float]:
            data = {"clip": np.array([clip.to_bytes() for clip in batch], dtype=object)}
            rows = self.worker(data).to_pylist()
            return rows, time.perf_counter() - start

        with ThreadPoolExecutor(max_workers=calls) as pool:
            results = list(pool.map(call, batches))
        wall_s = time.perf_counter() - start
        rows = [row for batch_rows, _ in results for row in batch_rows]
        failed = [
            f"{row['clip_id']}: {row['error_type']}: {row['error']}" for row in rows if row["status"] != "ok"
        ]
        if failed:
            raise RuntimeError("clips failed: " + "; ".join(failed))
        return wall_s, rows, [returned_s for _, returned_s in results]


class StackSampler:
    """Where each thread spends its wall time: every SAMPLE_S, the innermost frame of our code (or the
    innermost frame, if none is ours) of every thread and the library file it is in (compiling, cuDNN's
    search and Python ops tell apart that way), counted; a profile of the host side without py-spy."""

    def __init__(self) -> None:
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        # per thread: samples inside torch.compile's machinery, the rest by our innermost function
        self.activities: collections.Counter[tuple[str, str]] = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stack-sampler", daemon=True)

    def __enter__(self) -> StackSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        names = {}
        while not self._stop.wait(SAMPLE_S):
            names = {t.ident: t.name for t in threading.enumerate()}
            for ident, frame in sys._current_frames().items():
                if ident == threading.get_ident():
                    continue
                where = frame
                probe: Any = frame
                while probe is not None:
                    if "/pipeline/" in probe.f_code.co_filename:
                        where = probe
                        break
                    probe = probe.f_back
                compiling = False
                probe = frame
                while probe is not None and not compiling:
                    compiling = any(part in probe.f_code.co_filename for part in COMPILER_FILES)
                    probe = probe.f_back
                thread = names.get(ident, str(ident)).split("_")[0]
                self.activities[(thread, "compiling" if compiling else where.f_code.co_name)] += 1
                code = where.f_code
                place = f"{Path(code.co_filename).name}:{where.f_lineno} {code.co_name}"
                if where is not frame:  # in a library below our frame: which file
                    file = frame.f_code.co_filename
                    library = file.rpartition("-packages/")[2] if "-packages/" in file else Path(file).name
                    place += f" < {library}:{frame.f_code.co_name}"
                self.counts[(thread, place)] += 1

    def top(self, count: int = 40) -> list[str]:
        return [
            f"{n * SAMPLE_S:7.1f} s  {thread}  {place}"
            for (thread, place), n in self.counts.most_common(count)
        ]

    def activities_of(self, thread: str, count: int = 15) -> dict[str, float]:
        """Seconds of `thread` compiling (dynamo, inductor, Triton) and, otherwise, per function of ours."""
        mine = collections.Counter({what: n for (name, what), n in self.activities.items() if name == thread})
        return {what: round(n * SAMPLE_S, 1) for what, n in mine.most_common(count)}


def warm_up(bench: Bench, size: int) -> tuple[float, int]:
    """The warm-up batch of `size` clips: wall seconds and frames."""
    bench.worker.clips_per_forward = size
    batch = bench.batch(size, bench.args.warmup_latent_frames)
    wall_s, rows, _ = bench.run([batch], calls=1)
    return wall_s, sum(row["num_frames"] for row in rows)


def measure_size(bench: Bench, size: int) -> dict[str, Any]:
    args, preset = bench.args, bench.preset
    warm_wall_s, warm_frames = warm_up(bench, size)
    first_group = len(bench.groups)
    batches = [bench.batch(size, args.latent_frames) for _ in range(args.steady_batches)]
    with StackSampler() as sampler:
        wall_s, rows, returned_s = bench.run(batches, calls=CALLS_PER_ACTOR)
    clip_stats = [stats for group in bench.groups[first_group:] for stats in group]
    frames = sum(row["num_frames"] for row in rows)
    fps = frames / wall_s
    batch_frames = frames / len(batches)  # batches of one length
    period_fps = (
        (len(batches) - 1) * batch_frames / (max(returned_s) - min(returned_s)) if len(batches) > 1 else None
    )
    full_from = args.full_cache_chunk  # chunks before it still fill the cache
    dit_share = [t for stats in clip_stats for t in stats.dit_s[full_from:]]
    vae = [t for stats in clip_stats for t in stats.vae_s[1:]]
    first_frames = [stats.first_frames_s for stats in clip_stats]
    peaks = [stats.peak_memory_gb for stats in clip_stats if stats.peak_memory_gb is not None]
    return {
        "clips_per_forward": size,
        "clips": len(rows),
        "latent_frames": args.latent_frames,
        "frames_per_clip": preset.pixel_frames(args.latent_frames),
        "steady_wall_s": wall_s,
        "steady_fps_per_gpu": fps,
        "period_fps_per_gpu": period_fps,
        "batch_returned_s": returned_s,
        "dit_chunk_s": statistics.median(dit_share) if dit_share else None,
        "dit_group_chunk_s": statistics.median(dit_share) * size if dit_share else None,
        "vae_chunk_s": statistics.median(vae) if vae else None,
        "first_frames_s": statistics.median(first_frames),
        "text_s": statistics.median(stats.text_s for stats in clip_stats),  # each clip's share
        "text_placement": bench.worker.bundle.text_placement,
        "peak_mem_gb": max(peaks) * 1e9 / 2**30 if peaks else None,
        "warmup_wall_s": warm_wall_s,
        "warmup_s": warm_wall_s - warm_frames / fps,
        # Where each clip's wall time went: the generator's view (text, first frames, its whole wall
        # time against the device seconds it measured) and the row's (encode tail, upload, quality)
        "clip_timings": [
            {
                "text_s": stats.text_s * stats.clips_per_forward,
                "first_frames_s": stats.first_frames_s,
                "generate_wall_s": stats.total_s,
                "device_s": sum(stats.dit_s) * stats.clips_per_forward + sum(stats.vae_s),
            }
            for stats in clip_stats
        ],
        "rows": [{key: row[key] for key in ROW_TIMINGS} for row in rows],
        "where_threads_were": sampler.top(),
        "compressions": [json.loads(row["cache_telemetry"]).get("compressions") for row in rows],
        "mp4_bytes": [row["bytes"] for row in rows],
    }


def warm_process(
    args: argparse.Namespace, tag: str, quick_conv_search: bool, fresh_node: bool
) -> dict[str, Any]:
    """This script again, in a process of its own: load and first clip. On the same compile caches, or
    (`fresh_node`) on empty ones, primed only from the compiled kernels the first process published
    under the output (worker/compiled.py), as on a node that has never rendered."""
    command = [sys.executable, __file__, "--second-process", "--tag", tag, "--preset", args.preset]
    command += ["--quick-conv-search"] if quick_conv_search else []
    command += ["--warmup-latent-frames", str(args.warmup_latent_frames), "--videos", str(args.videos)]
    env = dict(os.environ)
    if fresh_node:
        fresh = Path(tempfile.mkdtemp(prefix="fresh-node-"))
        env |= {name: str(fresh / name.lower()) for name in CACHE_ENV}
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=args.second_process_timeout, env=env
    )
    if done.returncode != 0:
        raise RuntimeError(f"second process failed ({done.returncode}): {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def second_process(args: argparse.Namespace) -> None:
    with StackSampler() as sampler:
        bench = Bench(args, args.tag)  # clip ids of its own
        wall_s, frames = warm_up(bench, 1)
    (stats,) = bench.groups[0]
    results = {
        "quick_conv_search": args.quick_conv_search,
        "load_s": bench.load_s,
        "first_clip_wall_s": wall_s,
        "first_clip_frames": frames,
        # the second chunk still searches (its shapes are the steady ones)
        "vae_chunk_s": statistics.median(stats.vae_s[2:]) if len(stats.vae_s) > 2 else None,
        "device_thread_s": sampler.activities_of("device"),  # the thread that runs the model
        "dynamo_graphs": torch._dynamo.utils.counters["stats"]["unique_graphs"],
        "dynamo_graph_breaks": sum(torch._dynamo.utils.counters["graph_break"].values()),
    }
    print(json.dumps(results | {"where_threads_were": sampler.top()}))


def attention_choices(bench: Bench) -> dict[str, Any] | None:
    """The self-attention kernel timed fastest per call shape (`FastestAttention`), with its timings."""
    kernel = bench.worker.bundle.dit.self_attention
    if not isinstance(kernel, FastestAttention):
        return None
    return {
        f"{clips}x{queries}x{keys}": {"kernel": kernel.choices[shape]}
        | {f"{name}_ms": seconds * 1e3 for name, seconds in kernel.timings[shape].items()}
        for shape in sorted(kernel.choices)
        for clips, queries, keys in [shape]
    }


def save(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, default=str))


def report(results: dict[str, Any]) -> None:
    columns: list[tuple[str, str, Callable[[Any], str]]] = [
        ("clips_per_forward", "n", str),
        ("clips", "clips", str),
        ("steady_fps_per_gpu", "FPS", lambda v: f"{v:.2f}"),
        ("period_fps_per_gpu", "period", lambda v: f"{v:.2f}" if v is not None else "-"),
        ("dit_chunk_s", "DiT/clip", lambda v: f"{v:.3f}"),
        ("dit_group_chunk_s", "DiT/group", lambda v: f"{v:.3f}"),
        ("vae_chunk_s", "VAE", lambda v: f"{v:.3f}"),
        ("first_frames_s", "first", lambda v: f"{v:.2f}"),
        ("peak_mem_gb", "GiB", lambda v: f"{v:.1f}" if v is not None else "-"),
        ("warmup_s", "warm-up", lambda v: f"{v:.1f}"),
    ]
    print(results["gpu"], results["torch"])
    print("  ".join(f"{title:>9}" for _, title, _ in columns))
    for run in results["runs"]:
        print("  ".join(f"{fmt(run[key]):>9}" for key, _, fmt in columns))
    for key in ("load_cold_s", "warmup_cold_s", "load_warm_s", "warmup_warm_s"):
        if results.get(key) is not None:
            print(f"{key} {results[key]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="self-forcing-1.3b")
    parser.add_argument("--latent-frames", type=int, default=240, help="steady clips (240: 60 s)")
    parser.add_argument("--warmup-latent-frames", type=int, default=30, help="warm-up clips")
    parser.add_argument("--steady-batches", type=int, default=2, help="steady batches per group size")
    parser.add_argument("--clips-per-forward", default="1,2", help="group sizes, in this order")
    parser.add_argument("--full-cache-chunk", type=int, default=7, help="first chunk with a full cache")
    parser.add_argument("--videos", type=Path, help="local --out for the mp4s (default: a temp folder)")
    parser.add_argument("--compile-cache", type=Path, help="inductor/Triton caches (default: a new folder)")
    parser.add_argument("--no-second-process", action="store_true", help="skip the warm-start process")
    parser.add_argument("--second-process-timeout", type=float, default=300.0)
    parser.add_argument(
        "--quick-search-process", action="store_true", help="and a third with PyTorch's default conv search"
    )
    parser.add_argument(
        "--fresh-node-process",
        action="store_true",
        help="and one on empty compile caches, primed from the output",
    )
    parser.add_argument("--quick-conv-search", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tag", default="second", help=argparse.SUPPRESS)
    parser.add_argument("--second-process", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path("throughput.json"))
    args = parser.parse_args()
    if args.second_process:  # the caches come from the parent's environment
        second_process(args)
        return

    scratch = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    args.videos = args.videos or scratch / "videos"
    cache = args.compile_cache or scratch / "compile-cache"
    for name in CACHE_ENV:  # empty: the first process's warm-up is a cold one
        os.environ[name] = str(cache / name.lower())
    results: dict[str, Any] = {
        "benchmark": "bench_throughput",
        "date": datetime.date.today().isoformat(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "preset": args.preset,
        "cache_policy": CACHE_POLICY,
        "videos": str(args.videos),
        "compile_cache": str(cache),
        "runs": [],
    }
    bench = Bench(args, "first")
    results["load_cold_s"] = bench.load_s
    kernel = bench.worker.bundle.dit.self_attention
    results["self_attention"] = getattr(kernel, "__name__", type(kernel).__name__)
    save(args.out, results)
    for size in (int(n) for n in args.clips_per_forward.split(",")):
        run = measure_size(bench, size)
        results["runs"].append(run)
        results["attention_choices"] = attention_choices(bench)
        if size == 1:
            results["warmup_cold_s"] = run["warmup_s"]
            # Before the larger groups, so a call cut short has them. The first model stays on the GPU,
            # which has room for two: as shipped, and with PyTorch's default conv search
            variants = [("second_process", False, False)]  # (key, quick conv search, fresh node)
            variants += [("quick_search_process", True, False)] if args.quick_search_process else []
            variants += [("fresh_node_process", False, True)] if args.fresh_node_process else []
            for key, quick, fresh in variants if not args.no_second_process else []:
                second = warm_process(args, key.split("_")[0], quick, fresh)
                second["warmup_s"] = (
                    second["first_clip_wall_s"] - second["first_clip_frames"] / run["steady_fps_per_gpu"]
                )
                results[key] = second
            if "second_process" in results:
                results["load_warm_s"] = results["second_process"]["load_s"]
                results["warmup_warm_s"] = results["second_process"]["warmup_s"]
        save(args.out, results)
        report(results)


if __name__ == "__main__":
    main()
