"""One seeded source of randomness per purpose.

Every random draw of a run takes its seed from ``derive_seed(seed, stage, purpose)``: the
run's seed, the stage it happens in, and what it is for ("data", "init", "af.reset/3",
"replay.buffer", ...). Distinct purposes get independent seeds (a hash, not arithmetic that
can collide), and a resumed run derives exactly the same ones.
"""
from __future__ import annotations

import hashlib

MODULUS = 2**32  # numpy (accelerate.set_seed) takes 32-bit seeds


def derive_seed(seed: int, stage: str, purpose: str) -> int:
    """A 32-bit seed for ``purpose`` in ``stage`` of a run seeded with ``seed``."""
    digest = hashlib.sha256(f"{int(seed)}\x1f{stage}\x1f{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % MODULUS
