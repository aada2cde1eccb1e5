"""The DiT block's GEMMs at our shapes: cuBLAS (the compiled blocks call it) against inductor's max-autotune.

Per clips a forward (M = 4680 tokens a clip) and projection of a full-size block (random weights, bf16,
bias included): `dim_x_dim` (q, k, v, o and the cross-attention's q and o: 1536 -> 1536), `qkv` (q, k
and v as one 1536 -> 4608 GEMM), `ffn_up` (1536 -> 8960, the tanh GELU in cuBLASLt's epilogue, as
shipped) and `ffn_down` (8960 -> 1536). Each is timed inside a CUDA graph (`gpu.graph_ms`) as cuBLAS
called eagerly and compiled with `mode="max-autotune-no-cudagraphs"` (inductor times its Triton GEMM
templates against cuBLAS and keeps the fastest; its choices go to the log), with TFLOP/s and the
relative error against float32 (`--no-autotune`: cuBLAS alone). Runs on the GPU machine, or anywhere
with `--device cpu --preset tiny`:

    python benchmarks/bench_gemm.py --out $OUT/gemm.json
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F

from benchmarks.gpu import block_parser, clip_counts, graph_ms, print_row, write_results
from pipeline.model.attention import relative_error
from pipeline.spec.model import get_preset

Gemm = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return F.linear(x, weight, bias)


def linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The FFN's up projection as shipped on GPUs (dit.FeedForward): GELU in the GEMM's epilogue."""
    return torch._addmm_activation(bias, x, weight.t(), use_gelu=True)


def linear_gelu_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return F.gelu(F.linear(x, weight, bias), approximate="tanh")


def main() -> None:
    parser = block_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--no-autotune", action="store_true", help="cuBLAS alone, not inductor's max-autotune"
    )
    args = parser.parse_args()
    preset, device = get_preset(args.preset), torch.device(args.device)
    on_gpu = device.type == "cuda"
    dtype = torch.bfloat16 if on_gpu else torch.float32
    dim, ffn_dim = preset.dit.dim, preset.dit.ffn_dim
    # name: (in, out, GEMM, its float32 reference)
    shapes: dict[str, tuple[int, int, Gemm, Gemm]] = {
        "dim_x_dim": (dim, dim, linear, linear),
        "qkv": (dim, 3 * dim, linear, linear),
        "ffn_up": (
            dim,
            ffn_dim,
            linear_gelu if on_gpu else linear,
            linear_gelu_reference if on_gpu else linear,
        ),
        "ffn_down": (ffn_dim, dim, linear, linear),
    }
    torch.manual_seed(0)
    rows = []
    with torch.inference_mode():
        for clips in clip_counts(args):
            tokens = clips * preset.cache_geometry().chunk_tokens
            for name, (fan_in, fan_out, gemm, reference) in shapes.items():
                x32 = torch.randn(tokens, fan_in, device=device)
                weight32 = torch.randn(fan_out, fan_in, device=device) / fan_in**0.5
                bias32 = torch.randn(fan_out, device=device) / fan_in**0.5
                exact = reference(x32, weight32, bias32)
                inputs = tuple(t.to(dtype) for t in (x32, weight32, bias32))
                flop = 2 * tokens * fan_in * fan_out
                row: dict[str, object] = {
                    "clips": clips,
                    "gemm": name,
                    "m": tokens,
                    "k": fan_in,
                    "n": fan_out,
                }
                ways: dict[str, Gemm] = {"cublas": gemm}
                if not args.no_autotune:
                    ways["autotuned"] = torch.compile(gemm, mode="max-autotune-no-cudagraphs", dynamic=False)
                for way, fn in ways.items():
                    out = fn(*inputs)
                    ms = graph_ms(partial(fn, *inputs))
                    row |= {
                        f"{way}_ms": ms,
                        f"{way}_tflops": flop / ms / 1e9,
                        f"{way}_error": relative_error(out, exact),
                    }
                print_row(row)
                rows.append(row)
    write_results(args.out, "bench_gemm", device, {"preset": args.preset, "rows": rows})


if __name__ == "__main__":
    main()
