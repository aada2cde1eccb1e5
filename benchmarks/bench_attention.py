"""Self-attention of one chunk at full size, per SDPA backend and tensor layout (H100 ceilings check).

q is 4680 tokens x 12 heads x 128; keys/values hold 16, 19 or 21 frames of 1560 tokens. Layouts:
`contiguous` (B, H, L, D) tensors, and `ours`: q as the DiT makes it (a transposed view of
(B, L, H, D)) and keys/values as prefix slices of the cache's buffers (`gpu.cache_buffers`).
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
from pipeline.spec.model import SELF_FORCING_1_3B

BACKENDS = {
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    preset = SELF_FORCING_1_3B
    B, H, D = 1, preset.dit.num_heads, preset.dit.head_dim
    Lq, tpf = preset.cache_geometry().chunk_tokens, preset.tokens_per_frame
    rows = []
    for frames in (16, 19, 21):
        Lk = frames * tpf
        q_ours = torch.randn(B, Lq, H, D, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
        buf_k, buf_v = cache_buffers(preset, B, 21, "cuda", torch.bfloat16)
        layouts = {
            "contiguous": (q_ours.contiguous(), buf_k[:, :, :Lk].contiguous(), buf_v[:, :, :Lk].contiguous()),
            "ours": (q_ours, buf_k[:, :, :Lk], buf_v[:, :, :Lk]),
        }
        flops = 4 * B * H * Lq * Lk * D
        for layout, (q, k, v) in layouts.items():
            for name, backend in [*BACKENDS.items(), ("default", None)]:
                ctx = sdpa_kernel([backend]) if backend is not None else torch.autograd.no_grad()
                try:
                    with ctx:
                        ms = median_ms(partial(F.scaled_dot_product_attention, q, k, v), reps=20)
                    rows.append(
                        {
                            "frames": frames,
                            "layout": layout,
                            "backend": name,
                            "ms": ms,
                            "tflops": flops / ms / 1e9,
                        }
                    )
                except RuntimeError as exc:
                    rows.append(
                        {"frames": frames, "layout": layout, "backend": name, "error": str(exc)[:120]}
                    )
                print(rows[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}, indent=1)
    )


if __name__ == "__main__":
    main()
