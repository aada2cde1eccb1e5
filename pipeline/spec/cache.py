"""The KV cache policies' parameters: names, types, defaults and valid ranges, checked without torch.

Each policy in `pipeline.cache` takes one of these frozen dataclasses; the driver builds and checks them
from prompt lines and `--cache-param` options at planning time, so a value no cache could take is a
line error before anything renders. What each policy does: docs/cache_policies.md.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

# Self Forcing's attention window in latent frames, the current chunk included: the length it was trained
# on (docs/cache_policies.md §2.1), and every policy's default cache size.
WINDOW_FRAMES = 21
DEFAULT_POLICY = "deep-forcing"  # the product's point: minute-long clips without drift
LAYOUTS = ("reference", "paper")  # deep-forcing: the authors' release, or the paper's Algorithm 1


@dataclass(frozen=True)
class CacheGeometry:
    """Sizes a policy needs, all taken from the model preset."""

    num_layers: int
    num_heads: int
    head_dim: int
    tokens_per_frame: int  # 1560 at 480x832
    chunk_frames: int  # latent frames generated together (3)

    @property
    def chunk_tokens(self) -> int:
        return self.chunk_frames * self.tokens_per_frame


def check_int(name: str, value: object, low: int, high: int | None = None, why: str = "") -> int:
    """Validate a policy parameter: an int in [low, high]; the error names it, its value and the range."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}={value!r} must be an int")
    if value < low or (high is not None and value > high):
        valid = f"{low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"{name}={value} is out of range: valid is {valid}{f' ({why})' if why else ''}")
    return value


