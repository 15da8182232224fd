"""The IDX file format of MNIST and Fashion-MNIST: a strict reader and a writer.

An IDX file is a 4-byte magic number, one big-endian uint32 per dimension and
the payload, row-major, big-endian::

    magic = 0x00 0x00 <dtype code> <ndim>
    dims  = ndim x uint32 (big-endian)
    data  = prod(dims) x itemsize bytes

with the dtype codes 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
0x0D float32 and 0x0E float64 (LeCun, Cortes & Burges, "The MNIST database of
handwritten digits", file format section). Files may be gzip-compressed; the
reader recognises gzip by its magic bytes 1f 8b, never by the file name.

The reader checks everything it can: the two zero bytes of the magic number,
the dtype code, the number of dimensions (against ``expected_ndim`` when
given), a complete header, and a payload of exactly ``prod(dims) * itemsize``
bytes -- a truncated file and one with trailing garbage are both errors. Every
error is a `fedsim.errors.DataError` whose message names the file and says what
was expected and what was found.
"""

from __future__ import annotations

import gzip as gzip_module
import hashlib
import os
import zlib
from pathlib import Path

import numpy as np

from fedsim.errors import DataError
from fedsim.store import write_bytes

GZIP_MAGIC = b"\x1f\x8b"

#: IDX dtype code -> numpy dtype (big-endian, as stored in the file).
DTYPE_BY_CODE: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_CODE_BY_KIND: dict[tuple[str, int], int] = {
    (dtype.kind, dtype.itemsize): code for code, dtype in DTYPE_BY_CODE.items()
}


def _code_of(dtype: np.dtype) -> int:
    """The IDX dtype code of a numpy dtype; ValueError if IDX cannot store it."""
    code = _CODE_BY_KIND.get((dtype.kind, dtype.itemsize))
    if code is None:
        supported = ", ".join(str(d.newbyteorder("=")) for d in DTYPE_BY_CODE.values())
        raise ValueError(f"IDX cannot store dtype {dtype}; supported: {supported}")
    return code


def idx_header(array: np.ndarray) -> bytes:
    """The IDX header (magic number and dimensions) that describes ``array``.

    Raises:
        ValueError: the dtype has no IDX code, the array is 0-dimensional, has
            more than 255 dimensions or a dimension of 2**32 or more.
    """
    if array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"IDX needs 1 to 255 dimensions, got {array.ndim}")
    if any(size >= 1 << 32 for size in array.shape):
        raise ValueError(f"IDX dimensions must be < 2**32, got shape {array.shape}")
    magic = bytes([0, 0, _code_of(array.dtype), array.ndim])
    return magic + np.asarray(array.shape, dtype=">u4").tobytes()


def idx_bytes(array: np.ndarray) -> bytes:
    """The uncompressed IDX encoding of ``array`` (header + big-endian payload)."""
    array = np.asarray(array)
    stored = DTYPE_BY_CODE[_code_of(array.dtype)]
    return idx_header(array) + np.ascontiguousarray(array, dtype=stored).tobytes()


def idx_sha256(array: np.ndarray) -> str:
    """Hex SHA-256 of ``array``'s uncompressed IDX encoding.

    For the published datasets this equals the SHA-256 of the *decompressed*
    ``*-ubyte`` files, which is how fedsim recognises the true MNIST and
    Fashion-MNIST whatever packaging (gzip level, pickle, npz) they came in.
    """
    array = np.asarray(array)
    digest = hashlib.sha256(idx_header(array))
    # uint8 needs no byte swap, so this hashes the array's memory without a copy.
    digest.update(np.ascontiguousarray(array, dtype=DTYPE_BY_CODE[_code_of(array.dtype)]).data)
    return digest.hexdigest()


def _decompress(raw: bytes, name: str) -> bytes:
    try:
        return gzip_module.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{name}: corrupt gzip data ({exc})") from exc


