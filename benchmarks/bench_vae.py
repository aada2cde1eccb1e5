"""The VAE decode of a steady chunk (3 latents -> 12 frames at 480x832): whole decoder, then every conv.

1. The whole streaming decoder per speed setting (plain NCDHW, channels-last, channels-last with
   the ops between convs compiled, for dynamic shapes or static ones, and with each upsample's conv
   as four phases of a conv on its input, as shipped): ms per steady chunk, median over several
   chunks of one video; `--profile` adds its kernels by CUDA time.
2. Every conv of the chunk, per way of running it. The decoder's 3-tap causal convs can run as one
   Conv3d (NCDHW, or NDHWC), as three Conv2d over frame-shifted views of a frames-as-batch NHWC
   tensor summed, or as one Conv2d over the three views stacked along channels (one accumulation,
   like Conv3d). A conv with few output channels (the 3-channel head) is also timed with zero
   filters padded up to 8, 16 and 32 outputs, then sliced; an upsample's conv also as the 2x2 conv of
   its half-size input to four phases (`conv2d_nhwc_phases`, without the interleaving). Prints ms and
   TFLOP/s (of the 3x3 conv's work, so the phases' rate reads as an effective one) per conv and method,
   and the chunk's conv time per method weighted by how often each conv occurs.

    python benchmarks/bench_vae.py --out $OUT/vae.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import fields
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.gpu import median_ms, random_vae
from pipeline.model.speed import SpeedConfig, accelerate_vae, compiled_vae_ops
from pipeline.model.vae import Elementwise, WanVAEDecoder, phase_weights
from pipeline.spec.model import SELF_FORCING_1_3B as PRESET

DECODER_SETTINGS = {
    "plain": SpeedConfig(vae_channels_last=False, compile_vae=False),
    "channels-last": SpeedConfig(compile_vae=False),
    "channels-last + compiled": SpeedConfig(vae_phase_convs=False),
    # the ops between convs compiled for static shapes: a graph per shape, not per width
    "channels-last + compiled static": SpeedConfig(compile_vae=False, vae_phase_convs=False),
    # each upsample's conv on its input, as four phases (vae.UpsampleConv; shipped)
    "channels-last + compiled + phase convs": SpeedConfig(),
}
PROFILED_KERNELS = 25  # --profile: the kernels with the most CUDA time in a steady chunk

# (name, in channels, out channels, temporal taps, spatial taps, output frames, height, width, count)
CONVS = [
    ("conv1 16->384", 16, 384, 3, 3, 3, 60, 104, 1),
    ("res 384 @60x104", 384, 384, 3, 3, 3, 60, 104, 10),
    ("time_conv 384->768 @60x104", 384, 768, 3, 1, 3, 60, 104, 1),
    ("up 384->192 @120x208", 384, 192, 1, 3, 6, 120, 208, 1),
    ("res 192->384 @120x208", 192, 384, 3, 3, 6, 120, 208, 1),
    ("shortcut 192->384 @120x208", 192, 384, 1, 1, 6, 120, 208, 1),
    ("res 384 @120x208", 384, 384, 3, 3, 6, 120, 208, 5),
    ("time_conv 384->768 @120x208", 384, 768, 3, 1, 6, 120, 208, 1),
    ("up 384->192 @240x416", 384, 192, 1, 3, 12, 240, 416, 1),
    ("res 192 @240x416", 192, 192, 3, 3, 12, 240, 416, 6),
    ("up 192->96 @480x832", 192, 96, 1, 3, 12, 480, 832, 1),
    ("res 96 @480x832", 96, 96, 3, 3, 12, 480, 832, 6),
    ("head 96->3 @480x832", 96, 3, 3, 3, 12, 480, 832, 1),
]


def methods(
    cin: int, cout: int, kt: int, ks: int, frames: int, h: int, w: int, autotune: bool = False
) -> dict[str, Callable]:
    """The ways to compute one conv; every input already holds the kt - 1 frames of history.

    With `autotune`, also inductor's max-autotune choice between cuDNN and its Triton conv templates."""
    bf16: dict[str, Any] = {"device": "cuda", "dtype": torch.bfloat16}
    pad = ks // 2
    weight = torch.randn(cout, cin, kt, ks, ks, **bf16) / (cin * kt * ks * ks) ** 0.5
    bias = torch.randn(cout, **bf16)
    video = torch.randn((1, cin, frames + kt - 1, h, w), **bf16)  # NCDHW
    video_cl = video.to(memory_format=torch.channels_last_3d)
    weight_cl = weight.to(memory_format=torch.channels_last_3d)
    # frames as batch, channels last: frame-shifted views are free
    frames_nhwc = video[0].transpose(0, 1).contiguous(memory_format=torch.channels_last)
    taps = [weight[:, :, k].contiguous(memory_format=torch.channels_last) for k in range(kt)]
    stacked = torch.cat(taps, dim=1).contiguous(memory_format=torch.channels_last)  # (cout, kt*cin, ks, ks)

    def conv3d() -> torch.Tensor:
        return F.conv3d(video, weight, bias, padding=(0, pad, pad))

    def conv3d_ndhwc() -> torch.Tensor:
        return F.conv3d(video_cl, weight_cl, bias, padding=(0, pad, pad))

    def conv2d_per_tap() -> torch.Tensor:
        out = F.conv2d(frames_nhwc[:frames], taps[0], bias, padding=pad)
        for k in range(1, kt):
            out += F.conv2d(frames_nhwc[k : k + frames], taps[k], padding=pad)
        return out

    def conv2d_stacked() -> torch.Tensor:
        views = torch.cat([frames_nhwc[k : k + frames] for k in range(kt)], dim=1)
        return F.conv2d(views.contiguous(memory_format=torch.channels_last), stacked, bias, padding=pad)

    if kt == 1:
        frames_nchw, tap_nchw = video[0].transpose(0, 1).contiguous(), taps[0].contiguous()
        ways = {
            "conv2d_nchw": lambda: F.conv2d(frames_nchw, tap_nchw, bias, padding=pad),
            "conv2d_nhwc": lambda: F.conv2d(frames_nhwc, taps[0], bias, padding=pad),
        }
        if ks == 3:  # an upsample's conv: the same on the half-size input, as four 2x2 phases
            low_res = frames_nhwc[:, :, ::2, ::2].contiguous(memory_format=torch.channels_last)
            phase_weight = phase_weights(taps[0])
            ways["conv2d_nhwc_phases"] = lambda: F.conv2d(low_res, phase_weight, padding=1)
        return ways
    ways = {
        "conv3d_ncdhw": conv3d,
        "conv3d_ndhwc": conv3d_ndhwc,
        "conv2d_per_tap": conv2d_per_tap,
        "conv2d_stacked": conv2d_stacked,
    }
    if autotune:
        tuned = torch.compile(F.conv3d, mode="max-autotune-no-cudagraphs", dynamic=False)
        ways["conv3d_ndhwc_max_autotune"] = lambda: tuned(video_cl, weight_cl, bias, padding=(0, pad, pad))
    for padded_cout in (8, 16, 32) if cout < 8 else ():
        # cuDNN's kernels for 3 output channels run far under memory speed; extra zero filters may not.
        weight_padded = F.pad(weight, (0, 0, 0, 0, 0, 0, 0, 0, 0, padded_cout - cout))
        weight_padded = weight_padded.contiguous(memory_format=torch.channels_last_3d)
        bias_padded = F.pad(bias, (0, padded_cout - cout))
        ways[f"conv3d_ndhwc_cout{padded_cout}"] = partial(
            lambda wp, bp: F.conv3d(video_cl, wp, bp, padding=(0, pad, pad))[:, :cout],
            weight_padded,
            bias_padded,
        )
    return ways


