"""Which attention kernel is fastest for a chunk's self-attention on Hopper, and how accurate is each?

cuDNN (whole, and over 2 key runs) against FlashAttention-4's CuTe DSL kernel as the DiT calls it
(`pipeline.model.attention.FlashAttention4`, pip package `flash-attn-4`) at our shapes: 4680 queries
(3 frames x 1560 tokens), 16-21 frames of keys, 12 heads of 128, bf16. Keys and values are prefix
slices of cache buffers laid out as the KV cache keeps them (`gpu.cache_buffers`);
FlashAttention reads them as (B, tokens, heads, head_dim) views of the same memory. Error is
||out - fp32 attention|| / ||fp32 attention||. (FA4's split-KV mode, tried once, is not supported on
sm_90: results/2026-11-21_h100_attention_kernels.json.)

    python benchmarks/bench_attention_kernels.py --out $OUT/attention_kernels.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from functools import partial
from importlib.metadata import version
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from benchmarks.gpu import cache_buffers, median_ms
from pipeline.model.attention import (
    FlashAttention4,
    attention_over_key_splits,
    merge_key_splits,
    relative_error,
)
from pipeline.spec.model import SELF_FORCING_1_3B

H, D = SELF_FORCING_1_3B.dit.num_heads, SELF_FORCING_1_3B.dit.head_dim  # 12 heads of 128
TOKENS_PER_FRAME = SELF_FORCING_1_3B.tokens_per_frame  # 1560
CHUNK_TOKENS = SELF_FORCING_1_3B.cache_geometry().chunk_tokens  # 4680


def cudnn_whole(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
        return F.scaled_dot_product_attention(q, k, v)


def cudnn_split2(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return merge_key_splits(*attention_over_key_splits(q, k, v, 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.manual_seed(0)
    results: dict[str, object] = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}
    kernels: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
        "cudnn_whole": cudnn_whole,
        "cudnn_split2": cudnn_split2,
    }
    reason = FlashAttention4.unavailable_reason(torch.device("cuda"), H, D)
    if reason is None:
        results["flash_attn_4"] = version("flash-attn-4")
        results["cutlass_dsl"] = version("nvidia-cutlass-dsl-libs-base")
        flash4 = FlashAttention4()
        kernels["fa4"] = lambda q, k, v: flash4(q, k, v)[0]
    else:  # report why, measure cuDNN anyway
        results["flash_attn_4_unavailable"] = reason
        print("FlashAttention-4 not measured:", reason, flush=True)

    buf_k, buf_v = cache_buffers(SELF_FORCING_1_3B, 1, 24, "cuda", torch.bfloat16)
    # Queries as the DiT makes them: (B, tokens, heads, hd) transposed to (B, heads, tokens, hd).
    q = torch.randn(1, CHUNK_TOKENS, H, D, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
    rows = []
    for frames in (16, 19, 21):
        Lk = frames * TOKENS_PER_FRAME
        k, v = buf_k[:, :, :Lk], buf_v[:, :, :Lk]
        exact = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
        flop = 4 * H * CHUNK_TOKENS * Lk * D
        row: dict[str, object] = {"kv_frames": frames, "kv_tokens": Lk}
        for name, kernel in kernels.items():
            try:
                start = time.perf_counter()
                out = kernel(q, k, v)
                torch.cuda.synchronize()
                first_s = time.perf_counter() - start
                ms = median_ms(partial(kernel, q, k, v), reps=30)
                err = relative_error(out, exact)
                row[name] = {"ms": ms, "tflops": flop / ms / 1e9, "rel_err_vs_fp32": err, "first_s": first_s}
            except Exception as exc:
                row[name] = {"error": repr(exc)[:300]}
            print(frames, name, row[name], flush=True)
        rows.append(row)
    results["rows"] = rows
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
