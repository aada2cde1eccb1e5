"""`deep-forcing`: Deep Sink + Participative Compression (Yi et al. 2025, arXiv 2512.05081).

The cache holds at most `window_frames` (21) frames. When a chunk's arrival would overflow it, at the
chunk's first denoising step (t=1000), each layer compresses its cache to `budget_frames` (N = 16):

    [ sink S=10 | candidates ........................ | recent context ] + new chunk
    [ sink      | top-C: C=N-S-R frames' worth of tokens | recent R=4 (1 clean frame + the chunk) ]

- Sink: the first S frames, kept for the whole clip; their keys are moved in time (Deep Sink).
- Recent: the last R frames of [context ‖ chunk], i.e. the previous chunk's last R - 3 frames + the chunk.
- Top-C: the C·tokens_per_frame candidate tokens (everything between) with the highest score
  φ_j = <Σ_r q_r, k_j> (paper Eq. 7: raw logits, no softmax), the heads' vectors concatenated, chosen
  per layer and per batch item. The recent queries q_r are the RoPE'd queries of the clean pass of the
  previous chunk's last R - 3 frames and the t=1000 queries of the new chunk (release `win_q`,
  docs/cache_policies.md §6.4). Kept tokens stay in temporal order. A token picked `max_reuse` (7)
  times is no longer eligible (release `PC_topc_max_reuse`, not in the paper).

Then the compressed cache (N frames) takes the next chunk without compressing (19 frames), and the one
after compresses again: every second chunk from chunk 7 on, 37 times in 240 frames
(docs/cache_policies.md §6.6, §6.8).
The selection is fixed for the rest of the chunk; later steps only rewrite the chunk's own slots.

Layouts (where the kept keys sit in time; recent keys always keep their own positions):

- `reference` (the release, `causal_model.py` @ea9961aa): the sink starts at f - N, f the chunk's
  first frame (first shift +5, then +6 per compression); top-C keys keep the positions they were made
  at (the release's top-C compensation slice is empty; docs/cache_policies.md §6.7).
- `paper` (Algorithm 1, paper §4.3 Eq. 10-11; docs/cache_policies.md §7): sink, top-C and recent are
  contiguous and end with the chunk: sink at [f+3-N, f+3-N+S), top-C at [f+3-R-C, f+3-R), recent at
  [f+3-R, f+3). The sink is adjacent to the next block (Eq. 5 read literally would overlap one frame,
  docs/cache_policies.md §5.2). The i-th top-C token in temporal order sits at
  f+3-R-C + i // tokens_per_frame (why: `_packed_positions`).

Buffers are allocated once (window_frames per layer); the state per layer is a few small device
tensors of fixed size (top-C source frames, tokens and reuse counts, clean-query sums), and every
decision of *when* is plain Python ints from the chunk index, so nothing in the forward path waits for
the device. Everything resets per clip (the release carries the sink base, query window and reuse
counts over).

A storyboard's re-cache (`TopCRecache`, docs/cache_policies.md §10.3) rewrites the sink (mode `all`),
the top-C tokens and the recent frames where they sit, top-C tokens from a run of their source frames
at the positions they were made at (then moved, in the `paper` layout, as a compression moves them).
Those source frames can be old: with a reuse cap r a token picked at every compression since it was
fresh stays at most r compressions, so the cache references the frames fresh at the last r
compressions and later ones (`fresh_starts`); without a cap, or with a top-C block larger than the fresh
frames of a compression (capped tokens then fill it), there is no such bound and the latents of every
frame since the first compression stay (200 KB per latent frame at 480x832).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from pipeline.cache.base import CachedFrame, ForwardKind, FrameBuffers, KVCache
from pipeline.cache.phase import PristineShift, shift_tokens_in_time, temporal_frequencies
from pipeline.cache.recache import Recache
from pipeline.cache.scores import candidate_scores
from pipeline.model.rope import RotaryEmbedding3D
from pipeline.spec.cache import CacheGeometry, DeepForcingParams

AGE_BIN_FRAMES = 4  # telemetry: top-C ages in bins of 4 frames ...
AGE_BINS = 16  # ... the last bin open-ended (>= 60 frames)


@dataclass(frozen=True)
class CompressionPlan:
    """What every layer needs to compress at this chunk, decided once per chunk in `_start_chunk`."""

    candidate_end: int  # candidates are the slots [S, candidate_end) (frames)
    block_frames: int  # the previous top-C block, slots [S, S + block_frames) (0 at the first compression)
    fresh_first_frame: int  # absolute frame in slot S + block_frames; later slots hold the next frames
    first_frame: int  # f, the first frame of the chunk being generated


class DeepForcingCache(KVCache):
    name = DeepForcingParams.policy

    def __init__(
        self,
        geometry: CacheGeometry,
        rope: RotaryEmbedding3D,
        params: DeepForcingParams = DeepForcingParams(),
    ):
        super().__init__(geometry, rope)
        params.check(geometry.chunk_frames)
        self.sink_frames = params.sink_frames
        self.budget_frames = params.budget_frames
        self.recent_frames = params.recent_frames
        self.window_frames = params.window_frames
        self.max_reuse = params.max_reuse
        self.layout = params.layout
        self.topc_frames = (
            self.budget_frames - self.sink_frames - self.recent_frames
        )  # C, in frames' worth (2)
        self.topc_tokens = self.topc_frames * geometry.tokens_per_frame
        # The recent block: the chunk plus this many clean frames of earlier chunks (1)
        self.recent_context_frames = self.recent_frames - geometry.chunk_frames
        self.buffers = FrameBuffers(geometry, self.window_frames)
        self.sink_shift = PristineShift(
            rope, geometry.num_layers, self.sink_frames * geometry.tokens_per_frame
        )
        self.omega: torch.Tensor | None = None  # temporal frequencies on the buffers' device (`paper`)
        self.reset()

    def reset(self) -> None:
        super().reset()
        L = self.geometry.num_layers
        # Slot layout, in frames: [sink | top-C block | frames run_start_frame, run_start_frame+1, ...]
        self.context_frames = 0  # slots in use before the current chunk
        self.block_frames = 0  # top-C block size (0 until the first compression)
        self.run_start_frame = self.sink_frames  # absolute frame in the slot right after the block
        self.compress_now = False
        self.plan = CompressionPlan(0, 0, 0, 0)
        self.sink_start = 0
        self.compressions = 0
        self.sink_shifts = 0
        self.layer_chunk = [-1] * L
        self.sink_shift.reset()
        # Per-layer device state, (B, top-C tokens) or (B, H, m, D): fixed size, replaced not grown
        self.block_source: list[torch.Tensor | None] = [None] * L  # source frame of each top-C token
        self.block_token: list[torch.Tensor | None] = [None] * L  # its token within that frame
        self.block_picks: list[torch.Tensor | None] = [None] * L  # times each top-C token was picked
        self.block_pristine: list[torch.Tensor | None] = [None] * L  # `paper`: temporal channels as made
        self.clean_queries: list[torch.Tensor | None] = [None] * L  # per-frame sums of clean-pass queries
        # Telemetry accumulated on the device per batch item, read once in telemetry()
        self.age_hist: torch.Tensor | None = None
        self.age_sum: torch.Tensor | None = None
        self.age_max: torch.Tensor | None = None
        self.ages_counted = 0
        # Fresh first frames of the compressions whose tokens may still be in the block (re-cache latents)
        self.fresh_starts: list[int] = []
        self.ages_bounded = True  # False: a top-C token may stay for the whole clip (module docstring)

    # -- schedule (plain ints) ---------------------------------------------------------------------

    def _start_chunk(self) -> None:
        chunk = self.geometry.chunk_frames
        first = self.chunk_index * chunk
        if self.chunk_index > 0:  # the previous chunk's clean pass is final: it joins the context
            self.context_frames += chunk
        self.compress_now = self.context_frames + chunk > self.window_frames
        if self.compress_now:
            m = self.recent_context_frames
            self.plan = CompressionPlan(
                candidate_end=self.context_frames - m,  # candidates: slots [S, candidate_end)
                block_frames=self.block_frames,  # the previous top-C block opens the candidates
                fresh_first_frame=self.run_start_frame,  # absolute frame of the first slot after it
                first_frame=first,
            )
            self._bound_block_ages(self.plan)
            self.block_frames = self.topc_frames
            self.run_start_frame = first - m
            self.context_frames = self.sink_frames + self.topc_frames + m
            self.compressions += 1
            target = self._sink_target(first)
            if target != self.sink_start:
                self.sink_start = target
                self.sink_shifts += 1

    def _bound_block_ages(self, plan: CompressionPlan) -> None:
        """Track the oldest frame the top-C block can hold after this compression (module docstring)."""
        fresh_frames = plan.candidate_end - self.sink_frames - plan.block_frames
        self.ages_bounded &= bool(self.max_reuse) and fresh_frames >= self.topc_frames
        if self.ages_bounded:
            self.fresh_starts = [*self.fresh_starts, plan.fresh_first_frame][-self.max_reuse :]
        elif not self.fresh_starts:
            self.fresh_starts = [plan.fresh_first_frame]  # kept from here on

    def _sink_target(self, first_frame: int) -> int:
        if self.layout == "paper":  # [sink ‖ top-C ‖ recent] ends with the chunk
            return first_frame + self.geometry.chunk_frames - self.budget_frames
        # Release: P = f - N. Its first delta is hard-coded as 21 - N, which is P - 0 because the
        # first compression comes at f = 21; P itself is the same for any window.
        return first_frame - self.budget_frames

    # -- forward path ----------------------------------------------------------------------------

    def keys_values(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.buffers.ensure(k)
        keys, values = self.buffers.keys[layer], self.buffers.values[layer]  # (B, H, window*tpf, D)
        if self.layer_chunk[layer] != self.chunk_index:  # first forward of the chunk (t=1000)
            self.layer_chunk[layer] = self.chunk_index
            if self.compress_now:
                self._compress(layer, q, keys, values)
            self.sink_shift.move_to(layer, keys, self.sink_start)
        if self.kind is ForwardKind.CONTEXT and self.recent_context_frames:
            self._remember_clean_queries(layer, q, self.chunk_index)
        self.buffers.write(layer, self.buffers.tokens(self.context_frames), k, v)
        return self.buffers.prefix(layer, self.context_frames + self.geometry.chunk_frames)

    def _remember_clean_queries(self, layer: int, q: torch.Tensor, chunk: int) -> None:
        """Keep the clean-pass query sums of `chunk`'s last frames, the next compression's past queries.

        `chunk` is the current one, or for a re-cache an earlier chunk still within the recent context.
        """
        g = self.geometry
        B, H, _, D = q.shape  # (B, H, chunk_tokens, D)
        m = self.recent_context_frames
        end = (self.chunk_index + 1) * g.chunk_frames  # the recent context is frames [end - m, end)
        n = min(g.chunk_frames, (chunk + 1) * g.chunk_frames - (end - m))  # the chunk's last n are in it
        if n <= 0:
            return
        dtype = torch.promote_types(q.dtype, torch.float32)
        sums = q[:, :, (g.chunk_frames - n) * g.tokens_per_frame :].unflatten(2, (n, g.tokens_per_frame))
        sums = sums.sum(3, dtype=dtype)  # (B, H, n, D): one sum per frame
        ring = self.clean_queries[layer]
        if ring is None or ring.shape != (B, H, m, D) or ring.device != q.device or ring.dtype != dtype:
            ring = self.clean_queries[layer] = torch.zeros(B, H, m, D, device=q.device, dtype=dtype)
        if n == m:
            ring.copy_(sums)
        else:  # recent reaches further back than one chunk: a ring indexed by absolute frame
            first = chunk * g.chunk_frames + g.chunk_frames - n
            for j in range(n):
                ring[:, :, (first + j) % m].copy_(sums[:, :, j])

    def _compress(self, layer: int, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> None:
        g, plan = self.geometry, self.plan
        tpf = g.tokens_per_frame
        B, H, _, D = keys.shape
        C = self.topc_tokens
        lo, hi = self.buffers.tokens(self.sink_frames), self.buffers.tokens(plan.candidate_end)
        candidates = keys[:, :, lo:hi]  # (B, H, Lc, D), a view
        Lc = hi - lo
        old = self.buffers.tokens(plan.block_frames)  # the previous top-C block opens the candidates

        # 1. Score: φ_j = <Σ_r q_r, k_j> over the recent queries and all heads (paper Eq. 7)
        dtype = torch.promote_types(keys.dtype, torch.float32)
        query = q.sum(2, dtype=dtype)  # (B, H, D): this chunk's t=1000 queries
        ring = self.clean_queries[layer]
        if self.recent_context_frames and ring is not None:
            query = query + ring.sum(2)  # + the clean-pass queries of the previous frames
        scores = candidate_scores(query, candidates)  # (B, Lc)

        # 2. Candidate bookkeeping: source frame and times picked (fresh frames: never picked)
        fresh = torch.arange(Lc - old, device=keys.device)
        source = (plan.fresh_first_frame + fresh // tpf).expand(B, -1)  # (B, Lc - old)
        token = (fresh % tpf).expand(B, -1)
        picks = torch.zeros(B, Lc - old, device=keys.device, dtype=torch.int32)
        block_source, block_token = self.block_source[layer], self.block_token[layer]
        block_picks = self.block_picks[layer]
        if old:
            assert block_source is not None and block_token is not None and block_picks is not None
            source = torch.cat([block_source, source], dim=1)  # (B, Lc)
            token = torch.cat([block_token, token], dim=1)
            picks = torch.cat([block_picks, picks], dim=1)
        if self.max_reuse:
            # Capped tokens rank last; should fewer than C be eligible, the best of them fill the
            # block (the release keeps fewer). Impossible unless C exceeds the frames added between
            # compressions.
            scores = scores.masked_fill(picks >= self.max_reuse, float("-inf"))

        # 3. Top-C per batch item, back in temporal (slot) order
        chosen = scores.topk(C, dim=1).indices.sort(dim=1).values  # (B, C)
        index = chosen[:, None, :, None].expand(B, H, C, D)
        kept_keys = candidates.gather(2, index)  # (B, H, C, D), new tensors: the slots may overlap
        kept_values = values[:, :, lo:hi].gather(2, index)
        kept_source = source.gather(1, chosen)  # (B, C)
        self.block_source[layer] = kept_source
        self.block_token[layer] = token.gather(1, chosen)
        self.block_picks[layer] = picks.gather(1, chosen) + 1
        if self.layout == "paper":
            kept_pristine = self._kept_pristine(layer, candidates, chosen, old)

        # 4. Rebuild in place: [sink | top-C | recent context], the chunk is written after it
        block = slice(lo, lo + C)
        keys[:, :, block].copy_(kept_keys)
        values[:, :, block].copy_(kept_values)
        m_tokens = self.buffers.tokens(self.recent_context_frames)
        if m_tokens:
            src, dst = hi, lo + C
            overlap = dst + m_tokens > src
            for buf in (keys, values):
                recent = buf[:, :, src : src + m_tokens]
                buf[:, :, dst : dst + m_tokens].copy_(recent.clone() if overlap else recent)

        # 5. `paper`: the top-C block takes the C frame positions just before the recent block
        if self.layout == "paper":
            keys[:, :, block, : kept_pristine.shape[-1]].copy_(
                shift_tokens_in_time(
                    kept_pristine,
                    self._packed_positions(C, keys.device) - kept_source,
                    self._omega(keys.device),
                )
            )
            self.block_pristine[layer] = kept_pristine

        # 6. Telemetry: age of the kept tokens, query frame - source frame
        self._count_ages(plan.first_frame - kept_source)

    def _kept_pristine(
        self, layer: int, candidates: torch.Tensor, chosen: torch.Tensor, old: int
    ) -> torch.Tensor:
        """Temporal channels of the chosen tokens as they were made: fresh tokens are unmoved in the
        buffer, tokens of the previous block come from its pristine copy."""
        B, H, _, _ = candidates.shape
        n_t = self.rope.split.temporal
        C = chosen.shape[1]
        fresh = candidates[:, :, old:, :n_t]  # (B, H, Lc - old, n_t)
        from_fresh = fresh.gather(2, (chosen - old).clamp(min=0)[:, None, :, None].expand(B, H, C, n_t))
        previous = self.block_pristine[layer]
        if not old or previous is None:
            return from_fresh
        from_block = previous.gather(2, chosen.clamp(max=old - 1)[:, None, :, None].expand(B, H, C, n_t))
        return torch.where((chosen < old)[:, None, :, None], from_block, from_fresh)  # (B, H, C, n_t)

    def _omega(self, device: torch.device) -> torch.Tensor:
        if self.omega is None or self.omega.device != device:
            self.omega = temporal_frequencies(self.rope, device)
        return self.omega

    def _packed_positions(self, tokens: int, device: torch.device) -> torch.Tensor:
        """`paper` positions of the top-C block, (tokens,): the i-th kept token in temporal order sits at
        s_top + i // tokens_per_frame, s_top = f + 3 - R - C.

        Paper §4.3 asks for one "continuous temporal sequence" [sink ‖ top-C ‖ recent] (Eq. 10-11) but
        does not say where a block of tokens from different frames goes. A common Δ (the release's
        dead code) keeps their spacing, up to ~48 frames, so the block would overlap the sink; Eq. 10
        read per key (Δ_j = s_top - s_j) stacks all of them on one position. Packing by rank fills
        exactly the C frame positions that N = S + C + R reserves, keeps temporal order (a token is
        never placed after a newer one) and mostly keeps a source frame's tokens together.
        """
        first = self.plan.first_frame
        s_top = first + self.geometry.chunk_frames - self.recent_frames - self.topc_frames
        return s_top + torch.arange(tokens, device=device) // self.geometry.tokens_per_frame

    def _count_ages(self, ages: torch.Tensor) -> None:
        """Add the ages (B, C) of one layer's kept tokens to each batch item's counters."""
        B = ages.shape[0]
        if self.age_hist is None or self.age_hist.shape[0] != B or self.age_hist.device != ages.device:
            self.age_hist = torch.zeros(B, AGE_BINS, dtype=torch.int64, device=ages.device)
            self.age_sum = torch.zeros(B, dtype=torch.int64, device=ages.device)
            self.age_max = torch.zeros(B, dtype=torch.int64, device=ages.device)
        assert self.age_sum is not None and self.age_max is not None
        bins = (ages // AGE_BIN_FRAMES).clamp(0, AGE_BINS - 1)
        self.age_hist.scatter_add_(1, bins, torch.ones_like(bins))
        self.age_sum += ages.sum(1)
        self.age_max = torch.maximum(self.age_max, ages.amax(1))
        self.ages_counted += ages.shape[1]  # per batch item

    # -- prompt switches -----------------------------------------------------------------------------

    def cached_frames(self) -> list[CachedFrame]:
        """The sink and the frames after the top-C block (its single tokens are `TopCRecache`'s)."""
        end = (self.chunk_index + 1) * self.geometry.chunk_frames  # frames made so far
        sink = [CachedFrame(f, f, self.sink_start + f, True) for f in range(min(self.sink_frames, end))]
        first_slot = self.sink_frames + self.block_frames
        run = range(self.run_start_frame, end)
        return sink + [CachedFrame(f, first_slot + f - self.run_start_frame, f, False) for f in run]

    def filled_slots(self) -> int:
        return self.context_frames + self.geometry.chunk_frames

    def referenced_chunks(self) -> set[int]:
        chunks = super().referenced_chunks()
        if self.block_frames:  # the top-C block holds tokens of frames [oldest, run_start_frame)
            chunk = self.geometry.chunk_frames
            chunks |= set(range(self.fresh_starts[0] // chunk, (self.run_start_frame - 1) // chunk + 1))
        return chunks

    def recache_session(self, mode: str) -> Recache:
        return TopCRecache(self, mode)

    def telemetry(self, item: int | None = None) -> dict[str, Any]:
        """Per clip: compressions, sink shifts and the age (query frame - source frame) of kept top-C
        tokens, over all layers, as a fixed histogram of `AGE_BIN_FRAMES`-frame bins; the ages of batch
        item `item`, or of all items together (None)."""
        hist, total, oldest, counted = [0] * AGE_BINS, None, None, 0
        if self.ages_counted and self.age_hist is not None:
            assert self.age_sum is not None and self.age_max is not None
            rows = slice(None) if item is None else slice(item, item + 1)
            hist = self.age_hist[rows].sum(0).tolist()
            total, oldest = self.age_sum[rows].sum().item(), self.age_max[rows].max().item()
            counted = self.ages_counted * self.age_hist[rows].shape[0]
        return {
            "compressions": self.compressions,
            "sink_shifts": self.sink_shifts,
            "sink_start": self.sink_start,
            "topc_age_bin_frames": AGE_BIN_FRAMES,
            "topc_age_hist": hist,
            "topc_age_mean": total / counted if total is not None else None,
            "topc_age_max": oldest,
        }


class TopCRecache(Recache):
    """deep-forcing's re-cache: the sink and recent frames as `Recache` rewrites whole frames, and each
    layer's top-C tokens from a run of their source frames at the positions they were made at; the
    recent context's clean-query sums come from the pass too (they score the next compression)."""

    def __init__(self, cache: DeepForcingCache, mode: str):
        self.policy = cache  # the typed cache, before the base class asks for `_token_chunks`
        super().__init__(cache, cache.buffers, cache.sink_shift, mode)

    def summary(self) -> dict[str, Any]:
        rewrites_block = self.mode != "none" and self.policy.block_frames > 0
        return {**super().summary(), "recached_topc_tokens": self.policy.topc_tokens * rewrites_block}

    def _token_chunks(self) -> set[int]:
        policy = self.policy
        if self.mode == "none" or not policy.block_frames:
            return set()
        sources = torch.cat([source.flatten() for source in policy.block_source if source is not None])
        # The one wait for the device of a switch: which frames the layers' top-C tokens come from.
        return {frame // policy.geometry.chunk_frames for frame in sources.unique().tolist()}

    def _write_tokens(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        policy, group = self.policy, self.group
        assert group is not None
        g = policy.geometry
        policy._remember_clean_queries(layer, q, group.chunk)
        if self.mode == "none" or not policy.block_frames:
            return
        source, token = policy.block_source[layer], policy.block_token[layer]  # (B, C) each
        assert source is not None and token is not None
        B, H, _, D = k.shape
        C = policy.topc_tokens
        first = group.chunk * g.chunk_frames
        here = (source // g.chunk_frames == group.chunk)[:, None, :, None]  # (B, 1, C, 1)
        index = (source - first).clamp(0, g.chunk_frames - 1) * g.tokens_per_frame + token
        index = index[:, None, :, None].expand(B, H, C, D)
        new_keys, new_values = k.gather(2, index), v.gather(2, index)  # (B, H, C, D)
        if policy.layout == "paper":  # keep the as-made copy, then move it as the compression did
            n_t = policy.rope.split.temporal
            pristine = policy.block_pristine[layer]
            assert pristine is not None
            pristine = torch.where(here, new_keys[..., :n_t], pristine)
            policy.block_pristine[layer] = pristine
            moved = shift_tokens_in_time(
                pristine, policy._packed_positions(C, k.device) - source, policy._omega(k.device)
            )
            new_keys = torch.cat([moved, new_keys[..., n_t:]], dim=-1)
        lo = self.buffers.tokens(policy.sink_frames)
        for buffer, new in ((self.buffers.keys[layer], new_keys), (self.buffers.values[layer], new_values)):
            block = buffer[:, :, lo : lo + C]
            block.copy_(torch.where(here, new, block))

    def _visible_tokens(self, layer: int, visible: torch.Tensor) -> torch.Tensor:
        policy, group = self.policy, self.group
        assert group is not None
        source = policy.block_source[layer]
        if not policy.block_frames or source is None:
            return visible
        B = source.shape[0]
        lo, hi = (
            self.buffers.tokens(policy.sink_frames),
            self.buffers.tokens(policy.sink_frames) + policy.topc_tokens,
        )
        block = source // policy.geometry.chunk_frames < group.chunk  # (B, C)
        return torch.cat([visible[:, :lo].expand(B, -1), block, visible[:, hi:].expand(B, -1)], dim=1)
