"""Prompt files: JSONL in, validated clip specs with deterministic ids out.

One JSON object per line (blank lines are ignored, but still counted for line numbers):

    {"prompt": "A red fox trots through fresh snow at dawn."}
    {"prompt": "...", "id": "fox-2", "seed": 7, "seconds": 30}
    {"prompt": "...", "latent_frames": 120, "cache_policy": "fifo", "window_frames": 15}

Fields: `prompt` (required, non-empty), `id`, `seed`, `seconds` or `latent_frames` (not both),
`cache_policy`, and that policy's parameters as top-level keys (names, types and ranges are checked
against `pipeline.spec.cache`, so a value no cache could take is an error of its line). Missing fields
take the run-wide defaults (`RenderDefaults`, filled from the command line).

A storyboard line gives `prompts` instead of `prompt`: a list of segments, each {"prompt": ...,
"seconds": ...} or {"prompt": ..., "latent_frames": ...} (one unit for the whole list), and optionally
`recache` (`pipeline.spec.storyboard`):

    {"id": "fox", "prompts": [{"prompt": "a fox walks through snow", "seconds": 20},
                              {"prompt": "the fox reaches a frozen lake", "seconds": 20}]}

Every line is checked before anything renders; all problems are reported together with their line
numbers (`PromptFileError`).

Decisions a user can rely on:
- Seed: the line's `seed`, else the run-wide `--seed`, else derived from the line itself:
  sha256("seed", id, prompt) -> 31 bits. The same line always renders the same clip, and lines that
  repeat a prompt under different ids get different seeds (variants). The seed is in the metrics row.
- Length: `seconds` becomes the smallest multiple of `chunk_frames` latent frames L with
  `temporal_stride * L >= seconds * fps` (`ModelPreset.latent_frames_for_seconds`): 60 s -> 240
  latent frames -> 957 frames (59.8 s), Self Forcing's own long-video setting.
- Storyboard lengths: the clip is as long as its segments together; a `seconds` or `latent_frames` on
  the line must give the same length or be absent. Segments in `latent_frames` are exact (whole
  chunks); segments in `seconds` end at the chunk boundary nearest to where they end in time (halves
  round up), and the last one where a plain line of the total `seconds` would: 20 + 20 + 20 s ->
  81 + 78 + 81 = 240 latent frames. A segment that rounds to no whole chunk is an error.
  A storyboard of one segment is the plain clip of its prompt (same id, same frames).
- Clip id: the line's `id` (`[A-Za-z0-9_.-]+`), else the first CLIP_ID_HEX hex digits of a sha256 over the
  model (name, weights source, config hash), the cache policy with all its parameters (defaults
  filled in, so spelling out a default changes nothing), prompt, seed and latent frames; for a
  storyboard, every segment's prompt and length and the recache mode in place of the prompt. Encoder
  settings are not part of it: re-encoding at another CRF needs `--force`.
"""

from __future__ import annotations

import codecs
import functools
import hashlib
import itertools
import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.digest import json_sha256
from pipeline.spec.cache import DEFAULT_POLICY, POLICY_PARAMS, PolicyParams, policy_parameters, policy_params
from pipeline.spec.clip import ID_RULE, STORYBOARD_PROMPT_SEPARATOR, ClipSpec, is_valid_id
from pipeline.spec.model import GenerationConfig, ModelPreset
from pipeline.spec.storyboard import DEFAULT_RECACHE, MAX_SEGMENTS, Segment, Storyboard, check_recache

MAX_SEED = 2**63 - 1  # the metrics column is int64
DERIVED_SEED_BITS = 31  # derived seeds stay small enough to read and retype
CLIP_ID_HEX = 16  # 64 bits: collisions are negligible for millions of clips
CONFIG_HASH_HEX = 16  # the same for the config hashes in clip ids and metrics rows
LINE_FIELDS = ("prompt", "prompts", "id", "seed", "seconds", "latent_frames", "cache_policy", "recache")
SEGMENT_FIELDS = ("prompt", "seconds", "latent_frames")
DEFAULT_CLIP_SECONDS = 60.0  # a minute: what this renderer is for
DEFAULT_MAX_SECONDS = 1800.0  # 30 minutes: longer lines are almost always typos (1e9), and cost GPU-days
MAX_SECONDS_LIMIT = 86400.0  # a day: --max-seconds itself stays where every frame count fits int32


