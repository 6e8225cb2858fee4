"""Caches keyed by what an event says (a model name, an operation id): a process sees a handful of
such names, so reading each once pays, but a sender writes them, so the cache keeps only names no
longer than any real one, and a bounded number of them (docs/security.md, "Bounded input")."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

LONGEST_NAME = 200  # characters: the longest name column (usage_records.model, .operation)


def short_key_cache(maxsize: int) -> Callable[[Callable[[str | None], T]], Callable[[str | None], T]]:
    """``functools.lru_cache(maxsize)`` for a function of one name, which reads a name longer than
    ``LONGEST_NAME`` each time instead of keeping it (``cache_info``/``cache_clear`` as lru_cache's)."""

    def decorate(read: Callable[[str | None], T]) -> Callable[[str | None], T]:
        cached = functools.lru_cache(maxsize=maxsize)(read)

        @functools.wraps(read)
        def lookup(name: str | None) -> T:
            return cached(name) if name is None or len(name) <= LONGEST_NAME else read(name)

        wrapper: Any = lookup
        wrapper.cache_info, wrapper.cache_clear = cached.cache_info, cached.cache_clear
        return lookup

    return decorate
