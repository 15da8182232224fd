"""Random streams keyed by purpose.

Every random decision in fedsim draws from a stream named by what it is for:
``rng(seed, "partition")``, ``rng(seed, "client", k, "round", r)``. A stream
depends only on the scenario seed and its key, never on how many numbers other
code drew before, so results do not depend on call order and a run resumed at
round r reproduces rounds r+1.. bit for bit (fedjax's habit).

No library module calls ``np.random.seed`` or ``torch.manual_seed``.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

# torch is imported by torch_generator alone: the method registry, which
# validating a scenario reads, imports this module and must not import torch
if TYPE_CHECKING:
    import torch

KeyPart = str | int


def _key_words(key: tuple[KeyPart, ...]) -> list[int]:
    """Encode a key as 32-bit words; strings go through SHA-256 so "a" != 1."""
    words: list[int] = []
    for part in key:
        if isinstance(part, bool) or not isinstance(part, (str, int, np.integer)):
            raise TypeError(f"seed key parts must be str or int, got {part!r}")
        if isinstance(part, str):
            digest = hashlib.sha256(part.encode()).digest()
            words.append(1)  # type tag: string
            words.extend(int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4))
        else:
            value = int(part)
            if value < 0:
                raise ValueError(f"seed key integers must be >= 0, got {value}")
            words.append(2)  # type tag: integer
            words.extend([value & 0xFFFFFFFF, value >> 32])
    return words


def seed_sequence(seed: int, *key: KeyPart) -> np.random.SeedSequence:
    """The SeedSequence of stream ``key`` under scenario ``seed``."""
    return np.random.SeedSequence([int(seed), *_key_words(key)])


def rng(seed: int, *key: KeyPart) -> np.random.Generator:
    """A numpy Generator (PCG64) for stream ``key`` under scenario ``seed``."""
    return np.random.Generator(np.random.PCG64(seed_sequence(seed, *key)))


def torch_seed(seed: int, *key: KeyPart) -> int:
    """A 63-bit integer seed for torch generators of stream ``key``."""
    return int(seed_sequence(seed, *key).generate_state(2, np.uint64)[0] >> np.uint64(1))


def torch_generator(seed: int, *key: KeyPart, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch.Generator on ``device`` seeded for stream ``key``."""
    import torch

    gen = torch.Generator(device=device)
    gen.manual_seed(torch_seed(seed, *key))
    return gen