def compile_ops_static(vae: WanVAEDecoder) -> None:
    torch._dynamo.config.recompile_limit = 64  # a graph per op and shape: past the default 8
    every_op = frozenset(op.name for op in fields(Elementwise))
    vae.elementwise = compiled_vae_ops(vae.elementwise, "inductor", static=every_op)


@torch.inference_mode()
def time_decoder(name: str, chunks: int = 8, profile: bool = False) -> dict[str, Any]:
    """ms for a video's first chunk and the median steady chunk, CUDA events around each decode, and
    the seconds the warm-up video took (compiling, and cuDNN timing its algorithms per shape);
    `profile`: the kernels of one more steady chunk, by CUDA time."""
    vae = accelerate_vae(random_vae(torch.bfloat16), DECODER_SETTINGS[name])
    if name.endswith("static"):
        compile_ops_static(vae)
    shape = (1, PRESET.vae.z_dim, PRESET.chunk_frames, PRESET.latent_height, PRESET.latent_width)
    latents = torch.randn(shape, device="cuda", dtype=torch.bfloat16)
    warmup_start = time.perf_counter()
    for video in range(2):  # a whole warm-up video first: compiled graphs and cuDNN plans for both shapes
        stream = vae.start_stream()
        decode = partial(vae.decode, latents, stream)
        times = [median_ms(decode, reps=1, warmup=0) for _ in range(chunks)]
        if video == 0:
            warmup_s = time.perf_counter() - warmup_start
    result: dict[str, Any] = {
        "first_chunk_ms": times[0],
        "steady_chunk_ms": sorted(times[1:])[len(times[1:]) // 2],
        "warmup_video_s": warmup_s,
    }
    if profile:
        activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
        with torch.profiler.profile(activities=activities, record_shapes=True) as prof:
            decode()
            torch.cuda.synchronize()
        kernels = sorted(
            (e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA),
            key=lambda e: e.device_time_total,
            reverse=True,
        )
        result["kernels_ms"] = [
            [event.key[:90], event.count, round(event.device_time_total / 1e3, 3)]
            for event in kernels[:PROFILED_KERNELS]
        ]
        # which eager ops (and inputs) those kernels come from: compiled graphs show as one op each
        ops = sorted(
            (e for e in prof.key_averages(group_by_input_shape=True) if e.key.startswith("aten::")),
            key=lambda e: e.device_time_total,
            reverse=True,
        )
        result["eager_ops_ms"] = [
            [event.key, str(event.input_shapes)[:120], event.count, round(event.device_time_total / 1e3, 3)]
            for event in ops[:PROFILED_KERNELS]
        ]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decoder-only", action="store_true", help="skip the per-conv table")
    parser.add_argument(
        "--decoders", default=",".join(DECODER_SETTINGS), help="comma list of decoder settings"
    )
    parser.add_argument("--convs", default="", help="only the convs whose name contains this")
    parser.add_argument("--autotune", action="store_true", help="add inductor's max-autotune conv choice")
    parser.add_argument(
        "--cudnn-benchmark-limit", type=int, default=None, help="cuDNN algorithms to time per shape (0: all)"
    )
    parser.add_argument("--profile", action="store_true", help="and each decoder's kernels in a steady chunk")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.backends.cudnn.benchmark = True
    if args.cudnn_benchmark_limit is not None:
        torch.backends.cudnn.benchmark_limit = args.cudnn_benchmark_limit
    decoders = {}
    for name in [] if args.convs else args.decoders.split(","):
        decoders[name] = time_decoder(name, profile=args.profile)
        print(f"decoder, {name:26s}: {json.dumps(decoders[name], indent=1)}", flush=True)
    rows = []
    totals: dict[str, float] = {}
    best_total = 0.0
    convs = [conv for conv in CONVS if args.convs in conv[0]]
    for name, cin, cout, kt, ks, frames, h, w, count in [] if args.decoder_only else convs:
        tflop = 2 * cin * cout * kt * ks * ks * frames * h * w / 1e12
        with torch.no_grad():
            ways = methods(cin, cout, kt, ks, frames, h, w, args.autotune)
            timings = {m: median_ms(fn) for m, fn in ways.items()}
        torch.cuda.empty_cache()
        row = {"conv": name, "count": count, "tflop": tflop, "ms": timings}
        rows.append(row)
        cells = "  ".join(f"{m} {ms:7.3f} ms ({tflop / ms * 1e3:4.0f})" for m, ms in timings.items())
        print(f"{name:28s} x{count:<2d} {cells}", flush=True)
        for m, ms in timings.items():
            totals[m] = totals.get(m, 0.0) + ms * count
        best_total += min(timings.values()) * count
    print(
        "per chunk, temporal convs only where a method applies:", {m: round(v, 1) for m, v in totals.items()}
    )
    print(f"per chunk, best method per conv: {best_total:.1f} ms", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "device": torch.cuda.get_device_name(),
                "torch": torch.__version__,
                "cudnn": torch.backends.cudnn.version(),
                "cudnn_benchmark_limit": torch.backends.cudnn.benchmark_limit,
                "decoder": decoders,
                "rows": rows,
                "best_total_ms": best_total,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