@dataclass(frozen=True)
class RenderDefaults:
    """Run-wide values for fields a line leaves out, and what identifies the model."""

    preset: ModelPreset  # model sizes, fps and chunking
    model_source: str = "random"  # model folder URI, or "random" (seeded random weights): part of clip ids
    seed: int | None = None  # None: derived per line (see module docstring)
    seconds: float | None = DEFAULT_CLIP_SECONDS  # used when a line gives neither seconds nor latent_frames
    latent_frames: int | None = None  # run-wide alternative to seconds; wins over seconds when set
    cache_policy: str = DEFAULT_POLICY
    cache_params: Mapping[str, Any] = field(default_factory=dict)  # run-wide policy parameters
    max_seconds: float = DEFAULT_MAX_SECONDS  # a longer clip is an error of its line
    recache: str = DEFAULT_RECACHE  # for storyboard lines without one (pipeline/spec/storyboard.py)

    @functools.cached_property
    def model_config_hash(self) -> str:
        """Hash of the model configuration that shapes frames: preset sizes and the generation schedule."""
        return json_sha256({"preset": asdict(self.preset), "generation": asdict(GenerationConfig())})[
            :CONFIG_HASH_HEX
        ]


class PromptFileError(ValueError):
    """Some lines of a prompt file are invalid; `errors` lists (line, reason) for every one of them."""

    def __init__(self, source: str, errors: list[tuple[int, str]], valid: int):
        self.source = source
        self.errors = errors
        self.valid = valid
        if not errors:
            message = f'{source} has no prompts; write one JSON object per line, e.g. {{"prompt": "a fox"}}'
        else:
            lines = "\n".join(f"  line {line}: {reason}" for line, reason in errors)
            fix = (
                f"fix them, or pass --skip-invalid to render the {valid} valid line(s)"
                if valid
                else "no line is valid"
            )
            message = f"{source}: {len(errors)} invalid line(s):\n{lines}\n{fix}"
        super().__init__(message)


# ---------------------------------------------------------------------------------------------
# 1. Derived values
# ---------------------------------------------------------------------------------------------


def derive_seed(prompt: str, clip_id: str | None) -> int:
    digest = hashlib.sha256(json.dumps(["seed", clip_id, prompt]).encode()).digest()
    return int.from_bytes(digest[:8], "big") % 2**DERIVED_SEED_BITS


def clip_id_for(
    defaults: RenderDefaults,
    prompt: str,
    seed: int,
    num_latent_frames: int,
    cache: PolicyParams,
    storyboard: Storyboard | None = None,
) -> str:
    model = [defaults.preset.name, defaults.model_source, defaults.model_config_hash]
    asked: Any = prompt  # a plain clip's id hashes exactly what it did before storyboards existed
    if storyboard is not None:
        segments = [[segment.prompt, segment.num_latent_frames] for segment in storyboard.segments]
        asked = {"segments": segments, "recache": storyboard.recache}
    return json_sha256([model, cache.policy, cache.as_dict(), asked, seed, num_latent_frames])[:CLIP_ID_HEX]


def config_hash_for(defaults: RenderDefaults, cache: PolicyParams, recache: str | None = None) -> str:
    """`recache` only for storyboards: a plain clip's hash stays what it was."""
    parts: list[Any] = [defaults.model_config_hash, cache.policy, cache.as_dict()]
    if recache is not None:
        parts.append({"recache": recache})
    return json_sha256(parts)[:CONFIG_HASH_HEX]


# ---------------------------------------------------------------------------------------------
# 2. One line
# ---------------------------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


