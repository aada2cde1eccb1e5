"""q's and k's RMSNorm + RoPE of one DiT block: inductor's fused kernel against the Triton one.

After the q and k projections every block normalises each token's 1536 channels (RMSNorm over all
heads, float32, then the weight) and rotates its channel pairs (3D RoPE). Compiled, inductor fuses both
into one kernel for q and k, which the profile of a steady chunk showed at 64 us a block at one clip a
forward (~0.9 TB/s, against ~3 TB/s for the plain RMSNorm of the cross-attention's q). This script
times, at full size and 1 and 2 clips a forward, for q and k together:

- `inductor`: `RMSNorm` + `apply_rotary` for q and k as the block runs them, compiled (what ships);
- `triton_r{rows}_w{warps}`: `pipeline.model.qk_norm_rope.launch` (each program loads whole rows once
  as (pair, real/imag) tiles, q and k in one launch) with that many rows and warps a program;

with each one's error against float32 and its memory rate (bytes read and written over time). Both
kernels are shorter than their launch from Python, so calls are timed inside a CUDA graph.
`bench_dit_block.py` times the kernel inside the compiled block. Runs on the GPU machine:

    python benchmarks/bench_qk_norm_rope.py --out $OUT/qk_norm_rope.json

or on a CPU with Triton's interpreter, in float32 (pip install triton):

    TRITON_INTERPRET=1 PYTHONPATH=. python benchmarks/bench_qk_norm_rope.py --device cpu --preset tiny \\
        --out /tmp/qk_norm_rope.json
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial

import torch
import triton

from benchmarks.gpu import block_parser, clip_counts, graph_ms, steady_chunk_rope, write_results
from pipeline.model.attention import relative_error
from pipeline.model.dit import RMSNorm
from pipeline.model.qk_norm_rope import launch
from pipeline.model.random_init import randomize_
from pipeline.model.rope import RotaryTables, apply_rotary
from pipeline.spec.model import ModelPreset, get_preset

LAUNCH_SIZES = [(1, 2), (1, 4), (1, 8), (2, 4), (4, 8)]  # (rows, warps) a program

Pair = tuple[torch.Tensor, torch.Tensor]


def inductor_norm_rope(norms: tuple[RMSNorm, RMSNorm], tables: RotaryTables, heads: int, on_gpu: bool):
    """The block's own ops for q and k (SelfAttention.qkv after its projections), compiled as the block is."""

    def run(q: torch.Tensor, k: torch.Tensor) -> Pair:
        B, L, C = q.shape
        return tuple(  # type: ignore[return-value]
            apply_rotary(norm(x).view(B, L, heads, C // heads), tables).view(B, L, C)
            for norm, x in zip(norms, (q, k), strict=True)
        )

    return torch.compile(run, dynamic=False) if on_gpu else run


def triton_norm_rope(
    norms: tuple[RMSNorm, RMSNorm], tables: RotaryTables, rows: int, warps: int
) -> Callable[[torch.Tensor, torch.Tensor], Pair]:
    def run(q: torch.Tensor, k: torch.Tensor) -> Pair:
        weights = norms[0].weight, norms[1].weight
        return launch(q, k, *weights, *tables, norms[0].eps, block_rows=rows, num_warps=warps)

    return run


def measure(preset: ModelPreset, device: torch.device, clips: int) -> dict[str, float | int]:
    config, geometry = preset.dit, preset.cache_geometry()
    on_gpu = device.type == "cuda"
    dtype = torch.bfloat16 if on_gpu else torch.float32
    norms32 = tuple(randomize_(RMSNorm(config.dim, config.eps).to(device), seed=s) for s in (1, 2))
    norms = tuple(RMSNorm(config.dim, config.eps).to(device=device, dtype=dtype) for _ in norms32)
    for norm, norm32 in zip(norms, norms32, strict=True):
        norm.load_state_dict(norm32.state_dict())
    tables = steady_chunk_rope(preset, device)
    q32, k32 = (torch.randn(clips, geometry.chunk_tokens, config.dim, device=device) for _ in range(2))
    q, k = q32.to(dtype), k32.to(dtype)
    reference = inductor_norm_rope(norms32, tables, config.num_heads, on_gpu=False)(q32, k32)  # type: ignore[arg-type]
    ways = {"inductor": inductor_norm_rope(norms, tables, config.num_heads, on_gpu)}  # type: ignore[arg-type]
    ways |= {f"triton_r{r}_w{w}": triton_norm_rope(norms, tables, r, w) for r, w in LAUNCH_SIZES}  # type: ignore[arg-type]
    # read q and k, write both, read a token's angles once (they repeat over heads)
    moved = 2 * q.numel() * q.element_size() * 2 + 2 * tables.cos.numel() * 4
    run: dict[str, float | int] = {"clips": clips, "bytes_moved": moved}
    with torch.inference_mode():
        shipped = ways["inductor"](q, k)
        for name, fn in ways.items():
            out = fn(q, k)
            run[f"{name}_error"] = max(relative_error(o, r) for o, r in zip(out, reference, strict=True))
            run[f"{name}_vs_inductor_max_abs"] = max(
                float((o.float() - s.float()).abs().max()) for o, s in zip(out, shipped, strict=True)
            )
            run[f"{name}_ms"] = graph_ms(partial(fn, q, k), reps=15 if on_gpu else 1)
            run[f"{name}_tb_per_s"] = moved / (run[f"{name}_ms"] * 1e-3) / 1e12
    return run


def main() -> None:
    args = block_parser(__doc__.splitlines()[0]).parse_args()
    preset, device = get_preset(args.preset), torch.device(args.device)
    runs = []
    for clips in clip_counts(args):
        runs.append(measure(preset, device, clips))
        print(json.dumps(runs[-1], indent=1), flush=True)
    write_results(
        args.out,
        "bench_qk_norm_rope",
        device,
        {
            "triton": triton.__version__,
            "preset": preset.name,
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
