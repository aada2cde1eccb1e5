"""The causal DiT: official names and shapes, checkpoint formats, and streaming == block-causal."""

import pytest
import torch
from safetensors.torch import save_file

from pipeline.cache import make_cache
from pipeline.cache.base import ForwardKind
from pipeline.cache.fifo import FifoCache
from pipeline.model.attention import sdpa
from pipeline.model.bundle import find_weights
from pipeline.model.checkpoint import CheckpointError, load_strict, read_state_dict, strip_wrapper_prefixes
from pipeline.model.dit import CausalWanDiT, FeedForward
from pipeline.model.random_init import randomize_
from pipeline.spec.cache import POLICY_PARAMS, DeepForcingParams
from pipeline.spec.model import DIT_FILE, TINY, DiTConfig


def official_dit_shapes() -> dict[str, tuple[int, ...]]:
    """docs/model.md §3.2: the 825 tensors of the 1.3B generator (without the `model.` prefix)."""
    d, ffn = 1536, 8960
    shapes: dict[str, tuple[int, ...]] = {
        "patch_embedding.weight": (d, 16, 1, 2, 2),
        "patch_embedding.bias": (d,),
        "text_embedding.0.weight": (d, 4096),
        "text_embedding.0.bias": (d,),
        "text_embedding.2.weight": (d, d),
        "text_embedding.2.bias": (d,),
        "time_embedding.0.weight": (d, 256),
        "time_embedding.0.bias": (d,),
        "time_embedding.2.weight": (d, d),
        "time_embedding.2.bias": (d,),
        "time_projection.1.weight": (6 * d, d),
        "time_projection.1.bias": (6 * d,),
        "head.modulation": (1, 2, d),
        "head.head.weight": (64, d),
        "head.head.bias": (64,),
    }
    for n in range(30):
        block = f"blocks.{n}"
        shapes[f"{block}.modulation"] = (1, 6, d)
        for attn in ("self_attn", "cross_attn"):
            for proj in "qkvo":
                shapes[f"{block}.{attn}.{proj}.weight"] = (d, d)
                shapes[f"{block}.{attn}.{proj}.bias"] = (d,)
            shapes[f"{block}.{attn}.norm_q.weight"] = (d,)
            shapes[f"{block}.{attn}.norm_k.weight"] = (d,)
        shapes[f"{block}.norm3.weight"] = (d,)
        shapes[f"{block}.norm3.bias"] = (d,)
        shapes[f"{block}.ffn.0.weight"] = (ffn, d)
        shapes[f"{block}.ffn.0.bias"] = (ffn,)
        shapes[f"{block}.ffn.2.weight"] = (d, ffn)
        shapes[f"{block}.ffn.2.bias"] = (d,)
    return shapes


def test_full_size_dit_has_exactly_the_official_tensor_names_and_shapes():
    with torch.device("meta"):
        dit = CausalWanDiT(DiTConfig())
    built = {name: tuple(t.shape) for name, t in dit.state_dict().items()}
    assert len(built) == 825
    assert built == official_dit_shapes()
    assert sum(t.numel() for t in dit.state_dict().values()) == 1_418_996_800


def tiny_dit(seed: int = 0) -> CausalWanDiT:
    return randomize_(CausalWanDiT(TINY.dit), seed).eval()


