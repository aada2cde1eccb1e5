"""Which clips may share DiT forwards: a group renders in lockstep, one batch item per clip
(`ClipGenerator.stream_group`).

Clips share forwards when they have the same length and the same cache policy with the same parameters:
then every chunk has the same shapes and the cache makes the same decisions at the same chunks for all
of them. A storyboard renders in a group of its own: its prompt switches run a re-cache pass at chunks of
its own, and storyboards are rare enough that grouping only those with identical segment boundaries and
recache modes would buy little for a second schedule in the lockstep loop. A clip that has taken the
device down before in this run also renders alone, so that a clip which breaks the device cannot take
its group with it a second time.

The driver orders clips by `group_key` so that Ray Data's batches hold clips that can share forwards;
the worker groups whatever batch it gets with `plan_groups`, so a mixed batch is still rendered right.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from pipeline.spec.clip import ClipSpec


def group_key(clip: ClipSpec) -> Hashable | None:
    """Clips with equal keys may share forwards; None: the clip renders alone."""
    if clip.storyboard is not None:
        return None
    return (clip.num_latent_frames, clip.cache)  # PolicyParams: frozen, every parameter compared


def plan_groups(
    clips: Sequence[ClipSpec], limit: int, alone: frozenset[str] = frozenset()
) -> list[list[int]]:
    """Indices of `clips` in groups of at most `limit` that may share forwards, in order of first
    appearance; clips whose id is in `alone` get a group of their own."""
    if limit < 1:
        raise ValueError(f"limit={limit} clips per group must be >= 1")
    groups: list[list[int]] = []
    open_groups: dict[Hashable, list[int]] = {}  # key -> its last group, while it has room
    for index, clip in enumerate(clips):
        key = group_key(clip)
        if key is None or clip.clip_id in alone or limit == 1:
            groups.append([index])
            continue
        group = open_groups.get(key)
        if group is None or len(group) == limit:
            group = open_groups[key] = []
            groups.append(group)
        group.append(index)
    return groups


def order_for_groups(clips: Sequence[ClipSpec]) -> list[ClipSpec]:
    """The clips with those that may share forwards next to each other, otherwise in their order."""
    first_seen: dict[Hashable, int] = {}
    ranked = []
    for index, clip in enumerate(clips):
        key = group_key(clip)
        rank = index if key is None else first_seen.setdefault(key, index)
        ranked.append((rank, index))
    return [clips[index] for _, index in sorted(ranked)]
