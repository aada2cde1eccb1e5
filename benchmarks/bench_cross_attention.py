"""The DiT's text cross-attention at our shapes: which kernel is fastest, and how accurate is each?

Every block attends a chunk's 4680 queries (12 heads of 128) to the prompt's `text_len` = 512 keys, padding
included (upstream passes no lengths). The block calls SDPA, which under the shipped backend order runs
cuDNN; this times the alternatives on the tensors as the block makes them: queries a (B, nh, L, hd)
view of (B, L, nh, hd) projections, keys and values `CrossAttention.project_text`'s (B, nh, T, hd)
views of (B, T, nh, hd) memory. Per clips a forward: each kernel inside a CUDA graph (`gpu.graph_ms`)
and its relative error against float32 attention.

    python benchmarks/bench_cross_attention.py --out $OUT/cross_attention.json

Anywhere, to check the script: `--device cpu --preset tiny` (SDPA's default order only).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from benchmarks.gpu import block_parser, clip_counts, graph_ms, print_row, write_results
from pipeline.model.attention import FlashAttention3, relative_error
from pipeline.spec.model import get_preset

Kernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def sdpa_with(backend: SDPBackend) -> Kernel:
    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        with sdpa_kernel([backend]):
            return F.scaled_dot_product_attention(q, k, v)

    return attend


def kernels(device: torch.device, heads: int, head_dim: int) -> dict[str, Kernel]:
    if device.type != "cuda":
        return {"sdpa": F.scaled_dot_product_attention}
    found: dict[str, Kernel] = {
        "cudnn": sdpa_with(SDPBackend.CUDNN_ATTENTION),
        "flash2": sdpa_with(SDPBackend.FLASH_ATTENTION),
        "efficient": sdpa_with(SDPBackend.EFFICIENT_ATTENTION),
    }
    if (reason := FlashAttention3.unavailable_reason(device, heads, head_dim)) is None:
        fa3 = FlashAttention3()
        found["fa3"] = lambda q, k, v: fa3(q, k, v)[0]
    else:
        print(f"FlashAttention-3 left out: {reason}")
    return found


def main() -> None:
    args = block_parser(__doc__.splitlines()[0]).parse_args()
    preset, device = get_preset(args.preset), torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    config = preset.dit
    nh, hd = config.num_heads, config.head_dim
    queries, text_len = preset.cache_geometry().chunk_tokens, config.text_len
    candidates = kernels(device, nh, hd)
    rows = []
    for clips in clip_counts(args):
        q = torch.randn(clips, queries, nh, hd, device=device, dtype=dtype).transpose(1, 2)
        text = torch.randn(2, clips, text_len, nh, hd, device=device, dtype=dtype).transpose(2, 3)
        k, v = text.unbind(0)  # (B, nh, T, hd) views of (B, T, nh, hd) memory
        expected = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
        flop = 4 * clips * nh * queries * text_len * hd
        row: dict[str, object] = {"clips": clips, "queries": queries, "keys": text_len}
        for name, attend in candidates.items():
            ms = graph_ms(partial(attend, q, k, v))
            row[f"{name}_ms"] = ms
            row[f"{name}_tflops"] = flop / ms / 1e9
            row[f"{name}_error"] = relative_error(attend(q, k, v), expected)
        print_row(row)
        rows.append(row)
    write_results(args.out, "bench_cross_attention", device, {"preset": args.preset, "rows": rows})


if __name__ == "__main__":
    main()
