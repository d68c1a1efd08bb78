"""Token authentication with a short in-process cache.

Every API call authenticates; DRF's TokenAuthentication looks the token and its user up each
time. Caching the answer for TUNIX_TOKEN_CACHE_SECONDS saves that query on the hottest paths.
The cost: a deleted token or a deactivated user keeps working for at most that long in each
process (0 turns the cache off).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from django.conf import settings
from rest_framework.authentication import TokenAuthentication

_cache: dict[str, tuple[float, Any]] = {}
_lock = threading.Lock()
_MAX_ENTRIES = 10_000


class CachedTokenAuthentication(TokenAuthentication):
    def authenticate_credentials(self, key: str) -> tuple[Any, Any]:
        ttl = settings.TUNIX_TOKEN_CACHE_SECONDS
        if ttl <= 0:
            return super().authenticate_credentials(key)
        now = time.monotonic()
        hit = _cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]  # type: ignore[no-any-return]
        answer = super().authenticate_credentials(key)  # raises for a bad or inactive token
        with _lock:
            if len(_cache) >= _MAX_ENTRIES:
                _cache.clear()
            _cache[key] = (now + ttl, answer)
        return answer


def clear_cache() -> None:
    with _lock:
        _cache.clear()
