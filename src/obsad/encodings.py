"""Arrow dictionary encodings, and a memo that lets one scoring call encode each text column once.

Scoring a batch hashes the same text columns in several places: the loader's type screens (which values a
sample of the column holds), the window view's entity keys and the encoder's vocabularies. Inside
:func:`shared_encodings`, :func:`dictionary_codes` encodes an array the first time and hands the same codes to
every later caller. This module imports only numpy and pyarrow, so the loader can use it without the feature
modules.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: Below this many values an array is encoded each time (cheap) and never kept.
MEMO_MIN_VALUES = 256
_SHORTCUTS = True


def codes_of(indices: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """An integer Arrow array (dictionary indices, ``index_in`` positions) as int64 with -1 where null: what
    ``pc.fill_null(indices, -1).to_numpy()`` gives, read from the array's buffers instead of two compute calls
    (~8 µs against ~2-6 µs; a batch of a thousand events takes ~100 such arrays)."""
    if isinstance(indices, pa.ChunkedArray):
        indices = indices.combine_chunks()
    n, offset = len(indices), indices.offset
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    data = np.frombuffer(indices.buffers()[1], dtype=indices.type.to_pandas_dtype())[offset: offset + n]
    if indices.null_count == 0:
        return data.astype(np.int64)
    bits = np.frombuffer(indices.buffers()[0], dtype=np.uint8)
    valid = np.unpackbits(bits, bitorder="little", count=offset + n)[offset:].view(bool)
    return np.where(valid, data, -1).astype(np.int64, copy=False)


_ENCODINGS: dict | None = None
_ENCODING_USERS = 0
_ENCODING_LOCK = threading.Lock()


@contextmanager
def shared_encodings():
    """Within this block (one scoring call, or several at once on threads), :func:`dictionary_codes` encodes
    each text array once. Scoring a batch hashes the same columns in the window view (its entity keys) and in
    the encoder (its vocabularies): the second one takes the first one's codes. Entries are keyed by the
    array's buffers and hold the array, so no other array can take its addresses while the block is open; the
    memo is dropped when the last block closes, so nothing carries over from one batch to the next."""
    global _ENCODINGS, _ENCODING_USERS
    with _ENCODING_LOCK:
        if _ENCODING_USERS == 0:
            _ENCODINGS = {}
        _ENCODING_USERS += 1
    try:
        yield
    finally:
        with _ENCODING_LOCK:
            _ENCODING_USERS -= 1
            if _ENCODING_USERS == 0:
                _ENCODINGS = None


def sharing() -> bool:
    """Whether a :func:`shared_encodings` block is open."""
    return _ENCODINGS is not None


def _encoding_key(arr: pa.Array) -> tuple | None:
    if _ENCODINGS is None or not _SHORTCUTS or len(arr) < MEMO_MIN_VALUES:
        return None
    return (str(arr.type), len(arr), arr.offset) + tuple(0 if b is None else b.address for b in arr.buffers())


def _kept(arr: pa.Array) -> tuple[tuple | None, dict | None, tuple | None]:
    """(the memo key of ``arr``, the open block's memo, its entry for ``arr``): Nones outside a block."""
    key, memo = _encoding_key(arr), _ENCODINGS
    return key, memo, (memo.get(key) if key is not None and memo is not None else None)


def dictionary_codes(arr: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Arrow's dictionary encoding of a string array: codes (int64, -1 for null) and the distinct values in
    order of first appearance; computed once per array inside :func:`shared_encodings`."""
    key, memo, hit = _kept(arr)
    if hit is not None:
        return hit[1], hit[2]
    encoded = pc.dictionary_encode(arr)
    codes, uniques = codes_of(encoded.indices), encoded.dictionary
    if key is not None and memo is not None:
        codes.flags.writeable = False  # shared by every caller: none may change it in place
        memo[key] = (arr, codes, uniques)  # (one item assignment: atomic for other threads)
    return codes, uniques


def known_codes(arr: pa.Array) -> tuple[np.ndarray, pa.Array] | None:
    """:func:`dictionary_codes` of ``arr`` if it has been computed in this :func:`shared_encodings` block."""
    hit = _kept(arr)[2]
    return None if hit is None else (hit[1], hit[2])
