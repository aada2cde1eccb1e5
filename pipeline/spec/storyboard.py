"""Storyboards: one clip that follows a schedule of prompts, and how its cache follows a prompt switch.

A storyboard is a sequence of segments, each a prompt over a run of whole chunks, that together cover
the clip. At the chunk where a segment begins the generator switches the cross-attention to its prompt
and refreshes the self-attention cache according to `recache` (docs/cache_policies.md §10):

- `none`: only the cross-attention changes; every cached key and value stays as it was made.
- `window`: LongLive's KV re-cache. Every cached frame after the sink is run again through the DiT at
  the clean-context timestep with the new prompt, its keys/values replacing the cached ones at the same
  positions; the sink keeps what it was made with (LongLive's global sink).
- `all`: the same, the sink included.
"""

from __future__ import annotations

from dataclasses import dataclass

RECACHE_MODES = ("none", "window", "all")
# Deep Forcing's sink is 10 of the 16-19 cached frames and is never evicted: left as it was made, it
# would tie every later segment to the first prompt (README "Storyboards" says why `all` is the default).
DEFAULT_RECACHE = "all"
# Every segment's prompt is encoded before the clip starts: more segments delay the first frames and hold
# more text embeddings (4 MB each at full size). 16 segments of a minute-long clip are ~4 s each.
MAX_SEGMENTS = 16


def check_recache(value: object, where: str) -> str:
    """`value` if it names a recache mode; ValueError naming `where` and the choices otherwise."""
    if not isinstance(value, str) or value not in RECACHE_MODES:
        shown = f'"{value}"' if isinstance(value, str) else repr(value)
        raise ValueError(f"{where} {shown} is not a recache mode; choose one of {', '.join(RECACHE_MODES)}")
    return value


@dataclass(frozen=True)
class Segment:
    """One prompt of a storyboard over latent frames [first_frame, first_frame + num_latent_frames)."""

    prompt: str
    first_frame: int  # latent frame where the segment begins, a multiple of the chunk
    num_latent_frames: int

    @property
    def end_frame(self) -> int:
        """Latent frame after the segment's last one."""
        return self.first_frame + self.num_latent_frames


@dataclass(frozen=True)
class Storyboard:
    """Two or more segments covering a clip, and how the cache follows each switch."""

    segments: tuple[Segment, ...]
    recache: str = DEFAULT_RECACHE

    @property
    def prompts(self) -> list[str]:
        return [segment.prompt for segment in self.segments]

    def check(self, num_latent_frames: int, chunk_frames: int) -> None:
        """ValueError unless the segments are whole chunks that cover [0, num_latent_frames) in order."""
        check_recache(self.recache, "recache")
        if not self.segments:
            raise ValueError("a storyboard needs at least one segment")
        if len(self.segments) > MAX_SEGMENTS:
            raise ValueError(f"a storyboard has at most {MAX_SEGMENTS} segments, got {len(self.segments)}")
        start = 0
        for index, segment in enumerate(self.segments):
            if segment.first_frame != start:
                raise ValueError(
                    f"segment {index} starts at latent frame {segment.first_frame}, expected {start} "
                    "(segments follow each other without gaps)"
                )
            if segment.num_latent_frames <= 0 or segment.num_latent_frames % chunk_frames:
                raise ValueError(
                    f"segment {index} is {segment.num_latent_frames} latent frames; it must be a positive "
                    f"multiple of chunk_frames={chunk_frames}"
                )
            start = segment.end_frame
        if start != num_latent_frames:
            raise ValueError(f"the segments cover {start} latent frames, the clip has {num_latent_frames}")

    def switch_chunks(self, chunk_frames: int) -> dict[int, int]:
        """{chunk index: segment index} for every segment after the first: where the prompt switches."""
        return {segment.first_frame // chunk_frames: i for i, segment in enumerate(self.segments) if i}
