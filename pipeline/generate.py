"""Streaming chunk-wise generation: a clip's prompt, seed, length and cache policy -> uint8 RGB frame chunks.

For each chunk of 3 latent frames (docs/model.md §4.3):
  1. draw noise, denoise in 4 steps at the warped timesteps; between steps re-noise the x0 estimate
     with fresh noise;
  2. VAE-decode the chunk with the streaming feature cache: 9 frames for the first chunk, then 12;
  3. run the clean context pass (t=0) so the chunk's final keys/values enter the KV cache.
Decoding before the context pass changes no arithmetic (both only read the chunk's x0) and hands the
frames out one DiT forward sooner.
Nothing holds the whole video: memory is constant in clip length. On CUDA the frames of chunk k are
copied to pinned host memory while chunk k+1 is already queued, so the GPU never waits for the
consumer, and nothing in the per-step loop synchronises with the host.

A storyboard (pipeline/spec/storyboard.py) has every segment's prompt encoded before the clip starts.
At the first chunk of a later segment, before its first step, the cross-attention switches to the new
prompt and the cache is refreshed by a re-cache pass as the storyboard's `recache` says
(pipeline/cache/recache.py); for that the cache keeps the clean latents it references while a switch
lies ahead. Each switch is recorded in the cache telemetry (`switches`: chunk, frames re-cached and run,
seconds).
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pipeline.cache import ForwardKind, KVCache, make_cache
from pipeline.model.bundle import ModelBundle
from pipeline.model.dit import TextContext
from pipeline.model.scheduler import NUM_TRAIN_TIMESTEPS, add_noise, flow_to_x0, warped_denoising_timesteps
from pipeline.model.vae import DecodeStream
from pipeline.spec.cache import PolicyParams
from pipeline.spec.model import GenerationConfig
from pipeline.spec.storyboard import Storyboard


@dataclass
class ClipStats:
    """Where a clip's time went (seconds, measured on the device without stalling it)."""

    text_s: float = 0.0
    dit_s: list[float] = field(default_factory=list)  # per chunk: denoising steps + context pass
    vae_s: list[float] = field(default_factory=list)  # per chunk: decode + uint8 conversion
    first_frames_s: float = 0.0  # from start to the first chunk's frames on the host
    total_s: float = 0.0
    peak_memory_gb: float | None = None  # peak device memory allocated while generating; None on CPUs
    cache_telemetry: dict[str, Any] = field(default_factory=dict)  # the policy's counters (KVCache.telemetry)
    switches: list[dict[str, Any]] = field(default_factory=list)  # a storyboard's prompt switches
    prompt_tokens: int | None = None  # UMT5 tokens with </s>, before truncation (a storyboard: its longest)
    text_len: int = 0  # tokens the text encoder keeps; a longer prompt loses its end

    @property
    def truncated(self) -> bool | None:
        return None if self.prompt_tokens is None else self.prompt_tokens > self.text_len


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


class ClipStream(Iterator[np.ndarray]):
    """One clip's frames, chunk by chunk: (T, H, W, 3) uint8 arrays, 9 frames then 12 per chunk.

    `stats` says where the time went; its timings are complete once the stream is exhausted, and its
    cache telemetry is current at any point (also for a clip stopped early with `close`).
    """

    def __init__(self, chunks: Generator[np.ndarray, None, None], cache: KVCache, stats: ClipStats):
        self._chunks = chunks
        self.cache = cache  # the clip's own KV cache, for inspection
        self._stats = stats

    def __next__(self) -> np.ndarray:
        return next(self._chunks)

    def close(self) -> None:
        """Stop generating where the clip is (the remaining chunks are never computed)."""
        self._chunks.close()

    @property
    def stats(self) -> ClipStats:
        telemetry = self.cache.telemetry()
        if self._stats.switches:  # a storyboard: its switches are the cache's story too
            telemetry["switches"] = self._stats.switches
        self._stats.cache_telemetry = telemetry
        return self._stats


