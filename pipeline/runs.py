"""Run records: what one invocation of the driver did, as one small versioned JSON file per run.

    runs/<run_id>.json     written by jobs/render.py at the end of every run that got past planning,
                           also on Ctrl-C (exit 130) and when the driver itself fails

The metrics table says what each rendered clip became; only the driver knows the clips it never
rendered: those already done (skipped), those another run held, those that never came back (lost). A
rerun of the same run id (`--run-id`) replaces the record: it describes the run's last invocation, and
the clips its earlier invocations finished count as `resumed`, their rows being this run's already.

Readers: pipeline/report (the run summary) and pipeline/query (the view `runs`). Rules for the version:
bump RUN_RECORD_VERSION when fields are added, give new fields a default, and readers of a record of an
older version take that default for the fields it lacks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import typing
from dataclasses import dataclass
from typing import Any

from pipeline.spec.clip import ID_RULE, is_valid_id
from pipeline.storage import OutputTarget

logger = logging.getLogger(__name__)

RUN_RECORD_VERSION = 1
RUNS_PREFIX = "runs/"
RECORD_SUFFIX = ".json"
JSON_CONTENT_TYPE = "application/json"


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    prompts: str  # the prompt file as passed: a local path or s3:// URI
    prompt_lines: int  # lines in it, as an editor counts them (blank and invalid lines included)
    clips: int  # valid clips read from it: the run's plan
    skipped: int  # already done by another, earlier run: not rendered
    resumed: int  # already done by an earlier invocation of this run id: not rendered again
    to_render: int  # clips this invocation set out to render (clips - skipped - resumed)
    ok: int  # of those: rendered ok
    failed: int  # rendered, failed (a metrics row with the reason)
    held: int  # another run had claimed them (rerun later)
    lost: int  # never came back: the pipeline stopped, or the run was interrupted (exit 130)
    started_at: dt.datetime  # UTC, when the driver planned the run
    finished_at: dt.datetime  # UTC, when it wrote this record
    wall_s: float
    exit_code: int  # 0 all ok, 1 a clip failed or the pipeline stopped, 2 refused, 130 Ctrl-C
    model: str  # model preset
    cache_policy: str  # the run's default policy (a line may name its own)
    workers: int  # render actors; 0 when nothing was rendered
    gpus_per_worker: float  # 0 on CPU actors
    version: int = RUN_RECORD_VERSION

    def to_json(self) -> bytes:
        values = {
            name: value.isoformat() if isinstance(value, dt.datetime) else value
            for name, value in dataclasses.asdict(self).items()
        }
        return (json.dumps(values, indent=2) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, source: str) -> RunRecord:
        """ValueError naming `source`, the field and the value when the file is not a run record."""
        try:
            values = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"run record {source} is not JSON ({exc})") from None
        if not isinstance(values, dict):
            raise ValueError(f"run record {source} must be a JSON object, got {type(values).__name__}")
        fields: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            if field.name in values:
                where = f"run record {source} field {field.name!r}"
                fields[field.name] = _parse(values[field.name], FIELD_TYPES[field.name], where)
            elif field.default is dataclasses.MISSING:  # fields added later have defaults
                raise ValueError(f"run record {source} lacks the field {field.name!r}")
        return cls(**fields)


FIELD_TYPES: dict[str, type] = typing.get_type_hints(RunRecord)  # name -> int, float, str or datetime


def _parse(value: object, kind: type, where: str) -> object:
    if kind is dt.datetime:
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                if (parsed := dt.datetime.fromisoformat(value)).tzinfo is not None:
                    return parsed
    elif isinstance(value, bool):  # JSON true is no number
        pass
    elif kind is float and isinstance(value, int | float):
        return float(value)
    elif isinstance(value, kind):
        return value
    expected = "an ISO 8601 time with its UTC offset" if kind is dt.datetime else f"a JSON {kind.__name__}"
    raise ValueError(f"{where} must be {expected}, got {value!r}")


def run_record_key(run_id: str) -> str:
    if not is_valid_id(run_id):
        raise ValueError(f"run_id={run_id!r} must be {ID_RULE}: it names the file {RUNS_PREFIX}<run_id>.json")
    return f"{RUNS_PREFIX}{run_id}{RECORD_SUFFIX}"


def write_run_record(target: OutputTarget, record: RunRecord) -> str:
    """Store the record (replacing the run's earlier one); its URI."""
    return target.put_bytes(record.to_json(), run_record_key(record.run_id), JSON_CONTENT_TYPE).uri


def read_run_record(target: OutputTarget, run_id: str) -> RunRecord | None:
    """The run's record; None if it has none, or an unreadable one (logged: the run is then reported as
    one without a record, as runs from before records were written are)."""
    key = run_record_key(run_id)
    try:
        return RunRecord.from_json(target.read_bytes(key), target.url_for(key))
    except FileNotFoundError:
        return None
    except ValueError as exc:
        logger.warning("%s; run %s is reported as a run without a record", exc, run_id)
        return None


def recorded_run_ids(target: OutputTarget) -> list[str]:
    """The run ids that have a record file under the target."""
    names = [key.removeprefix(RUNS_PREFIX) for key in target.list_keys(RUNS_PREFIX)]
    ids = [name.removesuffix(RECORD_SUFFIX) for name in names if name.endswith(RECORD_SUFFIX)]
    return [run_id for run_id in ids if is_valid_id(run_id)]
