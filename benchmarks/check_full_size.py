"""Correctness of the streaming paths at full size on the GPU (random weights, bf16).

1. DiT: two chunks through the KV cache == one block-causal forward of the same frames.
2. DiT: bf16 vs float32 output of one chunk (the bf16 noise floor the other checks are judged by),
   the FFN's GELU in its GEMM's epilogue vs float32 and vs the plain bf16 path, and the attention
   kernels (FlashAttention-4 when installed, cuDNN over two key runs) vs cuDNN whole vs PyTorch's
   default backend.
3. VAE: decoding 6 latent frames in chunks of 3 with the feature cache == one call.
4. VAE: the shipped fast path (channels-last activations, compiled ops between convs) == the plain one,
   every causal conv really receives channels-last input, and how many graphs each compiled op traced
   (one per channel width, no graph breaks).
Prints relative errors ||a - b|| / ||b|| and writes them as JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
from dataclasses import fields
from pathlib import Path

import torch
from torch._dynamo.eval_frame import _debug_get_cache_entry_list

from benchmarks.gpu import random_vae
from pipeline.cache.base import ForwardKind
from pipeline.cache.fifo import FifoCache
from pipeline.model import vae as vae_module
from pipeline.model.attention import FlashAttention4, KeySplitAttention
from pipeline.model.dit import CausalWanDiT
from pipeline.model.random_init import randomize_
from pipeline.model.speed import ATTENTION_ORDERS, SpeedConfig, accelerate_vae
from pipeline.model.vae import DecodeStream, Elementwise
from pipeline.spec.cache import FifoParams
from pipeline.spec.model import SELF_FORCING_1_3B as PRESET


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@torch.inference_mode()
def check_dit(dtype: torch.dtype) -> dict[str, float]:
    with torch.device("meta"):
        dit = CausalWanDiT(PRESET.dit)
    randomize_(dit.to_empty(device="cuda"), seed=0)
    gen = torch.Generator("cuda").manual_seed(0)
    shape = (1, 16, 6, PRESET.latent_height, PRESET.latent_width)
    latents = torch.randn(shape, generator=gen, device="cuda")
    prompt = torch.randn(1, 512, PRESET.dit.text_dim, generator=gen, device="cuda")

    def streamed(model: CausalWanDiT) -> torch.Tensor:
        text = model.prepare_text(prompt)
        cache = FifoCache(PRESET.cache_geometry(), model.rope, FifoParams())
        outs = []
        for c in range(2):
            pos = cache.begin_forward(c, ForwardKind.FIRST_STEP)
            t = torch.zeros(1, device="cuda")
            outs.append(model.forward_chunk(latents[:, :, 3 * c : 3 * c + 3], t, text, cache, pos))
        return torch.cat(outs, dim=2)

    fp32 = streamed(dit)
    dit.to(dtype)
    low = streamed(dit)
    for block in dit.block_list:
        block.ffn.gelu_in_epilogue = True
    epilogue = streamed(dit)
    for block in dit.block_list:
        block.ffn.gelu_in_epilogue = False
    whole = dit.forward_block_causal(latents, torch.zeros(1, 6, device="cuda"), dit.prepare_text(prompt), 3)
    dit.sdpa_backends = ATTENTION_ORDERS["cudnn"]
    cudnn = streamed(dit)
    dit.self_attention = KeySplitAttention(splits=2)
    split = streamed(dit)
    checks = {
        "dit_stream_vs_block_causal": rel_err(low, whole),
        "dit_bf16_vs_fp32": rel_err(low, fp32),
        "dit_gelu_epilogue_vs_fp32": rel_err(epilogue, fp32),
        "dit_gelu_epilogue_vs_plain_bf16": rel_err(epilogue, low),
        "dit_cudnn_vs_default_backend": rel_err(cudnn, low),
        "dit_key_splits_vs_whole_cudnn": rel_err(split, cudnn),
        "dit_key_splits_vs_fp32": rel_err(split, fp32),
    }
    if (
        FlashAttention4.unavailable_reason(torch.device("cuda"), PRESET.dit.num_heads, PRESET.dit.head_dim)
        is None
    ):
        dit.self_attention = FlashAttention4()
        flash4 = streamed(dit)
        checks["dit_flash4_vs_whole_cudnn"] = rel_err(flash4, cudnn)
        checks["dit_flash4_vs_fp32"] = rel_err(flash4, fp32)
    return checks


@torch.inference_mode()
def check_vae(dtype: torch.dtype) -> dict[str, float]:
    vae = random_vae(dtype)
    gen = torch.Generator("cuda").manual_seed(1)
    latents = torch.randn(1, 16, 6, PRESET.latent_height, PRESET.latent_width, generator=gen, device="cuda")
    whole = vae.decode(latents.to(dtype), vae.start_stream())
    stream = vae.start_stream()
    parts = [vae.decode(latents[:, :, i : i + 3].to(dtype), stream) for i in (0, 3)]
    return {"vae_stream_vs_whole": rel_err(torch.cat(parts, dim=2), whole), "vae_frames": whole.shape[2]}


@torch.inference_mode()
def check_vae_fast_path(dtype: torch.dtype) -> dict[str, float | bool | dict[str, int]]:
    vae = random_vae(dtype)
    gen = torch.Generator("cuda").manual_seed(2)
    latents = torch.randn(1, 16, 9, PRESET.latent_height, PRESET.latent_width, generator=gen, device="cuda")

    def chunked() -> tuple[torch.Tensor, DecodeStream]:
        stream = vae.start_stream()
        chunks = [vae.decode(latents[:, :, i : i + 3].to(dtype), stream) for i in (0, 3, 6)]
        return torch.cat(chunks, dim=2), stream

    plain, _ = chunked()
    accelerate_vae(vae, SpeedConfig())
    fast, stream = chunked()
    # each causal conv remembers its input's last frames in the input's layout
    remembered = list(stream.conv_inputs.values())
    return {
        "vae_fast_vs_plain": rel_err(fast, plain),
        "vae_fast_convs_channels_last": all(
            x.is_contiguous(memory_format=torch.channels_last_3d) for x in remembered
        ),
        "vae_causal_convs": len(remembered),
        "vae_fast_graphs": {
            op.name: len(_debug_get_cache_entry_list(getattr(vae_module, op.name).__code__))
            for op in fields(Elementwise)
        },
        "vae_fast_graph_breaks": sum(torch._dynamo.utils.counters["graph_break"].values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    result = {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        **check_dit(torch.bfloat16),
        **check_vae(torch.bfloat16),
        **check_vae_fast_path(torch.bfloat16),
    }
    torch.cuda.empty_cache()
    print(json.dumps(result, indent=1), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