def _resolve_policy(
    policy: Any, params: Mapping[str, Any], fields: str, preset: ModelPreset
) -> PolicyParams | str:
    """The policy's checked parameters (defaults filled in), or the reason they are invalid.

    `fields` says where the parameters came from: "line" fields or "--cache-param" options.
    """
    if isinstance(policy, str) and policy in POLICY_PARAMS:
        allowed = policy_parameters(policy)
        if unknown := sorted(set(params) - set(allowed)):
            takes = f"{policy}: {', '.join(sorted(allowed)) or 'none'}"
            if fields == "--cache-param":
                return f"unknown --cache-param {', '.join(unknown)}; the cache policy takes ({takes})"
            return (
                f"unknown field(s) {', '.join(unknown)}; a line takes {', '.join(LINE_FIELDS)} "
                f"and the parameters of its cache policy ({takes})"
            )
    try:
        return policy_params(policy, params, preset.chunk_frames)
    except ValueError as exc:
        return str(exc)


def check_defaults(defaults: RenderDefaults) -> None:
    """Run-wide defaults are checked once, up front (a bad --cache-param is a usage error)."""
    resolved = _resolve_policy(defaults.cache_policy, defaults.cache_params, "--cache-param", defaults.preset)
    if isinstance(resolved, str):
        raise ValueError(resolved)
    check_recache(defaults.recache, "--recache")
    if defaults.seed is not None and not 0 <= defaults.seed <= MAX_SEED:
        raise ValueError(f"seed={defaults.seed} must be between 0 and 2**63-1")
    if not 0 < defaults.max_seconds <= MAX_SECONDS_LIMIT:
        raise ValueError(
            f"--max-seconds={defaults.max_seconds:g} must be more than 0 "
            f"and at most {MAX_SECONDS_LIMIT:g} (a day)"
        )
    if defaults.latent_frames is not None:
        defaults.preset.check_latent_frames(defaults.latent_frames)
        length = defaults.latent_frames
        what, requested_s = f"--latent-frames={length}", defaults.preset.nominal_seconds(length)
    elif defaults.seconds is not None:
        length = defaults.preset.latent_frames_for_seconds(defaults.seconds)
        what, requested_s = f"--seconds={defaults.seconds:g}", defaults.seconds
    else:
        raise ValueError("RenderDefaults needs seconds or latent_frames for lines that give neither")
    if too_long := _over_max_length(length, what, requested_s, defaults):
        raise ValueError(too_long)


def _given_length(data: Mapping[str, Any], preset: ModelPreset) -> tuple[str, float] | None:
    """How a line gave its length, as its error message quotes it, and that length in seconds; None
    when the line takes the run-wide default."""
    if "seconds" in data:
        value = data["seconds"]
        return f"seconds={value:g}" if isinstance(value, float) else f"seconds={value}", float(value)
    if "latent_frames" in data:
        value = data["latent_frames"]
        return f"latent_frames={value}", preset.nominal_seconds(value)
    return None


def _over_max_length(
    num_latent_frames: int, what: str, requested_s: float, defaults: RenderDefaults
) -> str | None:
    """The reason a clip of `num_latent_frames` (asked for as `what`, `requested_s` long) is too long."""
    if defaults.preset.nominal_seconds(num_latent_frames) <= defaults.max_seconds:
        return None
    shown = f"{what} ({_duration(requested_s)})" if requested_s < 1e10 else what
    return (
        f"{shown} is longer than --max-seconds={defaults.max_seconds:g} ({_duration(defaults.max_seconds)}); "
        f"split it into several clips, or raise --max-seconds (at most {MAX_SECONDS_LIMIT:g}, a day)"
    )


def _duration(seconds: float) -> str:
    """1801 -> "30 min 1 s", 1e9 -> "277777 h 46 min": the two largest units."""
    whole = round(seconds)
    hours, minutes, secs = whole // 3600, whole % 3600 // 60, whole % 60
    parts = [(hours, "h"), (minutes, "min"), (secs, "s")]
    first = next((i for i, (value, _) in enumerate(parts) if value), 2)
    return " ".join(f"{value} {unit}" for value, unit in parts[first : first + 2] if value) or "0 s"


