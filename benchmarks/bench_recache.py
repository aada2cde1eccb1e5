"""GPU benchmark of a storyboard's prompt switches at full size (random weights): the time of one switch
per recache mode, and what a one-minute clip of three segments costs against one of one prompt.

Run on the device machine (see benchmarks/README.md):

    python benchmarks/bench_recache.py --out $OUT/recache.json

Per cache policy (default deep-forcing): a warm-up storyboard per recache mode (compiles, cuDNN plans,
the masked attention of the re-cache pass), then a plain clip of `--seconds` summed and a storyboard of
those segments per mode (none, window, all), each built from a prompt line exactly as the renderer
builds it, generation and decode only (no ffmpeg). Per switch: device seconds (the generator's CUDA
events), frames re-cached and run through the DiT. Per clip: DiT and VAE seconds, text encoding, wall
time, and the DiT seconds over the plain clip's. Checked on a CPU with
`--preset tiny --device cpu --seconds 2,2,2 --warmup-seconds 1,1`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from pipeline.generate import ClipGenerator
from pipeline.model.bundle import ModelBundle
from pipeline.prompts import RenderDefaults, parse_line
from pipeline.spec.clip import ClipSpec
from pipeline.spec.model import get_preset
from pipeline.spec.storyboard import RECACHE_MODES

PROMPTS = (
    "A red fox trots through fresh snow in a quiet pine forest at dawn, its breath steaming.",
    "The fox reaches the edge of a frozen lake and steps carefully onto the ice.",
    "The fox sits on the ice and looks up at green northern lights rippling across the night sky.",
)


def clip_for(defaults: RenderDefaults, policy: str, seconds: list[float], mode: str | None) -> ClipSpec:
    """The clip a prompt line would give: a storyboard of `seconds` segments, or (mode None) one prompt."""
    if mode is None:
        line: dict[str, Any] = {"prompt": PROMPTS[0], "seconds": sum(seconds)}
    else:
        segments = [{"prompt": PROMPTS[i % len(PROMPTS)], "seconds": s} for i, s in enumerate(seconds)]
        line = {"prompts": segments, "recache": mode}
    return parse_line(json.dumps({**line, "cache_policy": policy, "seed": 2}), 1, defaults)


def render(generator: ClipGenerator, clip: ClipSpec) -> dict[str, Any]:
    device = generator.device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    stream = generator.stream(clip.storyboard or clip.prompt, clip.seed, clip.num_latent_frames, clip.cache)
    frames = sum(chunk.shape[0] for chunk in stream)
    wall = time.perf_counter() - start
    stats = stream.stats
    switches = stats.cache_telemetry.get("switches", [])
    return {
        "recache": clip.storyboard.recache if clip.storyboard else None,
        "segments": [[s.first_frame, s.num_latent_frames] for s in clip.segments],
        "latent_frames": clip.num_latent_frames,
        "frames": frames,
        "wall_s": wall,
        "text_s": stats.text_s,
        "dit_total_s": sum(stats.dit_s),
        "vae_total_s": sum(stats.vae_s),
        "first_frames_s": stats.first_frames_s,
        "switches": switches,
        "switch_s": [switch["seconds"] for switch in switches],
        "peak_mem_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "telemetry": {k: v for k, v in stats.cache_telemetry.items() if k != "switches"},
        "dit_s": stats.dit_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="self-forcing-1.3b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--policies", default="deep-forcing", help="comma list of cache policies")
    parser.add_argument("--modes", default=",".join(RECACHE_MODES), help="comma list of recache modes")
    parser.add_argument("--seconds", default="20,20,20", help="the storyboard's segments, in seconds")
    parser.add_argument("--warmup-seconds", default="6,3", help="the warm-up storyboard's segments")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    preset = get_preset(args.preset)
    device = torch.device(args.device)
    load_start = time.perf_counter()
    bundle = ModelBundle.for_device(preset, None, device)  # random weights, the renderer's settings
    generator = ClipGenerator(bundle)
    defaults = RenderDefaults(preset)
    seconds = [float(s) for s in args.seconds.split(",")]
    warmup = [float(s) for s in args.warmup_seconds.split(",")]
    results: dict[str, Any] = {
        "gpu": bundle.device_name or "cpu",
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "preset": preset.name,
        "dtype": str(bundle.dtype),
        "text_placement": bundle.text_placement,
        "model_init_s": time.perf_counter() - load_start,
        "segment_seconds": seconds,
        "runs": [],
    }
    modes = args.modes.split(",")
    for policy in args.policies.split(","):
        for mode in modes:  # every path the timed clips take, compiled and planned once
            render(generator, clip_for(defaults, policy, warmup, mode))
        plain = render(generator, clip_for(defaults, policy, seconds, None))
        plain["policy"] = policy
        results["runs"].append(plain)
        report(policy, "one prompt", plain, plain)
        save(args.out, results)
        for mode in modes:
            run = render(generator, clip_for(defaults, policy, seconds, mode))
            run["policy"] = policy
            run["dit_over_plain_s"] = run["dit_total_s"] - plain["dit_total_s"]
            results["runs"].append(run)
            report(policy, f"recache {mode}", run, plain)
            save(args.out, results)


def save(path: Path, results: dict[str, Any]) -> None:
    """Written after every run, so a run cut short by the lease still leaves its numbers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))


def report(policy: str, label: str, run: dict[str, Any], plain: dict[str, Any]) -> None:
    switches = ", ".join(
        f"chunk {s['chunk']}: {s['seconds'] * 1000:.0f} ms ({s['recached_frames']} frames re-cached, "
        f"{s['run_frames']} run)"
        for s in run["switches"]
    )
    median = statistics.median(run["switch_s"]) * 1000 if run["switch_s"] else 0.0
    print(
        f"{policy} {label:>14}: {run['frames']} frames in {run['wall_s']:.1f} s | "
        f"DiT {run['dit_total_s']:.2f} s ({run['dit_total_s'] - plain['dit_total_s']:+.2f} s vs 1 prompt) | "
        f"text {run['text_s']:.2f} s | "
        f"switch median {median:.0f} ms{f' [{switches}]' if switches else ''}",
        flush=True,
    )


if __name__ == "__main__":
    main()
