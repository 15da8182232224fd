"""IDX reader and writer: round trips, hand-built headers, every corruption."""

from __future__ import annotations

import gzip
import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedsim.data.idx import idx_bytes, idx_sha256, read_idx, write_idx
from fedsim.errors import DataError

IMAGES = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
LABELS = np.array([7, 0, 9, 255], dtype=np.uint8)


def header(code: int, *dims: int) -> bytes:
    return bytes([0, 0, code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


def test_header_is_the_published_layout():
    # train-labels-idx1-ubyte starts 00 00 08 01 00 00 ea 60 (magic 2049, 60000 items)
    assert idx_bytes(np.zeros(60000, np.uint8))[:8] == bytes.fromhex("00000801 0000ea60")
    # train-images-idx3-ubyte: magic 2051, then 60000, 28, 28
    assert idx_bytes(np.zeros((60000, 28, 28), np.uint8))[:16] == bytes.fromhex(
        "00000803 0000ea60 0000001c 0000001c"
    )
    assert idx_bytes(IMAGES) == header(0x08, 2, 3, 4) + bytes(range(24))
    # multi-byte types are stored big-endian
    assert idx_bytes(np.array([1, 258], dtype=np.int32)) == header(0x0C, 2) + bytes.fromhex(
        "00000001 00000102"
    )


@pytest.mark.parametrize("array", [IMAGES, LABELS], ids=["uint8-3d", "uint8-1d"])
@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_round_trip(tmp_path, array, compress):
    path = tmp_path / "file-idx"
    write_idx(path, array, gzip=compress)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == compress
    back = read_idx(path)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable and back.flags.c_contiguous


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.float32, np.float64])
def test_round_trip_other_dtypes(tmp_path, dtype):
    array = (np.arange(-6, 6).reshape(3, 4) * 3).astype(dtype)
    write_idx(tmp_path / "x", array)
    back = read_idx(tmp_path / "x")
    assert back.dtype == np.dtype(dtype)  # native byte order
    np.testing.assert_array_equal(back, array)


def test_gzip_is_detected_by_magic_not_name(tmp_path):
    write_idx(tmp_path / "looks-plain", LABELS, gzip=True)
    write_idx(tmp_path / "looks-compressed.gz", LABELS, gzip=False)
    np.testing.assert_array_equal(read_idx(tmp_path / "looks-plain"), LABELS)
    np.testing.assert_array_equal(read_idx(tmp_path / "looks-compressed.gz"), LABELS)


def test_gzip_output_is_deterministic(tmp_path):
    write_idx(tmp_path / "a", IMAGES, gzip=True)
    write_idx(tmp_path / "b", IMAGES, gzip=True)
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()


def test_idx_sha256_is_the_hash_of_the_uncompressed_file(tmp_path):
    write_idx(tmp_path / "x", IMAGES)
    assert idx_sha256(IMAGES) == hashlib.sha256((tmp_path / "x").read_bytes()).hexdigest()
    # non-contiguous input hashes as its contiguous copy
    strided = np.arange(40, dtype=np.uint8).reshape(4, 10)[:, ::2]
    assert idx_sha256(strided) == hashlib.sha256(idx_bytes(strided.copy())).hexdigest()


def test_expected_ndim_and_dtype(tmp_path):
    write_idx(tmp_path / "x", IMAGES)
    assert read_idx(tmp_path / "x", expected_ndim=3, expected_dtype=np.uint8).shape == (2, 3, 4)


GOOD = header(0x08, 2, 3) + bytes(6)
CORRUPT = {
    "bad magic": (b"\x01" + GOOD[1:], "bad IDX magic number"),
    "bad magic second byte": (b"\x00\x08" + GOOD[2:], "expected the first two bytes to be 0000"),
    "unknown dtype code": (header(0x07, 2, 3) + bytes(6), "unknown IDX dtype code 0x07"),
    "zero dimensions": (header(0x08), "0 dimensions"),
    "truncated magic": (b"\x00\x00", "truncated IDX header"),
    "truncated dims": (header(0x08, 2, 3)[:9], "truncated IDX header: expected 12 bytes"),
    "truncated payload": (GOOD[:-1], "truncated IDX payload"),
    "trailing bytes": (GOOD + b"\x00\x00", "trailing bytes after IDX payload"),
    "empty file": (b"", "truncated IDX header"),
    "corrupt gzip": (
        (lambda z: z[:20] + bytes([z[20] ^ 0xFF]) + z[21:])(gzip.compress(GOOD * 50, mtime=0)),
        "corrupt gzip",
    ),
    "truncated gzip": (gzip.compress(GOOD, mtime=0)[:-6], "corrupt gzip"),
    "trailing bytes inside gzip": (gzip.compress(GOOD + b"x", mtime=0), "1 extra"),
}


@pytest.mark.parametrize("case", list(CORRUPT))
def test_corruption_is_a_data_error_naming_the_file(tmp_path, case):
    raw, phrase = CORRUPT[case]
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(raw)
    with pytest.raises(DataError) as info:
        read_idx(path)
    message = str(info.value)
    assert str(path) in message
    assert phrase in message


def test_mismatch_messages_say_expected_and_found(tmp_path):
    path = tmp_path / "labels-idx"
    path.write_bytes(GOOD[:-2])
    with pytest.raises(DataError, match=r"need 6 bytes, found 4"):
        read_idx(path)
    write_idx(path, LABELS)
    with pytest.raises(
        DataError, match=r"labels-idx: IDX header declares 1 dimension\(s\); expected 3"
    ):
        read_idx(path, expected_ndim=3)
    write_idx(path, np.arange(4, dtype=np.int32))
    with pytest.raises(
        DataError, match=r"labels-idx: IDX dtype code 0x0c \(int32\): expected uint8"
    ):
        read_idx(path, expected_dtype=np.uint8)


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="nope-idx: cannot read"):
        read_idx(tmp_path / "nope-idx")


def test_write_rejects_what_idx_cannot_store(tmp_path):
    with pytest.raises(ValueError, match="cannot store dtype"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.uint16))
    with pytest.raises(ValueError, match="1 to 255 dimensions"):
        write_idx(tmp_path / "x", np.uint8(3))
    assert not (tmp_path / "x").exists()


@settings(max_examples=40, deadline=None)
@given(
    array=hnp.arrays(np.uint8, hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=6)),
    compress=st.booleans(),
)
def test_round_trip_property(tmp_path_factory, array, compress):
    path = tmp_path_factory.mktemp("idx") / "a"
    write_idx(path, array, gzip=compress)
    back = read_idx(path, expected_ndim=array.ndim, expected_dtype=np.uint8)
    assert back.shape == array.shape
    np.testing.assert_array_equal(back, array)
