"""Streaming chunk-wise generation: prompt + seed -> uint8 RGB frame chunks, one chunk at a time.

For each chunk of 3 latent frames (SF:pipeline/causal_inference.py, self_forcing_facts.md §3):
  1. draw noise, denoise in 4 steps at the warped timesteps; between steps re-noise the x0 estimate
     with fresh noise;
  2. VAE-decode the chunk with the streaming feature cache: 9 frames for the first chunk, then 12;
  3. run the clean context pass (t=0) so the chunk's final keys/values enter the KV cache.
Decoding before the context pass changes no arithmetic (both only read the chunk's x0) and hands the
frames out one DiT forward sooner.
Nothing holds the whole video: memory is constant in clip length. On CUDA the frames of chunk k are
copied to pinned host memory while chunk k+1 is already queued, so the GPU never waits for the
consumer, and nothing in the per-step loop synchronises with the host.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from pipeline.cache.base import ForwardKind, KVCache
from pipeline.model.bundle import ModelBundle
from pipeline.model.dit import TextContext
from pipeline.model.scheduler import NUM_TRAIN_TIMESTEPS, add_noise, flow_to_x0, warped_denoising_timesteps
from pipeline.model.vae import DecodeStream


@dataclass(frozen=True)
class GenerationConfig:
    denoising_steps: tuple[int, ...] = (1000, 750, 500, 250)  # nominal, before warping
    timestep_shift: float = 5.0  # both released configs set 5.0
    context_timestep: float = 0.0  # `context_noise`: t of the pass that writes the cache

    @property
    def timesteps(self) -> tuple[float, ...]:
        return warped_denoising_timesteps(self.denoising_steps, self.timestep_shift)


@dataclass
class ClipStats:
    """Where a clip's time went (seconds, measured on the device without stalling it)."""

    text_s: float = 0.0
    dit_s: list[float] = field(default_factory=list)  # per chunk: denoising steps + context pass
    vae_s: list[float] = field(default_factory=list)  # per chunk: decode + uint8 conversion
    first_frames_s: float = 0.0  # from start to the first chunk's frames on the host
    total_s: float = 0.0


def check_latent_frames(num_latent_frames: int, chunk_frames: int) -> None:
    if num_latent_frames <= 0 or num_latent_frames % chunk_frames:
        lower = max(chunk_frames, num_latent_frames - num_latent_frames % chunk_frames)
        raise ValueError(
            f"num_latent_frames={num_latent_frames} must be a positive multiple of "
            f"chunk_frames={chunk_frames}; use {lower} or {lower + chunk_frames}"
        )


Timestamp = torch.cuda.Event | float
PendingFrames = tuple[torch.Tensor, torch.cuda.Event | None]  # host tensor, copy-done event (CUDA only)