def read_idx(
    path: str | os.PathLike,
    *,
    expected_ndim: int | None = None,
    expected_dtype: np.dtype | type | str | None = None,
) -> np.ndarray:
    """Read an IDX file, plain or gzip-compressed, into a native-endian array.

    Args:
        path: the file; gzip is detected by the magic bytes 1f 8b.
        expected_ndim: if given, the header must declare this many dimensions.
        expected_dtype: if given, the header's dtype code must be this dtype
            (e.g. ``np.uint8`` for the MNIST images and labels).

    Returns:
        A writable C-contiguous array with the header's shape and dtype, in
        native byte order.

    Raises:
        DataError: the file cannot be read, is corrupt gzip, has a bad magic
            number, an unknown or unexpected dtype code, an unexpected number of
            dimensions, a truncated header, or a payload shorter or longer than
            the product of its dimensions. The message names the file.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read IDX file ({exc.strerror or exc})") from exc
    return decode_idx(
        raw, name=str(path), expected_ndim=expected_ndim, expected_dtype=expected_dtype
    )


def decode_idx(
    raw: bytes,
    *,
    name: str,
    expected_ndim: int | None = None,
    expected_dtype: np.dtype | type | str | None = None,
) -> np.ndarray:
    """Decode the bytes of an IDX file (plain or gzip); see `read_idx`.

    ``name`` (a path or URL) starts every error message.

    Raises:
        DataError: as `read_idx`.
    """
    data = _decompress(raw, name) if raw[:2] == GZIP_MAGIC else raw

    if len(data) < 4:
        raise DataError(
            f"{name}: truncated IDX header: expected at least 4 bytes of magic number, "
            f"found {len(data)}"
        )
    zero0, zero1, code, ndim = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0:
        raise DataError(
            f"{name}: bad IDX magic number {data[:4].hex()}: expected the first two bytes "
            f"to be 0000, found {data[:2].hex()}"
        )
    if code not in DTYPE_BY_CODE:
        known = ", ".join(f"0x{c:02x}" for c in DTYPE_BY_CODE)
        raise DataError(f"{name}: unknown IDX dtype code 0x{code:02x}; expected one of {known}")
    dtype = DTYPE_BY_CODE[code]
    if expected_dtype is not None:
        want = np.dtype(expected_dtype)
        if (want.kind, want.itemsize) != (dtype.kind, dtype.itemsize):
            raise DataError(
                f"{name}: IDX dtype code 0x{code:02x} ({dtype.newbyteorder('=')}): "
                f"expected {want} (code 0x{_code_of(want):02x})"
            )
    if ndim == 0:
        raise DataError(f"{name}: IDX header declares 0 dimensions; expected at least 1")
    if expected_ndim is not None and ndim != expected_ndim:
        raise DataError(
            f"{name}: IDX header declares {ndim} dimension(s); expected {expected_ndim}"
        )

    header_bytes = 4 + 4 * ndim
    if len(data) < header_bytes:
        raise DataError(
            f"{name}: truncated IDX header: expected {header_bytes} bytes for {ndim} "
            f"dimension(s), found {len(data)}"
        )
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    payload_bytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    found_bytes = len(data) - header_bytes
    if found_bytes < payload_bytes:
        raise DataError(
            f"{name}: truncated IDX payload: dimensions {shape} of {dtype.newbyteorder('=')} "
            f"need {payload_bytes} bytes, found {found_bytes}"
        )
    if found_bytes > payload_bytes:
        raise DataError(
            f"{name}: trailing bytes after IDX payload: dimensions {shape} of "
            f"{dtype.newbyteorder('=')} need {payload_bytes} bytes, found {found_bytes} "
            f"({found_bytes - payload_bytes} extra)"
        )
    flat = np.frombuffer(data, dtype=dtype, offset=header_bytes)
    return flat.reshape(shape).astype(dtype.newbyteorder("="), copy=True)


def write_idx(path: str | os.PathLike, array: np.ndarray, *, gzip: bool = False) -> None:
    """Write ``array`` as an IDX file, atomically; gzip-compressed if ``gzip``.

    The gzip stream carries no time stamp (``mtime=0``), so equal arrays give
    equal files.

    Raises:
        ValueError: the array's dtype or shape cannot be stored in IDX.
    """
    data = idx_bytes(np.asarray(array))
    if gzip:
        data = gzip_module.compress(data, compresslevel=6, mtime=0)
    write_bytes(path, data)