def run_tiny(dit: CausalWanDiT, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    latents = torch.randn(1, 16, 3, TINY.latent_height, TINY.latent_width, generator=gen)
    prompt = torch.randn(1, 20, TINY.dit.text_dim, generator=gen)
    cache = FifoCache(TINY.cache_geometry(), dit.rope)
    with torch.no_grad():
        position = cache.begin_forward(0, ForwardKind.FIRST_STEP)
        return dit.forward_chunk(latents, torch.tensor([937.5]), dit.prepare_text(prompt), cache, position)


@pytest.mark.parametrize(
    ("filename", "layout"),
    [
        ("self_forcing_dmd.pt", "generator_ema"),  # the released file: nested, `model.` prefix
        ("self_forcing_dmd.pt", "generator"),
        ("self_forcing_dmd.pt", "wrapped"),  # torch.compile / FSDP markers left in the names
        ("self_forcing_dmd.safetensors", "flat"),
    ],
)
def test_checkpoint_in_each_official_format_reproduces_the_in_memory_model(tmp_path, filename, layout):
    source = tiny_dit()
    state = {name: t.clone() for name, t in source.state_dict().items()}
    path = tmp_path / filename
    if layout == "flat":
        save_file(state, str(path))
    elif layout == "wrapped":
        wrapped = {
            f"model._orig_mod.{k.replace('blocks.0.', 'blocks.0._fsdp_wrapped_module.')}": v
            for k, v in state.items()
        }
        torch.save({"generator_ema": wrapped}, path)
    else:
        other = {f"model.{k}": torch.zeros_like(v) for k, v in state.items()}
        prefixed = {f"model.{k}": v for k, v in state.items()}
        torch.save({layout: prefixed, "critic": other} if layout == "generator" else {layout: prefixed}, path)

    found = find_weights(tmp_path, DIT_FILE)
    with torch.device("meta"):
        loaded = CausalWanDiT(TINY.dit)
    keys = ("generator",) if layout == "generator" else ("generator_ema", "generator")
    load_strict(loaded, strip_wrapper_prefixes(read_state_dict(found, keys=keys)), found)
    torch.testing.assert_close(run_tiny(loaded.eval()), run_tiny(source), rtol=0, atol=0)


def test_checkpoint_missing_a_tensor_names_the_file_and_the_key_and_loads_nothing(tmp_path):
    state = {f"model.{k}": v for k, v in tiny_dit().state_dict().items()}
    del state["model.blocks.1.ffn.2.bias"]
    state["model.blocks.0.self_attn.q.weight"] = torch.zeros(3, 3)
    path = tmp_path / "self_forcing_dmd.pt"
    torch.save({"generator_ema": state}, path)
    with torch.device("meta"):
        dit = CausalWanDiT(TINY.dit)
    with pytest.raises(CheckpointError) as err:
        load_strict(dit, strip_wrapper_prefixes(read_state_dict(path, keys=("generator_ema",))), path)
    assert str(err.value) == (
        f"{path} does not match CausalWanDiT (69 tensors expected):\n"
        "  1 missing: blocks.1.ffn.2.bias\n"
        "  1 wrong shape: blocks.0.self_attn.q.weight: file (3, 3) vs model (48, 48)"
    )
    assert all(p.is_meta for p in dit.parameters())  # nothing was half-loaded


@pytest.mark.slow  # 2.5 s on 2 cores: out of the quick loop
def test_streaming_chunks_with_kv_cache_equal_one_block_causal_forward():
    """Each chunk attends to earlier clean chunks through the cache exactly as under the mask."""
    torch.manual_seed(0)
    dit = tiny_dit()
    chunk, num_chunks = TINY.chunk_frames, 3
    shape = (1, 16, chunk * num_chunks, TINY.latent_height, TINY.latent_width)
    clean, noisy = torch.randn(shape), torch.randn(shape)
    with torch.no_grad():
        text = dit.prepare_text(torch.randn(1, 30, TINY.dit.text_dim))
        cache = FifoCache(TINY.cache_geometry(), dit.rope)  # 21-frame window: no eviction for 9 frames
        noisy_out, clean_out = [], []
        for c in range(num_chunks):
            frames = slice(c * chunk, (c + 1) * chunk)
            pos = cache.begin_forward(c, ForwardKind.FIRST_STEP)
            noisy_out.append(dit.forward_chunk(noisy[:, :, frames], torch.tensor([937.5]), text, cache, pos))
            pos = cache.begin_forward(c, ForwardKind.CONTEXT)
            clean_out.append(dit.forward_chunk(clean[:, :, frames], torch.tensor([0.0]), text, cache, pos))

        all_clean = dit.forward_block_causal(clean, torch.zeros(1, clean.shape[2]), text, chunk)
        torch.testing.assert_close(torch.cat(clean_out, dim=2), all_clean, rtol=1e-4, atol=1e-5)
        for c in range(num_chunks):  # chunk c noisy, everything before it clean
            end = (c + 1) * chunk
            mixed = torch.cat([clean[:, :, : c * chunk], noisy[:, :, c * chunk : end]], dim=2)
            t = torch.zeros(1, end)
            t[:, c * chunk :] = 937.5
            reference = dit.forward_block_causal(mixed, t, text, chunk)[:, :, c * chunk :]
            torch.testing.assert_close(noisy_out[c], reference, rtol=1e-4, atol=1e-5)


EVERY_POLICY = [params() for params in POLICY_PARAMS.values()] + [DeepForcingParams(layout="paper")]


@pytest.mark.parametrize("params", EVERY_POLICY, ids=lambda p: f"{p.policy}-{getattr(p, 'layout', '')}")
def test_a_cache_only_pass_leaves_the_cache_of_a_whole_forward_without_the_last_attention(params):
    """The clean context pass only feeds the cache: `cache_chunk` stops the last block at its keys/values
    and skips the head, and every later forward sees exactly the cache a whole forward leaves."""
    torch.manual_seed(0)
    dit = tiny_dit()
    calls = {"attention": 0, "head": 0}

    def counted_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        calls["attention"] += 1
        return sdpa(q, k, v)

    dit.self_attention = counted_attention
    dit.head.register_forward_hook(lambda *_: calls.__setitem__("head", calls["head"] + 1))
    num_chunks = 9  # 27 frames: past the 21-frame window, so every policy evicts or compresses
    shape = (1, 16, TINY.chunk_frames, TINY.latent_height, TINY.latent_width)
    latents = [(torch.randn(shape), torch.randn(shape)) for _ in range(num_chunks)]
    noisy_t, clean_t = torch.tensor([1000.0]), torch.tensor([0.0])
    flows: dict[bool, list[torch.Tensor]] = {False: [], True: []}
    with torch.no_grad():
        text = dit.prepare_text(torch.randn(1, 20, TINY.dit.text_dim))
        for cache_only in (False, True):
            cache = make_cache(params, TINY.cache_geometry(), dit.rope)
            for chunk, (noisy, clean) in enumerate(latents):
                position = cache.begin_forward(chunk, ForwardKind.FIRST_STEP)
                flows[cache_only].append(dit.forward_chunk(noisy, noisy_t, text, cache, position))
                position = cache.begin_forward(chunk, ForwardKind.CONTEXT)
                if not cache_only:
                    dit.forward_chunk(clean, clean_t, text, cache, position)
                    continue
                before = dict(calls)
                dit.cache_chunk(clean, clean_t, text, cache, position)
                assert calls["attention"] == before["attention"] + TINY.dit.num_layers - 1
                assert calls["head"] == before["head"]
    assert all(torch.equal(a, b) for a, b in zip(flows[False], flows[True], strict=True))


def test_prompt_longer_than_text_len_is_rejected():
    dit = tiny_dit()
    with pytest.raises(ValueError, match="prompt_embeds has 513 tokens, more than text_len=512"):
        dit.prepare_text(torch.zeros(1, 513, TINY.dit.text_dim))


def feed_forward(device: str, dtype: torch.dtype) -> FeedForward:
    ffn = FeedForward(TINY.dit.dim, TINY.dit.ffn_dim)
    return randomize_(ffn, seed=3).to(device, dtype)


def test_feed_forward_with_the_gelu_in_the_gemm_computes_the_same_function():
    # On CPUs the fused op applies the erf GELU (the epilogue's tanh GELU is CUDA's): what this checks is
    # the GEMM's layout (flattened tokens, transposed weight, bias) against the unfused modules.
    ffn = feed_forward("cpu", torch.float32)
    x = torch.randn(2, 7, TINY.dit.dim)
    ffn.gelu_in_epilogue = True
    expected = ffn[2](torch.nn.functional.gelu(ffn[0](x)))
    torch.testing.assert_close(ffn(x), expected, rtol=1e-5, atol=1e-6)
    assert [name for name, _ in ffn.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_feed_forward_gelu_epilogue_stays_within_bf16_rounding_on_a_gpu():
    ffn = feed_forward("cuda", torch.bfloat16)
    x = torch.randn(2, 4680, TINY.dit.dim, device="cuda", dtype=torch.bfloat16)
    exact = feed_forward("cuda", torch.float32)(x.float())
    errors = {}
    for fused in (False, True):
        ffn.gelu_in_epilogue = fused
        errors[fused] = ((ffn(x).float() - exact).norm() / exact.norm()).item()
    assert errors[True] < 1.1 * errors[False] < 1e-2  # H200 at full size: 0.37% fused, 0.42% unfused
