"""Issue 15's speed work on time-varying links and cells changed no number.

The digests below were computed with the code before that work (the compiled
event loop scanning all flows and calling its helpers, streams seeded from a
list of Python ints) and again after it: the same. A change that moves any
value of these simulations, by one ulp, fails here; `fedsim.seeding`'s
faster seeding is checked against numpy's list path directly."""

import hashlib

import numpy as np
import pytest

from fedsim import seeding
from fedsim.bench.system import _LENET_BYTES, dynamic_system
from fedsim.system.payload import Payload
from fedsim.system.sim import simulate
from fedsim.system.spec import SystemConfig

#: sha256 (first 16 hex digits) of rounds + timeline, per cell count: before == after.
PINNED = {0: "b3c0163c765a012a", 4: "bbee927e289e5010"}


def _digest(result) -> str:
    h = hashlib.sha256()
    for frame in (result.rounds, result.timeline):
        for name in frame.columns:
            col = frame[name].to_numpy()
            h.update(name.encode())
            h.update(col.astype(str).tobytes() if col.dtype == object else np.ascontiguousarray(col).tobytes())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("cells", [0, 4])
def test_dynamic_and_cell_simulations_are_bit_identical_to_before(cells):
    # LTE-like links (and 4 cells of 60/15 Mbps), 30 of 40 clients per round, dropouts,
    # a deadline that cuts some rounds and unavailable clients: every branch of a round
    raw = dynamic_system(40, cells).model_dump()
    raw["rounds"] = {"participation": 0.75, "dropout": 0.1, "deadline": "40 s"}
    raw["clients"]["availability"] = 0.9
    result = simulate(SystemConfig.model_validate(raw), client_samples=np.full(40, 400),
                      payload=Payload(down_bytes=_LENET_BYTES, up_bytes=_LENET_BYTES), work_fraction=1.0,
                      rounds=12, seed=3)
    reasons = set(result.timeline["drop_reason"])
    assert {"unavailable", "dropout", "deadline"} <= reasons  # the digest covers more than the happy path
    assert len(set(result.rounds["duration_s"].round(9))) > 1  # rounds differ (those cut end at the deadline)
    assert _digest(result) == PINNED[cells]


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**31, 2**32 - 1, 2**32, 2**40 + 7, 2**64 + 3])
@pytest.mark.parametrize("key", [("bandwidth", "downlink", 7), ("round", 3, "selection"), (), ("x", 2**33, "y")])
def test_seeding_matches_numpys_list_path(seed, key):
    """A seed below 2**32 goes to numpy as a uint32 array, larger ones as the
    list: both give the state of ``SeedSequence([seed, *words])``."""
    words = [seed, *seeding._key_words(key)]
    expected = np.random.SeedSequence(words).generate_state(8)
    assert (seeding.seed_sequence(seed, *key).generate_state(8) == expected).all()
    reference = np.random.Generator(np.random.PCG64(np.random.SeedSequence(words)))
    assert (seeding.rng(seed, *key).random(4) == reference.random(4)).all()


def test_seeding_still_rejects_bad_keys_and_seeds():
    with pytest.raises(ValueError, match=">= 0"):
        seeding.rng(0, "bandwidth", -1)
    with pytest.raises(TypeError):
        seeding.rng(0, 1.5)
    with pytest.raises(ValueError):  # numpy: a negative seed
        seeding.seed_sequence(-1, "a")
    # a string's words are cached, not shared between strings
    assert seeding._key_words(("a",)) != seeding._key_words(("b",))
    assert seeding._key_words(("a",)) == [1, *seeding._str_words("a")[1:]]
