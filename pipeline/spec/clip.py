"""The one record of a clip, from its prompt-file line through Ray Data to the worker and its metrics row."""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass

from pipeline.spec.cache import PolicyParams
from pipeline.spec.storyboard import Segment, Storyboard

ID_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")  # clip and run ids: they become parts of object keys
MAX_ID_CHARS = 128
ID_RULE = f'1-{MAX_ID_CHARS} letters, digits, "_", "." or "-", not starting with "."'  # for error messages


def is_valid_id(value: object) -> bool:
    """A clip or run id: it names files and key prefixes, so no "/" and no hidden (".") names."""
    return (
        isinstance(value, str)
        and ID_PATTERN.fullmatch(value) is not None
        and not value.startswith(".")
        and len(value) <= MAX_ID_CHARS
    )


STORYBOARD_PROMPT_SEPARATOR = "\n"  # a storyboard's `prompt`: its segments' prompts, one per line


@dataclass(frozen=True)
class ClipSpec:
    """One validated clip: everything a worker needs to render it, and its deterministic identity."""

    line: int  # 1-based line in the prompt file
    clip_id: str  # names the video, clips/<clip_id>.mp4, and the metrics part file
    prompt: str  # a storyboard's segment prompts joined by STORYBOARD_PROMPT_SEPARATOR
    seed: int
    num_latent_frames: int
    cache: PolicyParams  # the KV cache policy and all its parameters, defaults filled in
    config_hash: str  # model config + generation schedule + cache policy and parameters (+ recache)
    storyboard: Storyboard | None = None  # two or more segments; None for a clip of one prompt

    @property
    def cache_policy(self) -> str:
        return self.cache.policy

    def to_bytes(self) -> bytes:
        """The record as one binary value, for Ray Data's column "clip" (`from_bytes` reads it back).

        Ray Data would pickle a Python object column by itself, with a warning on every run; pickling
        it here keeps the column plain binary. Only our own processes, on the same code, read it.
        """
        return pickle.dumps(self)

    @staticmethod
    def from_bytes(data: bytes) -> ClipSpec:
        clip = pickle.loads(data)  # written by this run's driver (to_bytes)
        if not isinstance(clip, ClipSpec):
            raise TypeError(f"expected a pickled ClipSpec, got {type(clip).__name__}")
        return clip

    @property
    def segments(self) -> tuple[Segment, ...]:
        """The clip's prompts over its frames: one segment for a clip of one prompt."""
        if self.storyboard is not None:
            return self.storyboard.segments
        return (Segment(self.prompt, 0, self.num_latent_frames),)