class _Clock:
    """Device-side timestamps: CUDA events on GPUs (read once at the end), perf_counter on CPUs."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def mark(self) -> Timestamp:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def settle(self) -> None:
        """Wait for every recorded timestamp (once per clip: the last chunk may still be copying)."""
        if self.cuda:
            torch.cuda.synchronize()

    def seconds(self, start: Timestamp, end: Timestamp) -> float:
        if isinstance(start, torch.cuda.Event) and isinstance(end, torch.cuda.Event):
            return start.elapsed_time(end) / 1000.0
        assert isinstance(start, float) and isinstance(end, float)
        return end - start


def to_uint8_frames(pixels: torch.Tensor) -> torch.Tensor:
    """VAE output (1, 3, T, H, W) in [-1, 1] -> (T, H, W, 3) uint8, rounded (upstream truncates)."""
    return ((pixels[0].float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 3, 0)


class ClipGenerator:
    """Renders clips with one model bundle; the KV cache policy is chosen per clip."""

    def __init__(self, bundle: ModelBundle, config: GenerationConfig = GenerationConfig()):
        # DiT and VAE share one stream: decoding on a side stream measured no faster (both fill the GPU,
        # benchmarks/README.md), and one stream keeps the per-chunk timings simple.
        self.bundle = bundle
        self.config = config
        self.device = next(bundle.dit.parameters()).device
        self.last_stats = ClipStats()

    @torch.inference_mode()
    def stream(self, prompt: str, seed: int, num_latent_frames: int, cache: KVCache) -> Iterator[np.ndarray]:
        """Yield (T, H, W, 3) uint8 chunks: 9 frames, then 12 per chunk, 1 + 4(L-1) in total.

        Same prompt, seed, config and policy give the same frames: all noise comes from a generator
        seeded with `seed`. Timings of the finished clip are in `last_stats`.
        """
        preset = self.bundle.preset
        check_latent_frames(num_latent_frames, preset.chunk_frames)
        dit, vae, device = self.bundle.dit, self.bundle.vae, self.device
        stats = self.last_stats = ClipStats()
        clock = _Clock(device)
        wall_start = time.perf_counter()

        text_start = time.perf_counter()
        text = dit.prepare_text(self.bundle.encode_prompt(prompt))
        stats.text_s = time.perf_counter() - text_start

        rng = torch.Generator(device).manual_seed(seed)
        latent_shape = (1, preset.dit.in_dim, preset.chunk_frames, preset.latent_height, preset.latent_width)
        timesteps = self.config.timesteps
        num_chunks = num_latent_frames // preset.chunk_frames
        cache.reset()
        vae_stream = vae.start_stream()
        marks: list[tuple[Timestamp, Timestamp, Timestamp, Timestamp]] = []
        pending: PendingFrames | None = None

        for chunk in range(num_chunks):
            t0 = clock.mark()
            # 1. Denoise: x0 estimate at each warped timestep, re-noised to the next one
            x = torch.randn(latent_shape, generator=rng, device=device, dtype=dit.dtype)
            for step, t in enumerate(timesteps):
                kind = ForwardKind.FIRST_STEP if step == 0 else ForwardKind.STEP
                x0 = self._denoise(x, t, text, cache, chunk, kind)
                if step + 1 < len(timesteps):
                    noise = torch.randn(latent_shape, generator=rng, device=device, dtype=dit.dtype)
                    x = add_noise(x0, noise, timesteps[step + 1] / NUM_TRAIN_TIMESTEPS)
            # 2. Decode with the streaming feature cache, convert, start the copy to the host
            frames, decode_start, decode_end = self._decode(x0, vae_stream, clock)
            # 3. Clean context pass: the chunk's final keys/values (useless after the last chunk)
            if chunk + 1 < num_chunks:
                self._denoise(x0, self.config.context_timestep, text, cache, chunk, ForwardKind.CONTEXT)
            marks.append((t0, decode_start, decode_end, clock.mark()))
            if chunk == 0:  # time to first frames matters: hand the first chunk out at once
                first = self._wait(frames)
                stats.first_frames_s = time.perf_counter() - wall_start
                yield first
            else:  # later chunks go out one behind, while the next one already runs on the device
                if pending is not None:
                    yield self._wait(pending)
                pending = frames
        if pending is not None:
            yield self._wait(pending)

        clock.settle()
        stats.dit_s = [clock.seconds(a, b) + clock.seconds(c, d) for a, b, c, d in marks]
        stats.vae_s = [clock.seconds(b, c) for _, b, c, _ in marks]
        stats.total_s = time.perf_counter() - wall_start

    def _denoise(
        self, x: torch.Tensor, t: float, text: TextContext, cache: KVCache, chunk: int, kind: ForwardKind
    ) -> torch.Tensor:
        position = cache.begin_forward(chunk, kind)
        timestep = torch.full((x.shape[0],), t, device=x.device, dtype=torch.float32)
        flow = self.bundle.dit.forward_chunk(x, timestep, text, cache, position)
        return flow_to_x0(x, flow, t / NUM_TRAIN_TIMESTEPS)

    def _decode(
        self, latents: torch.Tensor, vae_stream: DecodeStream, clock: _Clock
    ) -> tuple[PendingFrames, Timestamp, Timestamp]:
        """VAE-decode one chunk to uint8 frames on their way to the host."""
        start = clock.mark()
        frames = self._to_host(to_uint8_frames(self.bundle.vae.decode(latents, vae_stream)))
        return frames, start, clock.mark()

    def _to_host(self, frames: torch.Tensor) -> PendingFrames:
        if frames.device.type != "cuda":
            return frames.contiguous(), None
        host = torch.empty(frames.shape, dtype=frames.dtype, pin_memory=True)
        host.copy_(frames, non_blocking=True)
        ready = torch.cuda.Event()
        ready.record()
        return host, ready

    @staticmethod
    def _wait(pending: PendingFrames) -> np.ndarray:
        host, ready = pending
        if ready is not None:
            ready.synchronize()
        return host.numpy()
