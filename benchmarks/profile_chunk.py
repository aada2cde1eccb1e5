"""Where one steady chunk's time goes: torch.profiler over a few chunks of a warmed-up clip.

Prints the operators and kernels with the most device time, and writes the table as JSON. Used to
find what is left above the attention + GEMM floor (benchmarks/README.md). Runs on the GPU machine
with the shipped settings, or anywhere with `--device cpu --preset tiny` to check the script.

    python benchmarks/profile_chunk.py --out $OUT/profile.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from pipeline.cache import make_cache
from pipeline.generate import ClipGenerator
from pipeline.model.bundle import ModelBundle
from pipeline.model.presets import get_preset
from pipeline.model.speed import SpeedConfig, accelerate

PROMPT = "A drone view of waves crashing against the rugged cliffs along Big Sur's Garay Point beach."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="self-forcing-1.3b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--policy", default="deep-forcing")
    parser.add_argument("--warmup-frames", type=int, default=27, help="latent frames before profiling")
    parser.add_argument("--profiled-frames", type=int, default=6, help="latent frames profiled (2 chunks)")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--rows", type=int, default=30)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    preset = get_preset(args.preset)
    on_gpu = args.device == "cuda"
    dtype = torch.bfloat16 if on_gpu else torch.float32
    bundle = ModelBundle.random(preset, args.device, dtype, text_placement="offload" if on_gpu else "device")
    if not args.no_compile:
        accelerate(bundle, SpeedConfig(compile_backend="inductor" if on_gpu else "aot_eager"))
    generator = ClipGenerator(bundle)
    cache = make_cache(args.policy, preset.cache_geometry(), bundle.dit.rope)
    chunks = generator.stream(PROMPT, 0, args.warmup_frames + args.profiled_frames, cache)
    warmup_chunks = args.warmup_frames // preset.chunk_frames
    for _ in range(warmup_chunks):  # compile, cuDNN plans, allocator pools, a compression or two
        next(chunks)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    with profile(activities=activities) as prof:
        for _ in chunks:  # the profiled chunks (one extra decode may land here: chunks go out one behind)
            pass
    sort_by = "self_cuda_time_total" if on_gpu else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort_by, row_limit=args.rows)
    print(table, flush=True)
    rows = [
        {
            "name": event.key,
            "calls": event.count,
            "self_device_ms": getattr(event, "self_device_time_total", 0.0) / 1000,
            "self_cpu_ms": event.self_cpu_time_total / 1000,
        }
        for event in prof.key_averages()
    ]
    rows.sort(key=lambda r: r["self_device_ms"] if on_gpu else r["self_cpu_ms"], reverse=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "device": torch.cuda.get_device_name() if on_gpu else "cpu",
                "torch": torch.__version__,
                "policy": args.policy,
                "profiled_chunks": args.profiled_frames // preset.chunk_frames,
                "rows": rows[: args.rows],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