class ClipGenerator:
    """Renders clips with one model bundle; the KV cache policy is chosen per clip."""

    def __init__(self, bundle: ModelBundle, config: GenerationConfig = GenerationConfig()):
        # DiT and VAE share one stream: decoding on a side stream measured no faster (both fill the GPU,
        # benchmarks/README.md), and one stream keeps the per-chunk timings simple.
        self.bundle = bundle
        self.config = config
        self.timesteps = warped_denoising_timesteps(config.denoising_steps, config.timestep_shift)
        self.device = bundle.device

    def stream(
        self, prompt: str | Storyboard, seed: int, num_latent_frames: int, cache: PolicyParams
    ) -> ClipStream:
        """The clip's frames, 1 + 4(L-1) in all, generated as the stream is read.

        `prompt` is the clip's prompt, or a storyboard whose segments cover the clip. Same prompt(s),
        seed, length and cache parameters give the same frames: all noise comes from a generator
        seeded with `seed`, and the clip gets a cache of its own.
        """
        preset = self.bundle.preset
        preset.check_latent_frames(num_latent_frames)
        if isinstance(prompt, Storyboard):
            prompt.check(num_latent_frames, preset.chunk_frames)
        kv_cache = make_cache(cache, preset.cache_geometry(), self.bundle.dit.rope)
        stats = ClipStats()
        return ClipStream(self._generate(prompt, seed, num_latent_frames, kv_cache, stats), kv_cache, stats)

    @torch.inference_mode()
    def _generate(
        self, prompt: str | Storyboard, seed: int, num_latent_frames: int, cache: KVCache, stats: ClipStats
    ) -> Generator[np.ndarray, None, None]:
        preset = self.bundle.preset
        dit, vae, device = self.bundle.dit, self.bundle.vae, self.device
        clock = _Clock(device)
        wall_start = time.perf_counter()
        if clock.cuda:
            torch.cuda.reset_peak_memory_stats(device)

        # Every prompt is encoded now, in one pass: a switch costs no text-encoder time.
        text_start = time.perf_counter()
        prompts = prompt.prompts if isinstance(prompt, Storyboard) else [prompt]
        stats.text_len = self.bundle.text_encoder.text_len
        stats.prompt_tokens = max(self.bundle.text_encoder.token_count(text) for text in prompts)
        embeddings = self.bundle.encode_prompts(prompts).split(1)  # (1, text_len, text_dim) each
        text = dit.prepare_text(embeddings[0])
        stats.text_s = time.perf_counter() - text_start
        switches = prompt.switch_chunks(preset.chunk_frames) if isinstance(prompt, Storyboard) else {}
        recache = prompt.recache if isinstance(prompt, Storyboard) else "none"
        keep_until = max(switches, default=0) if recache != "none" else 0  # latents kept before this chunk
        switch_marks: list[tuple[Timestamp, Timestamp]] = []

        rng = torch.Generator(device).manual_seed(seed)
        latent_shape = (1, preset.dit.in_dim, preset.chunk_frames, preset.latent_height, preset.latent_width)
        timesteps = self.timesteps
        num_chunks = num_latent_frames // preset.chunk_frames
        cache.reset()
        vae_stream = vae.start_stream()
        marks: list[tuple[Timestamp, Timestamp, Timestamp, Timestamp]] = []
        pending: PendingFrames | None = None

        for chunk in range(num_chunks):
            t0 = clock.mark()
            if chunk in switches:  # 0. A new segment: its prompt, and the cache re-cached for it
                text = dit.prepare_text(embeddings[switches[chunk]])
                stats.switches.append(self._switch(chunk, switches[chunk], recache, text, cache))
                switch_marks.append((t0, clock.mark()))
                if chunk == keep_until:
                    cache.drop_latents()
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
            if chunk < keep_until:  # a re-cache lies ahead: it will run these latents again
                cache.keep_latents(x0)
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
        for switch, (start, end) in zip(stats.switches, switch_marks, strict=True):
            switch["seconds"] = clock.seconds(start, end)
        stats.dit_s = [clock.seconds(a, b) + clock.seconds(c, d) for a, b, c, d in marks]
        stats.vae_s = [clock.seconds(b, c) for _, b, c, _ in marks]
        stats.total_s = time.perf_counter() - wall_start
        if clock.cuda:
            stats.peak_memory_gb = torch.cuda.max_memory_allocated(device) / 1e9

    def _switch(
        self, chunk: int, segment: int, recache: str, text: TextContext, cache: KVCache
    ) -> dict[str, Any]:
        """Refresh the cache for the new prompt before `chunk`; the switch's record (seconds come later)."""
        record: dict[str, Any] = {"chunk": chunk, "segment": segment, "recache": recache}
        if recache == "none":  # only the cross-attention changes
            return record | {"recached_frames": 0, "run_frames": 0}
        session = cache.recache_session(recache)
        timestep: torch.Tensor | None = None
        for group in session.groups:  # chunk by chunk, in the order they were made
            latents = session.latents(group)
            if timestep is None:
                timestep = torch.full(
                    (latents.shape[0],), self.config.context_timestep, device=latents.device
                )
            session.begin(group)
            self.bundle.dit.forward_chunk(latents, timestep, text, session, group.positions)
        session.finish()
        return record | session.summary()

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
