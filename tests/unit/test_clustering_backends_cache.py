"""umap-learn's jitted functions get numba's on-disk cache, so only a first process compiles them."""

from __future__ import annotations

import sys

from numba.core.dispatcher import Dispatcher

from otel_topics.clustering_backends import _module, cache_jit_functions


def test_every_umap_jit_function_is_cached_after_import() -> None:
    _module("umap")
    dispatchers = [
        value
        for name, module in list(sys.modules.items())
        if module is not None and name.split(".", 1)[0] in ("umap", "pynndescent")
        for value in vars(module).values()
        if isinstance(value, Dispatcher)
    ]
    assert len(dispatchers) > 50
    assert all(type(d._cache).__name__ != "NullCache" for d in dispatchers)
    assert cache_jit_functions(("umap", "pynndescent")) == 0  # idempotent: nothing left to switch on
