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
5. DiT, compiled as shipped (inductor, the shipped self-attention choice), `deep-forcing`: context
   passes that stop the last block at its keys/values (`cache_chunk`) leave the cache whole forwards
   leave, so every later chunk's flow is the same, compared bit for bit and as relative errors (with
   two runs of whole forwards as the control).
Prints relative errors ||a - b|| / ||b|| and writes them as JSON; `--checks` runs a subset.
"""

from __future__ import annotations

import argparse
import datetime
import json
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path

import torch
from torch._dynamo.eval_frame import _debug_get_cache_entry_list

from benchmarks.gpu import random_vae
from pipeline.cache import make_cache
from pipeline.cache.base import ForwardKind
from pipeline.cache.fifo import FifoCache
from pipeline.model import vae as vae_module
from pipeline.model.attention import FlashAttention4, KeySplitAttention, relative_error
from pipeline.model.dit import CausalWanDiT
from pipeline.model.random_init import randomize_
from pipeline.model.speed import ATTENTION_ORDERS, SpeedConfig, accelerate_vae, self_attention_kernel
from pipeline.model.vae import DecodeStream, Elementwise
from pipeline.spec.cache import DeepForcingParams, FifoParams
from pipeline.spec.model import SELF_FORCING_1_3B as PRESET
from pipeline.spec.model import ModelPreset


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
        "dit_stream_vs_block_causal": relative_error(low, whole),
        "dit_bf16_vs_fp32": relative_error(low, fp32),
        "dit_gelu_epilogue_vs_fp32": relative_error(epilogue, fp32),
        "dit_gelu_epilogue_vs_plain_bf16": relative_error(epilogue, low),
        "dit_cudnn_vs_default_backend": relative_error(cudnn, low),
        "dit_key_splits_vs_whole_cudnn": relative_error(split, cudnn),
        "dit_key_splits_vs_fp32": relative_error(split, fp32),
    }
    if (
        FlashAttention4.unavailable_reason(torch.device("cuda"), PRESET.dit.num_heads, PRESET.dit.head_dim)
        is None
    ):
        dit.self_attention = FlashAttention4()
        flash4 = streamed(dit)
        checks["dit_flash4_vs_whole_cudnn"] = relative_error(flash4, cudnn)
        checks["dit_flash4_vs_fp32"] = relative_error(flash4, fp32)
    return checks


@torch.inference_mode()
def check_vae(dtype: torch.dtype) -> dict[str, float]:
    vae = random_vae(dtype)
    gen = torch.Generator("cuda").manual_seed(1)
    latents = torch.randn(1, 16, 6, PRESET.latent_height, PRESET.latent_width, generator=gen, device="cuda")
    whole = vae.decode(latents.to(dtype), vae.start_stream())
    stream = vae.start_stream()
    parts = [vae.decode(latents[:, :, i : i + 3].to(dtype), stream) for i in (0, 3)]
    streamed = relative_error(torch.cat(parts, dim=2), whole)
    return {"vae_stream_vs_whole": streamed, "vae_frames": whole.shape[2]}


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
        "vae_fast_vs_plain": relative_error(fast, plain),
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


@torch.inference_mode()
def check_cache_only_pass(
    dtype: torch.dtype, device: str = "cuda", preset: ModelPreset = PRESET, chunks: int = 9
) -> dict[str, float | bool | list[float]]:
    """`chunks` chunks (past deep-forcing's first compression) of a first step and a context pass, the
    context pass as a whole forward or as `cache_chunk`: each chunk's first-step flow compared. (Also
    runs on a CPU with the tiny preset, to check the script.)"""
    with torch.device("meta"):
        dit = CausalWanDiT(preset.dit)
    randomize_(dit.to_empty(device=device), seed=0)
    dit.to(dtype)
    dit.sdpa_backends = ATTENTION_ORDERS["auto"]
    dit.self_attention = self_attention_kernel(SpeedConfig(), torch.device(device), preset)
    for block in dit.block_list:
        block.ffn.gelu_in_epilogue = device == "cuda"
        block.compile(dynamic=False)
    gen = torch.Generator(device).manual_seed(3)
    shape = (2, 16, 3, preset.latent_height, preset.latent_width)  # a noisy and a clean chunk
    latents = [torch.randn(shape, generator=gen, device=device, dtype=dtype) for _ in range(chunks)]
    text = dit.prepare_text(torch.randn(1, 512, preset.dit.text_dim, generator=gen, device=device))
    noisy_t, clean_t = torch.full((1,), 1000.0, device=device), torch.zeros(1, device=device)
    # whole forwards twice (the control: how far two runs of one path differ), then cache-only passes
    runs = {"whole": False, "whole_again": False, "cache_only": True}
    flows: dict[str, list[torch.Tensor]] = {run: [] for run in runs}
    for run, cache_only in runs.items():
        cache = make_cache(DeepForcingParams(), preset.cache_geometry(), dit.rope)
        for chunk, pair in enumerate(latents):
            noisy, clean = pair[:1], pair[1:]
            position = cache.begin_forward(chunk, ForwardKind.FIRST_STEP)
            flows[run].append(dit.forward_chunk(noisy, noisy_t, text, cache, position))
            position = cache.begin_forward(chunk, ForwardKind.CONTEXT)
            context = dit.cache_chunk if cache_only else dit.forward_chunk
            context(clean, clean_t, text, cache, position)
    result: dict[str, float | bool | list[float]] = {}
    for run in ("whole_again", "cache_only"):
        pairs = list(zip(flows["whole"], flows[run], strict=True))
        result[f"{run}_flows_equal"] = all(torch.equal(a, b) for a, b in pairs)
        result[f"{run}_rel_err_per_chunk"] = [relative_error(b, a) for a, b in pairs]
    return result


CHECKS: dict[str, Callable[[torch.dtype], Mapping[str, object]]] = {
    "dit": check_dit,
    "vae": check_vae,
    "vae_fast": check_vae_fast_path,
    "cache_only_pass": check_cache_only_pass,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--checks", default=",".join(CHECKS), help=f"comma-separated, of {', '.join(CHECKS)}")
    args = parser.parse_args()
    result: dict[str, object] = {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    for name in args.checks.split(","):
        result |= CHECKS[name](torch.bfloat16)
    torch.cuda.empty_cache()
    print(json.dumps(result, indent=1), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