def parse_line(text: str, line: int, defaults: RenderDefaults) -> ClipSpec:
    """One JSONL line -> ClipSpec; ValueError with the reason (all problems of the line, joined by '; ')."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"not valid JSON ({exc.msg} at column {exc.colno}); each line must be one JSON object "
            'such as {"prompt": "a fox in the snow"}'
        ) from None
    if not isinstance(data, dict):
        raise ValueError(f'expected a JSON object such as {{"prompt": "..."}}, got {_type_name(data)}')

    problems: list[str] = []
    prompt: str | None = None
    segments: list[tuple[str, int]] | None = None  # (prompt, latent frames) of a storyboard line
    if "prompts" in data:
        if "prompt" in data:
            problems.append('give "prompt" (one prompt) or "prompts" (a storyboard), not both')
        else:
            segments = _parse_segments(data["prompts"], defaults.preset, problems)
    elif "prompt" not in data:
        problems.append('"prompt" is missing; every line needs a non-empty "prompt" string')
    elif not isinstance(data["prompt"], str) or not data["prompt"].strip():
        problems.append(f'"prompt" must be a non-empty string, got {json.dumps(data["prompt"])}')
    else:
        prompt = data["prompt"]

    recache = defaults.recache
    if "recache" in data:
        if "prompts" not in data:
            problems.append('"recache" applies to storyboards ("prompts") only; remove it from this line')
        else:
            try:
                recache = check_recache(data["recache"], '"recache"')
            except ValueError as exc:
                problems.append(str(exc))

    clip_id = data.get("id")
    if clip_id is not None and not is_valid_id(clip_id):
        problems.append(
            f'"id" must be {ID_RULE} (it names the file clips/<id>.mp4), got {json.dumps(clip_id)}'
        )

    seed = data.get("seed", defaults.seed)
    if "seed" in data and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED):
        problems.append(f'"seed" must be an integer from 0 to 2**63-1, got {json.dumps(data["seed"])}')

    num_latent_frames = _line_length(data, defaults.preset, problems)
    if segments is not None:  # the storyboard's segments give its length; the line's must agree
        total = sum(frames for _, frames in segments)
        if num_latent_frames is not None and num_latent_frames != total:
            unit = "seconds" if "seconds" in data else "latent_frames"
            problems.append(
                f'"{unit}": {json.dumps(data[unit])} is {num_latent_frames} latent frames, but the segments '
                f'of "prompts" add up to {total}; drop "{unit}" (a storyboard is as long as its '
                "segments) or make them agree"
            )
        num_latent_frames = total
    elif num_latent_frames is None and "seconds" not in data and "latent_frames" not in data:
        if defaults.latent_frames is not None:
            num_latent_frames = defaults.latent_frames
        else:
            assert defaults.seconds is not None  # check_defaults guarantees one of the two
            num_latent_frames = defaults.preset.latent_frames_for_seconds(defaults.seconds)
    if num_latent_frames is not None:  # within --max-seconds? (the run-wide length: in check_defaults)
        given = _given_length(data, defaults.preset)
        if segments is not None:
            given = ("the storyboard", defaults.preset.nominal_seconds(num_latent_frames))
        if given and (too_long := _over_max_length(num_latent_frames, *given, defaults)):
            problems.append(too_long)

    # Other keys are cache policy parameters; run-wide ones apply where the line keeps the run's policy.
    policy = data.get("cache_policy", defaults.cache_policy)
    params = {k: v for k, v in data.items() if k not in LINE_FIELDS}
    if policy == defaults.cache_policy:
        params = {**defaults.cache_params, **params}
    cache = _resolve_policy(policy, params, "line", defaults.preset)
    if isinstance(cache, str):
        problems.append(cache)

    if problems:
        raise ValueError("; ".join(problems))
    assert num_latent_frames is not None and isinstance(cache, PolicyParams)
    storyboard = None
    if segments is not None and len(segments) == 1:  # one segment: the plain clip of its prompt
        prompt = segments[0][0]
    elif segments is not None:
        storyboard = _storyboard(segments, recache)
        prompt = STORYBOARD_PROMPT_SEPARATOR.join(storyboard.prompts)
    assert isinstance(prompt, str)
    if seed is None:
        seed = derive_seed(prompt, clip_id)
    if clip_id is None:
        clip_id = clip_id_for(defaults, prompt, seed, num_latent_frames, cache, storyboard)
    return ClipSpec(
        line=line,
        clip_id=clip_id,
        prompt=prompt,
        seed=seed,
        num_latent_frames=num_latent_frames,
        cache=cache,
        config_hash=config_hash_for(defaults, cache, storyboard.recache if storyboard else None),
        storyboard=storyboard,
    )


def _line_length(data: dict[str, Any], preset: ModelPreset, problems: list[str]) -> int | None:
    """The line's own `seconds` or `latent_frames` in latent frames; None if it gives neither or a bad one
    (then the reason is in `problems`)."""
    if "seconds" in data and "latent_frames" in data:
        problems.append('give "seconds" or "latent_frames", not both')
    elif "latent_frames" in data:
        value = data["latent_frames"]
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f'"latent_frames" must be an integer, got {json.dumps(value)}')
        else:
            try:
                preset.check_latent_frames(value)
                return value
            except ValueError as exc:
                problems.append(f'"latent_frames": {exc}')
    elif "seconds" in data:
        try:
            return preset.latent_frames_for_seconds(data["seconds"])
        except ValueError as exc:
            problems.append(f'"seconds": {exc}')
    return None


def _parse_segments(value: Any, preset: ModelPreset, problems: list[str]) -> list[tuple[str, int]] | None:
    """A storyboard's `prompts` -> [(prompt, latent frames)]; None (the reasons in `problems`) if invalid."""
    example = '[{"prompt": "a fox walks through snow", "seconds": 20}, ...]'
    if not isinstance(value, list) or not value:
        got = "an empty list" if isinstance(value, list) else _type_name(value)
        problems.append(f'"prompts" must be a list of segments such as {example}, got {got}')
        return None
    if len(value) > MAX_SEGMENTS:
        problems.append(
            f'"prompts" has {len(value)} segments; a storyboard has at most {MAX_SEGMENTS} '
            "(render a longer story as several clips)"
        )
        return None
    before = len(problems)
    units: set[str] = set()
    found: list[tuple[str, Any]] = []  # (prompt, length in the segment's unit)
    for index, item in enumerate(value):
        where = f'"prompts"[{index}]'
        if not isinstance(item, dict):
            problems.append(
                f'{where} must be an object such as {{"prompt": "...", "seconds": 20}}, got '
                f"{_type_name(item)}"
            )
            continue
        if unknown := sorted(set(item) - set(SEGMENT_FIELDS)):
            problems.append(
                f"{where} has unknown field(s) {', '.join(unknown)}; a segment takes "
                '"prompt" and its length, "seconds" or "latent_frames"'
            )
        text = item.get("prompt")
        if not isinstance(text, str) or not text.strip():
            problems.append(f'{where} "prompt" must be a non-empty string, got {json.dumps(text)}')
            text = ""  # the line is invalid; its other segments are still checked
        given = [unit for unit in ("seconds", "latent_frames") if unit in item]
        if len(given) != 1:
            problems.append(f'{where} needs its length in "seconds" or in "latent_frames" (one of them)')
            continue
        unit, length = given[0], item[given[0]]
        units.add(unit)
        try:
            if unit == "seconds":
                preset.latent_frames_for_seconds(length)  # a positive, finite number
            elif isinstance(length, bool) or not isinstance(length, int):
                raise ValueError(f"must be an integer, got {json.dumps(length)}")
            else:
                preset.check_latent_frames(length)
        except ValueError as exc:
            problems.append(f'{where} "{unit}": {exc}')
            continue
        found.append((text, length))
    if len(units) > 1:
        problems.append('"prompts" mixes "seconds" and "latent_frames"; give every segment the same unit')
    if len(problems) > before:
        return None
    if units == {"latent_frames"}:
        return [(text, length) for text, length in found]
    # Seconds: each segment ends at the chunk boundary nearest to its end in time, the last one where
    # a plain line of the whole length ends, so the clip is exactly as long as its `seconds` say.
    ends = list(itertools.accumulate(length for _, length in found))
    boundaries = [preset.chunk_boundary_nearest(end) for end in ends[:-1]]
    boundaries.append(preset.latent_frames_for_seconds(ends[-1]))
    segments = []
    for index, ((text, length), start, end) in enumerate(
        zip(found, [0, *boundaries[:-1]], boundaries, strict=True)
    ):
        if end <= start:
            problems.append(
                f'"prompts"[{index}] is {length:g} s, which leaves it no whole chunk of '
                f"{preset.seconds_per_chunk:g} s (a segment ends at the chunk boundary nearest to its "
                "end); make it longer or join it to a neighbour"
            )
        segments.append((text, end - start))
    return None if len(problems) > before else segments


