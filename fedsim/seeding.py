"""Random streams keyed by purpose.

Every random decision in fedsim draws from a stream named by what it is for:
``rng(seed, "partition")``, ``rng(seed, "client", k, "round", r)``. A stream
depends only on the scenario seed and its key, never on how many numbers other
code drew before, so results do not depend on call order and a run resumed at
round r reproduces rounds r+1.. bit for bit (fedjax's habit).

No library module calls ``np.random.seed`` or ``torch.manual_seed``.
"""

from __future__ import annotations

import functools
import hashlib
from typing import TYPE_CHECKING

import numpy as np

# torch is imported by torch_generator alone: the method registry, which
# validating a scenario reads, imports this module and must not import torch
if TYPE_CHECKING:
    import torch

KeyPart = str | int


@functools.lru_cache(maxsize=1024)
def _str_words(part: str) -> tuple[int, ...]:
    """A string key part's words: the type tag 1, then the first 16 bytes of
    its SHA-256 as four little-endian 32-bit words (cached: a run asks for
    the same few names thousands of times)."""
    digest = hashlib.sha256(part.encode()).digest()
    return (1, *(int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)))


def _key_words(key: tuple[KeyPart, ...]) -> list[int]:
    """Encode a key as 32-bit words; strings go through SHA-256 so "a" != 1."""
    words: list[int] = []
    for part in key:
        if isinstance(part, bool) or not isinstance(part, (str, int, np.integer)):
            raise TypeError(f"seed key parts must be str or int, got {part!r}")
        if isinstance(part, str):
            words.extend(_str_words(part))
        else:
            value = int(part)
            if value < 0:
                raise ValueError(f"seed key integers must be >= 0, got {value}")
            words.append(2)  # type tag: integer
            words.extend([value & 0xFFFFFFFF, value >> 32])
    return words


def seed_sequence(seed: int, *key: KeyPart) -> np.random.SeedSequence:
    """The SeedSequence of stream ``key`` under scenario ``seed``.

    Its entropy is the words ``[seed, *key words]``; every key word is below
    2**32, so for a seed below 2**32 they go in as one uint32 array, which
    numpy mixes into exactly the state of the list of Python ints (about a
    third of the time: numpy coerces a list int by int); other seeds keep the
    list (numpy splits a larger int into words, and rejects a negative one).
    """
    words = _key_words(key)
    if 0 <= seed < 2**32:
        return np.random.SeedSequence(np.array([seed, *words], dtype=np.uint32))
    return np.random.SeedSequence([int(seed), *words])


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
