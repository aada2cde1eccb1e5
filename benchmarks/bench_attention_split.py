"""Does cuDNN attention lose time to wave quantization at our chunk size, and do key splits win it back?

One chunk's queries (4680 tokens x 12 heads, 128-dim) make 37 row tiles of 128 per head: 444 tiles on
132 SMs is 3.4 waves, so the last wave runs a third full. This measures (1) cuDNN's rate over query
lengths around 4680, and (2) the keys split into S parts folded into the batch dimension (S times
the tiles, one launch), each part's output merged by its log-sum-exp, against the plain call.

    python benchmarks/bench_attention_split.py --out $OUT/attention_split.json
"""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from benchmarks.gpu import cache_buffers, median_ms
from pipeline.model.attention import merge_key_splits, relative_error
from pipeline.spec.model import SELF_FORCING_1_3B

H, D = SELF_FORCING_1_3B.dit.num_heads, SELF_FORCING_1_3B.dit.head_dim  # 12 heads of 128
TOKENS_PER_FRAME = SELF_FORCING_1_3B.tokens_per_frame  # 1560
CHUNK_TOKENS = SELF_FORCING_1_3B.cache_geometry().chunk_tokens  # 4680


def cudnn_with_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out, lse = torch.ops.aten._scaled_dot_product_cudnn_attention(q, k, v, None, True)[:2]
    return out, lse


def split_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, splits: int, expand: bool
) -> torch.Tensor:
    """Keys/values cut into `splits` runs along the sequence, each run a batch entry of one call."""
    B, nh, Lk, hd = k.shape
    ks = k.unflatten(2, (splits, Lk // splits)).squeeze(0).transpose(0, 1)  # (S, nh, Lk/S, hd)
    vs = v.unflatten(2, (splits, Lk // splits)).squeeze(0).transpose(0, 1)
    qs = q.expand(splits, -1, -1, -1) if expand else q.repeat(splits, 1, 1, 1)  # (S, nh, Lq, hd)
    out, lse = cudnn_with_lse(qs, ks, vs)  # (S, nh, Lq, hd), (S, nh, Lq[, 1])
    return merge_key_splits(out, lse.view(splits, nh, -1, 1))  # the DiT's merge


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.manual_seed(0)
    results: dict[str, object] = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}
    kv_frames = 21
    buf_k, buf_v = cache_buffers(SELF_FORCING_1_3B, 1, 24, "cuda", torch.bfloat16)

    # 1. Rate against query length (keys: 21 frames as prefix slices of a cache buffer, like the DiT's)
    by_length = []
    Lk = kv_frames * TOKENS_PER_FRAME
    k, v = buf_k[:, :, :Lk], buf_v[:, :, :Lk]
    for Lq in (3840, 4224, 4608, 4680, 4736, 5120, 5376, 6336, 9360):
        q = torch.randn(1, Lq, H, D, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            ms = median_ms(partial(F.scaled_dot_product_attention, q, k, v), reps=20)
        tflops = 4 * H * Lq * Lk * D / ms / 1e9
        by_length.append({"q_tokens": Lq, "ms": ms, "tflops": tflops})
        print(f"Lq={Lq}: {ms:.3f} ms, {tflops:.0f} TFLOP/s", flush=True)
    results["by_query_length"] = by_length

    # 2. Key splits at the chunk's 4680 queries, per cache length
    by_split = []
    q = torch.randn(1, CHUNK_TOKENS, H, D, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
    for frames in (16, 19, 21, 24):
        Lk = frames * TOKENS_PER_FRAME
        k, v = buf_k[:, :, :Lk], buf_v[:, :, :Lk]
        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            plain = F.scaled_dot_product_attention(q, k, v)
            plain_ms = median_ms(partial(F.scaled_dot_product_attention, q, k, v), reps=20)
        exact = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
        row: dict[str, object] = {
            "kv_frames": frames,
            "plain_ms": plain_ms,
            "plain_rel_err_vs_fp32": relative_error(plain, exact),
        }
        for splits in (2, 3, 4):
            for expand in (True, False):
                name = f"split{splits}_{'expand' if expand else 'repeat'}"
                try:
                    out = split_attention(q, k, v, splits, expand)
                    row[f"{name}_ms"] = median_ms(partial(split_attention, q, k, v, splits, expand))
                    kernel = lambda k=k, v=v, s=splits, e=expand: cudnn_with_lse(  # noqa: E731
                        q.expand(s, -1, -1, -1) if e else q.repeat(s, 1, 1, 1),
                        k.unflatten(2, (s, -1)).squeeze(0).transpose(0, 1),
                        v.unflatten(2, (s, -1)).squeeze(0).transpose(0, 1),
                    )
                    row[f"{name}_kernel_ms"] = median_ms(kernel)
                    row[f"{name}_rel_err_vs_fp32"] = relative_error(out, exact)
                except RuntimeError as exc:
                    row[f"{name}_error"] = str(exc)[:160]
        by_split.append(row)
        print(row, flush=True)
    results["by_split"] = by_split
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
