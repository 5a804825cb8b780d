"""Model-ready arrays in the image cache: their cache key, and the checksummed .npy bytes they are
kept as (``encode_array``, ``decode_array``)."""

from __future__ import annotations

import functools
import hashlib
import io
import math

import numpy as np

from model.data import MODEL_ARRAY_VERSION

ARRAY_DIGEST_BYTES = 16  # blake2b digest after a cached array's .npy bytes: damage is a miss


def array_cache_key(url: str, image_size: int, channels: int, max_pixels: int) -> str:
    """Cache key of an image's model-ready array: its reference and everything that changes the
    array (size, channels, the preprocessing's version) or whether there is one (the pixel limit
    that refuses an image, so a lowered IMAGE_MAX_PIXELS is not bypassed by an older array)."""
    return (
        f"model-array/v{MODEL_ARRAY_VERSION}/{image_size}x{image_size}x{channels}"
        f"/max-pixels-{max_pixels}/{url}"
    )


@functools.lru_cache(maxsize=16)
def _npy_header(shape: tuple[int, ...]) -> bytes:
    """The header np.save writes for a uint8 array of ``shape`` (the same for every such array)."""
    out = io.BytesIO()
    np.save(out, np.zeros(shape, np.uint8), allow_pickle=False)
    return out.getvalue()[: -math.prod(shape)]


def encode_array(array: np.ndarray) -> bytes:
    """An array as .npy bytes (what np.save writes) followed by their digest; the file stays
    readable by np.load."""
    if array.dtype == np.uint8:
        payload = _npy_header(array.shape) + np.ascontiguousarray(array).tobytes()
    else:
        out = io.BytesIO()
        np.save(out, array, allow_pickle=False)
        payload = out.getvalue()
    return payload + hashlib.blake2b(payload, digest_size=ARRAY_DIGEST_BYTES).digest()


def decode_array(data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """The uint8 array of ``shape`` that ``encode_array`` wrote (read-only); ValueError for
    anything else (truncated, damaged, another shape or dtype, a pickle)."""
    payload, digest = data[:-ARRAY_DIGEST_BYTES], data[-ARRAY_DIGEST_BYTES:]
    if len(data) <= ARRAY_DIGEST_BYTES or (
        hashlib.blake2b(payload, digest_size=ARRAY_DIGEST_BYTES).digest() != digest
    ):
        raise ValueError(f"checksum mismatch ({len(data)} bytes): truncated or damaged")
    header = _npy_header(shape)
    if payload.startswith(header) and len(payload) == len(header) + math.prod(shape):
        # the header this process writes for exactly this shape and dtype: the pixels follow
        # (np.load would parse the header with ast, ~0.1 ms: more than reading the file)
        return np.frombuffer(payload, np.uint8, offset=len(header)).reshape(shape)
    try:  # another header layout (another numpy wrote it): numpy's own reader, never a pickle
        array = np.load(io.BytesIO(payload), allow_pickle=False)
    except (OSError, EOFError, SyntaxError) as exc:
        raise ValueError(f"not a .npy array: {exc}") from None
    if not isinstance(array, np.ndarray) or array.dtype != np.uint8 or array.shape != shape:
        raise ValueError(
            f"expected uint8 {shape}, found {getattr(array, 'dtype', '?')} {getattr(array, 'shape', '?')}"
        )
    array.flags.writeable = False  # like the fast path's: a cached array is never changed
    return array
