"""Streaming chunk-wise generation: a clip's prompt, seed, length and cache policy -> uint8 RGB frame chunks.

For each chunk of 3 latent frames (docs/model.md §4.3):
  1. draw noise, denoise in 4 steps at the warped timesteps; between steps re-noise the x0 estimate
     with fresh noise;
  2. VAE-decode the chunk with the streaming feature cache: 9 frames for the first chunk, then 12;
  3. run the clean context pass (t=0) so the chunk's final keys/values enter the KV cache; its flow is
     never read, so the last DiT block stops at its keys/values (`CausalWanDiT.cache_chunk`).
Decoding before the context pass changes no arithmetic (both only read the chunk's x0) and hands the
frames out one DiT forward sooner.
Nothing holds the whole video: memory is constant in clip length. On CUDA the frames of chunk k are
copied to pinned host memory while chunk k+1 is already queued, so the GPU never waits for the
consumer, and nothing in the per-step loop synchronises with the host.

Clips of one length and cache policy can render as a group (`stream_group`): every DiT forward runs
them as one batch, each clip with its own prompt, noise generator and batch item of one KV cache, so a
clip's frames are those it gets alone, up to the rounding of batched kernels; the VAE decodes them one
by one. A clip whose consumer fails is dropped: it is no longer decoded, and the others go on.

A storyboard (pipeline/spec/storyboard.py) has every segment's prompt encoded before the clip starts.
At the first chunk of a later segment, before its first step, the cross-attention switches to the new
prompt and the cache is refreshed by a re-cache pass as the storyboard's `recache` says
(pipeline/cache/recache.py); for that the cache keeps the clean latents it references while a switch
lies ahead. Each switch is recorded in the cache telemetry (`switches`: chunk, frames re-cached and run,
seconds).
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

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

# A clip's whole working set on the device is about twice its KV cache (the VAE's streaming decode and one
# chunk's DiT activations beside it): 15.3 GiB peak for 2.9 GiB of weights and a 6 GB cache at 480x832
# (benchmarks/README.md). A further clip of a group adds its cache and its share of the DiT activations,
# not a second decode (the VAE decodes the clips one by one).
CLIP_WORKSPACE_PER_CACHE_BYTE = 2.0
FREE_MEMORY_USABLE = 0.9  # of what the device has free: the allocator's fragmentation, other processes


@dataclass
class ClipStats:
    """Where a clip's time went (seconds, measured on the device without stalling it).

    A clip of a group (`ClipGenerator.stream_group`) shares its DiT forwards and text encoding with the
    others: its `dit_s` and `text_s` are its share (the group's seconds / `clips_per_forward`), so the
    shares of a group add up to the device time it took; `vae_s` is its own decode. `first_frames_s`,
    `total_s` and `peak_memory_gb` are the group's, as the clip saw them.
    """

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
    clips_per_forward: int = 1  # clips of its group: they share every DiT forward

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


@dataclass(frozen=True)
class ClipRequest:
    """What one clip of a group asks for; the group shares its length and cache parameters."""

    prompt: str | Storyboard  # a storyboard renders in a group of its own (`stream_group`)
    seed: int


class GroupStream(Iterator[list[np.ndarray | None]]):
    """Clips rendered in lockstep, chunk by chunk: each DiT forward runs all of them as one batch.

    Each item is one chunk: per clip, its (T, H, W, 3) uint8 frames, or None for a clip `drop`ped
    before it. `stats(clip)` says where a clip's time went (complete once the stream is exhausted).
    """

    def __init__(
        self,
        chunks: Generator[list[np.ndarray | None], None, None],
        cache: KVCache,
        stats: list[ClipStats],
        active: list[bool],
    ):
        self._chunks = chunks
        self.cache = cache  # one cache for the group, a batch item per clip
        self._stats = stats
        self._active = active  # shared with the generator: a dropped clip is no longer decoded

    def __next__(self) -> list[np.ndarray | None]:
        return next(self._chunks)

    def __len__(self) -> int:
        return len(self._stats)

    def drop(self, clip: int) -> None:
        """Stop handing out (and decoding) one clip's frames; the others go on. Its batch row stays in the
        forwards (a smaller batch would compile again), so the group's speed does not change."""
        self._active[clip] = False
        if not any(self._active):
            self.close()

    def close(self) -> None:
        """Stop generating where the group is (the remaining chunks are never computed)."""
        self._chunks.close()

    def stats(self, clip: int) -> ClipStats:
        stats = self._stats[clip]
        telemetry = self.cache.telemetry(clip)
        if stats.switches:  # a storyboard: its switches are the cache's story too
            telemetry["switches"] = stats.switches
        stats.cache_telemetry = telemetry
        return stats


class ClipStream(Iterator[np.ndarray]):
    """One clip's frames, chunk by chunk: (T, H, W, 3) uint8 arrays, 9 frames then 12 per chunk.

    A group of one. `stats` says where the time went; its timings are complete once the stream is
    exhausted, and its cache telemetry is current at any point (also for a clip stopped early with `close`).
    """

    def __init__(self, group: GroupStream):
        self._group = group
        self.cache = group.cache  # the clip's own KV cache, for inspection

    def __next__(self) -> np.ndarray:
        (frames,) = next(self._group)
        assert frames is not None  # a clip of its own is never dropped
        return frames

    def close(self) -> None:
        """Stop generating where the clip is (the remaining chunks are never computed)."""
        self._group.close()

    @property
    def stats(self) -> ClipStats:
        return self._group.stats(0)


class ClipGenerator:
    """Renders clips with one model bundle; the KV cache policy is chosen per clip (or group of clips)."""

    def __init__(self, bundle: ModelBundle, config: GenerationConfig = GenerationConfig()):
        # DiT and VAE share one stream: decoding on a side stream measured no faster (both fill the GPU,
        # benchmarks/README.md), and one stream keeps the per-chunk timings simple.
        self.bundle = bundle
        self.config = config
        self.timesteps = warped_denoising_timesteps(config.denoising_steps, config.timestep_shift)
        self.device = bundle.device

    def clips_that_fit(self, window_frames: int, limit: int, beside_bytes: int = 0) -> int:
        """How many clips of a `window_frames` cache may share forwards in the device memory free now,
        with `beside_bytes` of it kept for something else (0..limit, 0 if not even one fits; always 1 on
        CPUs, where batching gains nothing)."""
        if self.device.type != "cuda":
            return 1
        free, _ = torch.cuda.mem_get_info(self.device)
        preset = self.bundle.preset
        item_bytes = torch.empty((), dtype=self.bundle.dit.dtype).element_size()
        geometry = preset.cache_geometry()
        cache_bytes = (  # keys and values of every layer
            2 * geometry.num_layers * window_frames * geometry.tokens_per_frame * preset.dit.dim * item_bytes
        )
        activation_bytes = geometry.chunk_tokens * (preset.dit.ffn_dim + 8 * preset.dit.dim) * item_bytes
        first = CLIP_WORKSPACE_PER_CACHE_BYTE * cache_bytes
        usable = free * FREE_MEMORY_USABLE - beside_bytes
        if usable < first:
            return 0
        return int(min(limit, 1 + (usable - first) // (cache_bytes + activation_bytes)))

    def keep_text_encoder_resident(self, window_frames: int, clips: int) -> bool:
        """Move an offloaded text encoder onto the GPU for good if a group of `clips` still fits beside it;
        True if it moved. Offloaded, its weights cross PCIe before every group (9.3 GB: ~0.4 s of an idle
        GPU a group on an H200, benchmarks/README.md); a 24 GB card has no room for them."""
        bundle = self.bundle
        if bundle.text_placement != "offload" or self.device.type != "cuda":
            return False
        if self.clips_that_fit(window_frames, clips, beside_bytes=bundle.text_encoder_bytes) < clips:
            return False
        bundle.place_text_encoder("device")
        return True

    def stream(
        self, prompt: str | Storyboard, seed: int, num_latent_frames: int, cache: PolicyParams
    ) -> ClipStream:
        """The clip's frames, 1 + 4(L-1) in all, generated as the stream is read.

        `prompt` is the clip's prompt, or a storyboard whose segments cover the clip. Same prompt(s),
        seed, length and cache parameters give the same frames: all noise comes from a generator
        seeded with `seed`, and the clip gets a cache of its own.
        """
        return ClipStream(self.stream_group([ClipRequest(prompt, seed)], num_latent_frames, cache))

    def stream_group(
        self, clips: Sequence[ClipRequest], num_latent_frames: int, cache: PolicyParams
    ) -> GroupStream:
        """Several clips of one length and cache policy in lockstep: every DiT forward runs them as one
        batch (larger GEMMs and attention grids fill the GPU better), each clip with its own prompt,
        noise generator and batch item of the cache, so each clip's frames are those `stream` gives it
        alone (up to the rounding of batched kernels). The VAE decodes the clips one by one: batching
        it gains nothing (benchmarks/README.md) and keeps its compiled shapes.

        A storyboard renders alone: its prompt switches re-cache at chunks of its own.
        """
        preset = self.bundle.preset
        preset.check_latent_frames(num_latent_frames)
        if not clips:
            raise ValueError("a group needs at least one clip")
        for clip in clips:
            if isinstance(clip.prompt, Storyboard):
                if len(clips) > 1:
                    raise ValueError(
                        f"a storyboard renders in a group of its own, not with {len(clips) - 1} other clip(s)"
                    )
                clip.prompt.check(num_latent_frames, preset.chunk_frames)
        kv_cache = make_cache(cache, preset.cache_geometry(), self.bundle.dit.rope)
        stats = [ClipStats(clips_per_forward=len(clips)) for _ in clips]
        active = [True] * len(clips)
        chunks = self._generate(list(clips), num_latent_frames, kv_cache, stats, active)
        return GroupStream(chunks, kv_cache, stats, active)

    @torch.inference_mode()
    def _generate(
        self,
        clips: list[ClipRequest],
        num_latent_frames: int,
        cache: KVCache,
        stats: list[ClipStats],
        active: list[bool],
    ) -> Generator[list[np.ndarray | None], None, None]:
        preset = self.bundle.preset
        dit, vae, device = self.bundle.dit, self.bundle.vae, self.device
        clock = _Clock(device)
        wall_start = time.perf_counter()
        if clock.cuda:
            torch.cuda.reset_peak_memory_stats(device)
        size = len(clips)

        # Every prompt is encoded now, in one pass: a switch costs no text-encoder time.
        text_start = time.perf_counter()
        story = clips[0].prompt if isinstance(clips[0].prompt, Storyboard) else None  # alone in its group
        prompts = story.prompts if story is not None else [cast(str, clip.prompt) for clip in clips]
        embeddings = self.bundle.encode_prompts(prompts)  # (prompts, text_len, text_dim)
        text = dit.prepare_text(embeddings[:1] if story is not None else embeddings)  # a batch row per clip
        text_s = (time.perf_counter() - text_start) / size
        for clip, clip_stats in zip(clips, stats, strict=True):
            texts = story.prompts if story is not None else [cast(str, clip.prompt)]
            clip_stats.text_len = self.bundle.text_encoder.text_len
            clip_stats.prompt_tokens = max(self.bundle.text_encoder.token_count(t) for t in texts)
            clip_stats.text_s = text_s
        switches = story.switch_chunks(preset.chunk_frames) if story is not None else {}
        recache = story.recache if story is not None else "none"
        keep_until = max(switches, default=0) if recache != "none" else 0  # latents kept before this chunk
        switch_marks: list[tuple[Timestamp, Timestamp]] = []

        rngs = [torch.Generator(device).manual_seed(clip.seed) for clip in clips]
        latent_shape = (1, preset.dit.in_dim, preset.chunk_frames, preset.latent_height, preset.latent_width)

        def noise() -> torch.Tensor:  # (clips, C, F, H, W): each clip's draws, as it would make them alone
            draws = [torch.randn(latent_shape, generator=rng, device=device, dtype=dit.dtype) for rng in rngs]
            return draws[0] if size == 1 else torch.cat(draws)

        timesteps = self.timesteps
        num_chunks = num_latent_frames // preset.chunk_frames
        cache.reset()
        vae_streams = [vae.start_stream() for _ in clips]
        # per chunk: start, each clip's decode (start, end) or None if dropped, end
        marks: list[tuple[Timestamp, list[tuple[Timestamp, Timestamp] | None], Timestamp]] = []
        pending: list[PendingFrames | None] | None = None

        for chunk in range(num_chunks):
            t0 = clock.mark()
            if chunk in switches:  # 0. A new segment: its prompt, and the cache re-cached for it
                text = dit.prepare_text(embeddings[switches[chunk]][None])
                stats[0].switches.append(self._switch(chunk, switches[chunk], recache, text, cache))
                switch_marks.append((t0, clock.mark()))
                if chunk == keep_until:
                    cache.drop_latents()
            # 1. Denoise: x0 estimate at each warped timestep, re-noised to the next one
            x = noise()
            for step, t in enumerate(timesteps):
                kind = ForwardKind.FIRST_STEP if step == 0 else ForwardKind.STEP
                x0 = self._denoise(x, t, text, cache, chunk, kind)
                if step + 1 < len(timesteps):
                    x = add_noise(x0, noise(), timesteps[step + 1] / NUM_TRAIN_TIMESTEPS)
            # 2. Decode each clip with its streaming feature cache, convert, start the copies to the host
            frames: list[PendingFrames | None] = []
            decodes: list[tuple[Timestamp, Timestamp] | None] = []
            for item in range(size):
                if not active[item]:
                    frames.append(None)
                    decodes.append(None)
                    continue
                clip_frames, decode_start, decode_end = self._decode(
                    x0[item : item + 1], vae_streams[item], clock
                )
                frames.append(clip_frames)
                decodes.append((decode_start, decode_end))
            # 3. Clean context pass: the chunk's final keys/values (useless after the last chunk)
            if chunk + 1 < num_chunks:
                self._cache_context(x0, text, cache, chunk)
            if chunk < keep_until:  # a re-cache lies ahead: it will run these latents again
                cache.keep_latents(x0)
            marks.append((t0, decodes, clock.mark()))
            if chunk == 0:  # time to first frames matters: hand the first chunk out at once
                first = self._wait_all(frames, active)
                for clip_stats in stats:
                    clip_stats.first_frames_s = time.perf_counter() - wall_start
                yield first
            else:  # later chunks go out one behind, while the next one already runs on the device
                if pending is not None:
                    yield self._wait_all(pending, active)
                pending = frames
        if pending is not None:
            yield self._wait_all(pending, active)

        clock.settle()
        for switch, (start, end) in zip(stats[0].switches, switch_marks, strict=True):
            switch["seconds"] = clock.seconds(start, end)
        dit_s = []
        for start, decodes, end in marks:
            decoding = sum(clock.seconds(*decode) for decode in decodes if decode is not None)
            dit_s.append((clock.seconds(start, end) - decoding) / size)  # each clip's share
        peak = torch.cuda.max_memory_allocated(device) / 1e9 if clock.cuda else None
        for item, clip_stats in enumerate(stats):
            clip_stats.dit_s = dit_s
            clip_stats.vae_s = [
                clock.seconds(*decode) if (decode := decodes[item]) is not None else 0.0
                for _, decodes, _ in marks
            ]
            clip_stats.total_s = time.perf_counter() - wall_start
            clip_stats.peak_memory_gb = peak

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
            self.bundle.dit.cache_chunk(latents, timestep, text, session, group.positions)
        session.finish()
        return record | session.summary()

    def _denoise(
        self, x: torch.Tensor, t: float, text: TextContext, cache: KVCache, chunk: int, kind: ForwardKind
    ) -> torch.Tensor:
        position = cache.begin_forward(chunk, kind)
        timestep = torch.full((x.shape[0],), t, device=x.device, dtype=torch.float32)
        flow = self.bundle.dit.forward_chunk(x, timestep, text, cache, position)
        return flow_to_x0(x, flow, t / NUM_TRAIN_TIMESTEPS)

    def _cache_context(self, x0: torch.Tensor, text: TextContext, cache: KVCache, chunk: int) -> None:
        """The clean context pass: the chunk's x0 at t=0 through the DiT, for its keys/values alone."""
        position = cache.begin_forward(chunk, ForwardKind.CONTEXT)
        timestep = torch.full((x0.shape[0],), self.config.context_timestep, device=x0.device)
        self.bundle.dit.cache_chunk(x0, timestep, text, cache, position)

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
    def _wait_all(pending: list[PendingFrames | None], active: list[bool]) -> list[np.ndarray | None]:
        """Each clip's frames on the host; None for a clip dropped since (its copy is simply left)."""
        out: list[np.ndarray | None] = []
        for frames, wanted in zip(pending, active, strict=True):
            if frames is None or not wanted:
                out.append(None)
                continue
            host, ready = frames
            if ready is not None:
                ready.synchronize()
            out.append(host.numpy())
        return out
