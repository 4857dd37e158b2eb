"""Stable seeds derived from any tuple of values (DomainBed's seed_hash)."""
from __future__ import annotations

import hashlib


def seed_hash(*parts) -> int:
    """A 31-bit seed that depends only on the printed parts, never on the process."""
    text = str(parts).encode()
    return int(hashlib.md5(text).hexdigest(), 16) % (2**31)
