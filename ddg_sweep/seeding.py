"""Stable seeds and ids derived from values alone, never from the process or a path."""
from __future__ import annotations

import hashlib
import json


def seed_hash(*parts) -> int:
    """A 31-bit seed that depends only on the printed parts (DomainBed's seed_hash)."""
    text = str(parts).encode()
    return int(hashlib.md5(text).hexdigest(), 16) % (2**31)


def identity_id(identity: dict, digits: int) -> str:
    """The first `digits` hex digits of the SHA-256 of `identity` as canonical JSON (sorted keys,
    no spaces): a job's id (20 digits) and a search's (16; kept so searches started earlier
    resume under their ids)."""
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:digits]
