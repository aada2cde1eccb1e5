"""KV cache policies, chosen by name in the render config (design.md, "KV cache policies")."""

from __future__ import annotations

import inspect
from typing import Any

from pipeline.cache.base import CacheGeometry, ForwardKind, KVCache
from pipeline.cache.deep_forcing import DeepForcingCache
from pipeline.cache.deep_sink import DeepSinkCache
from pipeline.cache.fifo import FifoCache
from pipeline.cache.rolling_sink import RollingSinkCache
from pipeline.cache.sink import SinkCache
from pipeline.model.rope import RotaryEmbedding3D

POLICIES: dict[str, type[KVCache]] = {
    policy.name: policy
    for policy in (FifoCache, SinkCache, RollingSinkCache, DeepSinkCache, DeepForcingCache)
}


def policy_parameters(name: str) -> dict[str, Any]:
    """The tunable parameters of a policy and their defaults (for validation and documentation)."""
    signature = inspect.signature(_policy_class(name).__init__)
    return {
        p.name: p.default
        for p in signature.parameters.values()
        if p.name not in ("self", "geometry", "rope") and p.default is not inspect.Parameter.empty
    }


def make_cache(name: str, geometry: CacheGeometry, rope: RotaryEmbedding3D, **params: Any) -> KVCache:
    """Build policy `name` with `params`; unknown names or parameters raise ValueError naming them."""
    allowed = policy_parameters(name)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"cache policy {name!r} has no parameter(s) {unknown}; it takes {sorted(allowed)}")
    return _policy_class(name)(geometry, rope, **params)


def _policy_class(name: str) -> type[KVCache]:
    if name not in POLICIES:
        raise ValueError(f"unknown cache policy {name!r}; choose one of {sorted(POLICIES)}")
    return POLICIES[name]


__all__ = ["POLICIES", "CacheGeometry", "ForwardKind", "KVCache", "make_cache", "policy_parameters"]
