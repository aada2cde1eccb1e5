"""Reading the official checkpoint files and loading them strictly into our modules.

All checkpoint surgery lives here: which top-level key holds the weights, which wrapper prefixes to
strip, which known extra tensors a file carries that we do not build (the VAE encoder). A load either
fills every parameter with a tensor of the right name and shape, or raises `CheckpointError` naming
the file and the first offending keys; it never leaves a half-loaded model behind.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import torch

T = TypeVar("T")

# Wrappers that training code puts around the module tree: the `WanDiffusionWrapper` attribute
# (`model.`, SF:utils/wan_wrapper.py), torch.compile (`_orig_mod.`) and FSDP (`_fsdp_wrapped_module.`).
WRAPPER_PREFIXES = ("model.", "_orig_mod.", "_fsdp_wrapped_module.")
_SHOW = 8  # how many offending keys an error lists per category


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or does not match the module it is loaded into."""


def read_state_dict(path: Path, keys: Sequence[str] = ()) -> dict[str, torch.Tensor]:
    """Read a `.pt`/`.pth` torch pickle or a `.safetensors` file into a flat name -> tensor dict.

    `keys` lists nested state dicts to look for, in order of preference (the Self Forcing file holds
    `generator_ema` and `generator`); a flat file (safetensors, a converted `.pt`) needs none.
    """
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            data: object = load_file(str(path))
        else:
            # mmap keeps the 11 GB text encoder file out of RAM until tensors are assigned.
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # corrupt pickle, truncated file, not a checkpoint at all
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path} holds a {type(data).__name__}, expected a dict of tensors")
    nested = sorted(str(k) for k, v in data.items() if isinstance(v, Mapping))
    if nested:
        key = next((k for k in keys if k in nested), None)
        if key is None:
            raise CheckpointError(f"{path} has none of the state dicts {list(keys)}; it holds {nested}")
        data = data[key]
    assert isinstance(data, Mapping)
    tensors = {str(k): v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path} contains no tensors")
    return tensors


def tensor_shapes(path: Path, keys: Sequence[str] = ()) -> dict[str, tuple[int, ...]]:
    """Names and shapes of a checkpoint's tensors without reading their data: the safetensors header,
    or the torch pickle memory-mapped (its tensors are never touched)."""
    if path.suffix == ".safetensors" and path.is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}  # noqa: SIM118
        except Exception as exc:
            raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    return {name: tuple(tensor.shape) for name, tensor in read_state_dict(path, keys).items()}


def strip_wrapper_prefixes(state_dict: Mapping[str, T]) -> dict[str, T]:
    """Remove the wrapper prefixes wherever they appear (FSDP inserts its marker mid-name)."""
    out = {}
    for name, tensor in state_dict.items():
        clean = name.replace("_fsdp_wrapped_module.", "").replace("_orig_mod.", "")
        while clean.startswith(WRAPPER_PREFIXES):
            clean = clean.split(".", 1)[1]
        out[clean] = tensor
    return out


def check_shapes(
    module: torch.nn.Module,
    shapes: Mapping[str, tuple[int, ...]],
    source: Path | str,
    ignore_prefixes: Iterable[str] = (),
) -> None:
    """CheckpointError unless `shapes` (name -> shape, from a file) are exactly `module`'s tensors.

    Tensors whose names start with `ignore_prefixes` are parts of the file we deliberately do not
    build (e.g. the VAE encoder); any other difference in names or shapes is an error naming them.
    """
    ignore = tuple(ignore_prefixes)
    given = {k: v for k, v in shapes.items() if not k.startswith(ignore)}
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    missing = sorted(expected.keys() - given.keys())
    unexpected = sorted(given.keys() - expected.keys())
    mismatched = sorted(
        f"{k}: file {given[k]} vs model {expected[k]}"
        for k in expected.keys() & given.keys()
        if given[k] != expected[k]
    )
    if missing or unexpected or mismatched:
        parts = [f"{source} does not match {type(module).__name__} ({len(expected)} tensors expected):"]
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)):
            if items:
                more = f" (+{len(items) - _SHOW} more)" if len(items) > _SHOW else ""
                parts.append(f"  {len(items)} {label}: {', '.join(items[:_SHOW])}{more}")
        raise CheckpointError("\n".join(parts))


def load_strict(
    module: torch.nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    source: Path | str,
    ignore_prefixes: Iterable[str] = (),
) -> None:
    """Assign `state_dict` to `module` (which may live on the meta device), all or nothing
    (`check_shapes` says what does not match)."""
    ignore = tuple(ignore_prefixes)
    check_shapes(module, {k: tuple(v.shape) for k, v in state_dict.items()}, source, ignore)
    given = {k: v for k, v in state_dict.items() if not k.startswith(ignore)}
    module.load_state_dict(given, strict=True, assign=True)
