"""CPU cost of the render-time quality signals and thumbnails for one 60 s clip (957 frames, 832x480,
16 fps, in the generator's chunks of 9 then 12 frames). Runs on any CPU; no GPU, no torch.

1. `ClipAnalysis` in this thread: its own CPU seconds (the `t_quality_s` column), then a breakdown by
   family from cProfile (a second pass; profiling adds a little). The same clip as a storyboard of three
   20 s segments (switches at frames 321 and 633, README "Storyboards") adds each segment's signals,
   all computed in `finish` from what the frames left: `storyboard_extra_cpu_s` is its finish against
   the plain clip's (min of the repeats each; the whole clip's CPU time varies by more than that).
2. `QualityMeter` as the worker runs it, with the device's time per chunk simulated by a sleep
   (`--device-chunk-s`, default 0.45 s: an H100's DiT + VAE per chunk, README "Speed"): how long the
   render loop is held by `update` (handing chunks over) and by `result` (waiting for the last ones).

Frames are a smooth random texture panning 2 px a frame: Farneback's cost does not depend on the
content, and the texture keeps every other signal busy.

    python benchmarks/bench_quality.py --out benchmarks/results/<date>_cpu_quality.json
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from pipeline.quality import ClipAnalysis, QualityMeter

FPS, FRAMES, HEIGHT, WIDTH = 16, 957, 480, 832
PAN_PX = 2
STORYBOARD_SWITCHES = (321, 633)  # 20 s + 20 s + 20 s: 81 + 78 + 81 latent frames

# cProfile entries (file suffix, function) -> the family they belong to
FAMILIES = {
    ("motion.py", "add"): "flow (Farneback, top-5%)",
    ("appearance.py", "add"): "colour and sharpness",
    ("repetition.py", "add"): "roll-back signatures",
    ("flicker.py", "add"): "flicker steps",
    ("thumbnails.py", "add"): "thumbnails (resize)",
    ("frames.py", "resize"): "downsampling",
    ("frames.py", "gray"): "luma",
    ("meter.py", "finish"): "end of clip (windows, similarity, JPEG)",
}


def chunks() -> Iterator[np.ndarray]:
    rng = np.random.default_rng(0)
    span = WIDTH + PAN_PX * FRAMES
    texture = cv2.resize(
        rng.integers(0, 256, (HEIGHT // 8, span // 8, 3), dtype=np.uint8),
        (span, HEIGHT),
        interpolation=cv2.INTER_CUBIC,
    )
    start = 0
    while start < FRAMES:
        size = 9 if start == 0 else 12
        yield np.stack(
            [texture[:, PAN_PX * i : PAN_PX * i + WIDTH] for i in range(start, min(start + size, FRAMES))]
        )
        start += size


def analysis_pass(clip: list[np.ndarray], switch_frames: tuple[int, ...] = ()) -> tuple[float, float]:
    """(CPU seconds of the whole analysis, of its finish)."""
    analysis = ClipAnalysis(FPS, FRAMES, switch_frames=switch_frames)
    for chunk in clip:
        analysis.add(chunk)
    start = time.thread_time()
    report = analysis.finish()
    finish_s = time.thread_time() - start
    assert report is not None
    return report.cpu_s, finish_s


def breakdown(clip: list[np.ndarray]) -> dict[str, float]:
    profile = cProfile.Profile(time.thread_time)  # CPU time: other processes' load does not count
    profile.enable()
    analysis_pass(clip)
    profile.disable()
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    found: dict[str, float] = {}
    for (path, _, function), (_, _, _, cumulative, _) in stats.items():
        for (suffix, name), family in FAMILIES.items():
            if path.endswith(f"quality/{suffix}") and function == name:
                found[family] = found.get(family, 0.0) + cumulative
    return {family: round(seconds, 3) for family, seconds in sorted(found.items(), key=lambda kv: -kv[1])}


def meter_pass(clip: list[np.ndarray], device_chunk_s: float) -> dict[str, float]:
    meter = QualityMeter(FPS, FRAMES)
    held = 0.0
    for chunk in clip:
        start = time.perf_counter()
        meter.update(chunk)
        held += time.perf_counter() - start
        time.sleep(device_chunk_s)  # the device generating the next chunk (the GIL is free meanwhile)
    start = time.perf_counter()
    report = meter.result()
    waited = time.perf_counter() - start
    assert report is not None
    return {
        "update_held_s": round(held, 3),
        "result_wait_s": round(waited, 3),
        "thread_cpu_s": round(report.cpu_s, 3),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device-chunk-s", type=float, default=0.45, help="simulated device time per chunk")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    clip = list(chunks())
    cpu, finish = zip(*[analysis_pass(clip) for _ in range(args.repeats)], strict=True)
    storyboard, storyboard_finish = zip(
        *[analysis_pass(clip, STORYBOARD_SWITCHES) for _ in range(args.repeats)], strict=True
    )
    result = {
        "clip": {"frames": FRAMES, "width": WIDTH, "height": HEIGHT, "fps": FPS},
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "opencv": cv2.__version__,
            "opencv_threads": cv2.getNumThreads(),
            "load_average_1min": os.getloadavg()[0],
        },
        "cpu_s_per_clip": {"min": round(min(cpu), 3), "median": round(float(np.median(cpu)), 3)},
        "finish_cpu_s": round(min(finish), 4),
        "cpu_s_per_storyboard_clip": {
            "switch_frames": list(STORYBOARD_SWITCHES),
            "min": round(min(storyboard), 3),
            "median": round(float(np.median(storyboard)), 3),
            "finish_cpu_s": round(min(storyboard_finish), 4),
        },
        "storyboard_extra_cpu_s": round(min(storyboard_finish) - min(finish), 4),
        "breakdown_s": breakdown(clip),
        "meter_in_render_loop": meter_pass(clip, args.device_chunk_s),
        "date": time.strftime("%Y-%m-%d"),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