def _storyboard(segments: list[tuple[str, int]], recache: str) -> Storyboard:
    starts = itertools.accumulate((frames for _, frames in segments), initial=0)
    return Storyboard(
        tuple(Segment(text, first, frames) for (text, frames), first in zip(segments, starts, strict=False)),
        recache,
    )


# ---------------------------------------------------------------------------------------------
# 3. A whole file
# ---------------------------------------------------------------------------------------------


def file_lines(data: bytes) -> Iterator[tuple[int, str | UnicodeDecodeError]]:
    """(line number, text or the reason it is not UTF-8) of each line of a file.

    Only "\n" ends a line (and a "\r" before it is dropped): JSON strings may hold U+2028 or U+0085,
    which `str.splitlines` would split on, and line numbers must be the ones an editor shows. A byte
    order mark before the first line is dropped; one bad byte spoils only its own line.
    """
    for number, raw in enumerate(data.removeprefix(codecs.BOM_UTF8).split(b"\n"), start=1):
        try:
            yield number, raw.removesuffix(b"\r").decode("utf-8")
        except UnicodeDecodeError as exc:
            yield number, exc


def parse_prompts(data: bytes, defaults: RenderDefaults) -> tuple[list[ClipSpec], list[tuple[int, str]]]:
    """Every line checked: (valid clips in file order, [(line, reason)] for the invalid ones).

    A clip id seen before is an error on the later line (naming the first): two lines may not write
    the same video.
    """
    clips: list[ClipSpec] = []
    errors: list[tuple[int, str]] = []
    first_line: dict[str, int] = {}
    for number, raw in file_lines(data):
        if isinstance(raw, UnicodeDecodeError):
            bad = raw.object[raw.start]
            errors.append(
                (
                    number,
                    f"not UTF-8 text (byte {bad:#04x} at column {raw.start + 1}); save the file as UTF-8",
                )
            )
            continue
        if not raw.strip():
            continue
        try:
            clip = parse_line(raw, number, defaults)
        except ValueError as exc:
            errors.append((number, str(exc)))
            continue
        if clip.clip_id in first_line:
            first = first_line[clip.clip_id]
            if '"id"' in raw and json.loads(raw).get("id") is not None:
                reason = f'duplicate id "{clip.clip_id}" (also on line {first}); ids must be unique'
            else:
                reason = (
                    f"same clip as line {first} (same prompt, seed, length and cache policy, so the same "
                    f"id {clip.clip_id}); give one of them another seed or an id"
                )
            errors.append((number, reason))
            continue
        first_line[clip.clip_id] = number
        clips.append(clip)
    return clips, errors


def load_prompts(
    data: bytes, source: str, defaults: RenderDefaults, skip_invalid: bool = False
) -> tuple[list[ClipSpec], list[tuple[int, str]]]:
    """(valid clips, [(line, reason)] of the bad lines) of a prompt file's bytes.

    Raises PromptFileError listing every bad line, unless `skip_invalid` (then the caller reports
    them); a file with no valid line is always an error.
    """
    check_defaults(defaults)
    clips, errors = parse_prompts(data, defaults)
    if (errors and not skip_invalid) or not clips:
        raise PromptFileError(source, errors, len(clips))
    return clips, errors