class PolicyParams:
    """Base of the parameter dataclasses below: `policy` names the policy they configure."""

    policy: ClassVar[str]

    def check(self, chunk_frames: int) -> None:
        """Raise ValueError/TypeError naming the first parameter no cache of this policy could take."""
        raise NotImplementedError

    def as_dict(self) -> dict[str, Any]:
        """Every parameter by name, defaults included (what clip ids and the metrics row hash and show)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]


def _check_sink_window(sink_frames: int, window_frames: int, chunk: int, least_sink: int) -> None:
    """The window of the sink policies: `least_sink` sink frames at least (0 for fifo), and one chunk."""
    room = (
        f"one sink frame plus one chunk of {chunk} frames" if least_sink else f"one chunk of {chunk} frames"
    )
    check_int("window_frames", window_frames, least_sink + chunk, why=room)
    check_int(
        "sink_frames",
        sink_frames,
        least_sink,
        window_frames - chunk,
        why=f"window_frames={window_frames} less one chunk of {chunk} frames; fifo has no sink",
    )


@dataclass(frozen=True)
class FifoParams(PolicyParams):
    policy = "fifo"
    window_frames: int = WINDOW_FRAMES

    def check(self, chunk_frames: int) -> None:
        _check_sink_window(0, self.window_frames, chunk_frames, least_sink=0)


@dataclass(frozen=True)
class SinkParams(PolicyParams):
    policy = "sink"
    sink_frames: int = 3  # LongLive keeps the first chunk
    window_frames: int = WINDOW_FRAMES  # LongLive itself uses 12

    def check(self, chunk_frames: int) -> None:
        _check_sink_window(self.sink_frames, self.window_frames, chunk_frames, least_sink=1)


@dataclass(frozen=True)
class RollingSinkParams(PolicyParams):
    policy = "rolling-sink"
    sink_frames: int | None = None  # None: the first chunk, as Rolling Forcing keeps it
    window_frames: int = WINDOW_FRAMES

    def sink_frames_for(self, chunk_frames: int) -> int:
        return chunk_frames if self.sink_frames is None else self.sink_frames

    def check(self, chunk_frames: int) -> None:
        sink = self.sink_frames_for(chunk_frames)
        _check_sink_window(sink, self.window_frames, chunk_frames, least_sink=1)


@dataclass(frozen=True)
class DeepSinkParams(PolicyParams):
    policy = "deep-sink"
    sink_frames: int = 14  # the release's DS-only setting; 10..14 recommended (docs/cache_policies.md §5.1)
    window_frames: int = WINDOW_FRAMES

    def check(self, chunk_frames: int) -> None:
        _check_sink_window(self.sink_frames, self.window_frames, chunk_frames, least_sink=1)


@dataclass(frozen=True)
class DeepForcingParams(PolicyParams):
    policy = "deep-forcing"
    sink_frames: int = 10  # S (docs/cache_policies.md §6.1)
    budget_frames: int = 16  # N, frames' worth kept after a compression
    recent_frames: int = 4  # R, the chunk included
    window_frames: int = WINDOW_FRAMES  # compress when a chunk would overflow this
    max_reuse: int = 7  # a top-C token picked this often is dropped; 0 = no limit
    layout: str = "reference"  # one of LAYOUTS

    def check(self, chunk_frames: int) -> None:
        chunk = chunk_frames
        check_int(
            "window_frames",
            self.window_frames,
            chunk + 1,
            why=f"one sink frame plus one chunk of {chunk} frames",
        )
        check_int(
            "sink_frames",
            self.sink_frames,
            1,
            self.window_frames - chunk,
            why=f"window_frames={self.window_frames} less one chunk of {chunk} frames",
        )
        check_int(
            "recent_frames",
            self.recent_frames,
            chunk,
            self.window_frames - self.sink_frames,
            why=f"the chunk of {chunk} frames up to window_frames - sink_frames",
        )
        kept = self.sink_frames + self.recent_frames
        check_int(
            "budget_frames",
            self.budget_frames,
            kept,
            self.window_frames,
            why=f"from sink_frames + recent_frames = {kept} to window_frames",
        )
        check_int("max_reuse", self.max_reuse, 0, why="0 means no limit")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout={self.layout!r} is not one of {list(LAYOUTS)}")


POLICY_PARAMS: dict[str, type[PolicyParams]] = {
    params.policy: params
    for params in (FifoParams, SinkParams, RollingSinkParams, DeepSinkParams, DeepForcingParams)
}


def policy_parameters(name: str) -> dict[str, Any]:
    """The parameters of policy `name` and their defaults."""
    return _params_class(name)().as_dict()


def policy_params(name: str, values: Mapping[str, Any], chunk_frames: int) -> PolicyParams:
    """Policy `name` with `values` (the rest at their defaults), checked for a model of `chunk_frames`.

    ValueError names an unknown policy or parameter, a value of the wrong JSON type, or one out of
    range, with what is valid.
    """
    cls = _params_class(name)
    allowed = policy_parameters(name)
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ValueError(f"cache policy {name!r} has no parameter(s) {unknown}; it takes {sorted(allowed)}")
    hints = typing.get_type_hints(cls)
    for param, value in values.items():
        expected = _json_type(hints[param])
        if not _is_json_type(value, hints[param]):
            raise ValueError(
                f"cache policy {name!r} parameter {param!r} must be {expected} "
                f"(default {allowed[param]!r}), got {json.dumps(value)}"
            )
    params = cls(**values)
    try:
        params.check(chunk_frames)  # the types are right by now: what is left is a range
    except ValueError as exc:
        raise ValueError(f"cache policy {name!r}: {exc}") from None
    return params


def _params_class(name: str) -> type[PolicyParams]:
    if not isinstance(name, str) or name not in POLICY_PARAMS:
        choices = ", ".join(sorted(POLICY_PARAMS))
        raise ValueError(f"unknown cache policy {json.dumps(name)}; choose one of {choices}")
    return POLICY_PARAMS[name]


def _is_json_type(value: Any, hint: Any) -> bool:
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint == int | None:
        return value is None or (isinstance(value, int) and not isinstance(value, bool))
    raise TypeError(f"no JSON rule for parameter type {hint}")


def _json_type(hint: Any) -> str:
    return {int: "an integer", str: "a string", int | None: "an integer or null"}[hint]
