"""The byte protocol between the trusted parent and a sandboxed worker.

A message is a 4-byte big-endian header length, a JSON header, then the raw bytes of each
tensor the header lists, back to back. No pickle in either direction: the parent decodes
what an untrusted worker sends with ``json`` and ``torch.frombuffer`` only, and checks every
size against hard limits before reading it.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any, BinaryIO

import torch

WIRE_DTYPES = {
    "float64": torch.float64, "float32": torch.float32, "float16": torch.float16,
    "bfloat16": torch.bfloat16, "int64": torch.int64, "int32": torch.int32, "int16": torch.int16,
    "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool,
}
WIRE_NAMES = {v: k for k, v in WIRE_DTYPES.items()}
MAX_HEADER = 1 << 20


class WireError(Exception):
    """A malformed or oversized message (from the worker: a protocol violation)."""


def _read_exact(f: BinaryIO, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        b = f.read(n - got)
        if not b:
            raise EOFError(f"stream closed after {got} of {n} bytes")
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


def encode_tensor(t: torch.Tensor, *, keep_strides: bool) -> tuple[dict, bytes]:
    """Describe ``t`` and give its bytes.

    With ``keep_strides`` the whole underlying storage travels with (shape, stride, offset), so
    the receiver can rebuild the same non-contiguous view; otherwise a contiguous copy.
    """
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if keep_strides:
        storage = t.untyped_storage()
        raw = bytes(storage)  # a copy of the whole storage, as the strided view needs it
        meta = {"dtype": WIRE_NAMES[t.dtype], "shape": list(t.shape), "stride": list(t.stride()),
                "offset": t.storage_offset(), "nbytes": len(raw)}
        return meta, raw
    c = t.contiguous()
    raw = c.reshape(-1).view(torch.uint8).numpy().tobytes() if c.numel() else b""
    return {"dtype": WIRE_NAMES[c.dtype], "shape": list(c.shape), "nbytes": len(raw)}, raw


def decode_tensor(meta: dict, raw: bytes) -> torch.Tensor:
    """Rebuild a plain CPU tensor from a description and bytes, validating every field."""
    dtype = WIRE_DTYPES.get(meta.get("dtype"))
    if dtype is None:
        raise WireError(f"unsupported dtype {meta.get('dtype')!r}")
    shape = meta.get("shape")
    if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise WireError(f"bad shape {shape!r}")
    itemsize = torch.empty((), dtype=dtype).element_size()
    base = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
    if "stride" in meta:
        stride, offset = meta["stride"], meta["offset"]
        if len(raw) % itemsize:
            raise WireError("storage size is not a multiple of the item size")
        flat = base.view(dtype)
        return flat.as_strided(shape, stride, offset)
    if len(raw) != math.prod(shape) * itemsize:
        raise WireError(f"{len(raw)} bytes for shape {shape} of {meta['dtype']}")
    return base.view(dtype).reshape(shape) if raw else torch.empty(shape, dtype=dtype)


def pack_message(header: dict[str, Any], blobs: list[bytes] = ()) -> list[bytes]:
    """The chunks of one message, in order (kept apart to avoid copying large blobs)."""
    header = dict(header, blob_sizes=[len(b) for b in blobs])
    h = json.dumps(header).encode()
    return [struct.pack(">I", len(h)), h, *blobs]


def write_message(f: BinaryIO, header: dict[str, Any], blobs: list[bytes] = ()) -> None:
    for chunk in pack_message(header, blobs):
        view = memoryview(chunk)
        while view:
            n = f.write(view)
            view = view[n:] if n is not None else view[len(view):]
    f.flush()


def read_message(f: BinaryIO, *, max_bytes: int) -> tuple[dict, list[bytes]]:
    (n,) = struct.unpack(">I", _read_exact(f, 4))
    if n > MAX_HEADER:
        raise WireError(f"header of {n} bytes exceeds {MAX_HEADER}")
    try:
        header = json.loads(_read_exact(f, n))
    except json.JSONDecodeError as e:
        raise WireError(f"header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise WireError("header is not an object")
    sizes = header.get("blob_sizes", [])
    if not isinstance(sizes, list) or not all(isinstance(s, int) and s >= 0 for s in sizes):
        raise WireError("bad blob_sizes")
    if sum(sizes) > max_bytes:
        raise WireError(f"message of {sum(sizes)} bytes exceeds the limit of {max_bytes}")
    return header, [_read_exact(f, s) for s in sizes]


def encode_args(values: list | tuple, *, keep_strides: bool = True) -> tuple[list, list[bytes]]:
    """Encode positional values: tensors by reference to a blob, everything else as JSON."""
    blobs: list[bytes] = []
    metas: list[dict] = []

    def enc(v):
        if isinstance(v, torch.Tensor):
            meta, raw = encode_tensor(v, keep_strides=keep_strides)
            blobs.append(raw)
            metas.append(meta)
            return {"t": len(blobs) - 1}
        if isinstance(v, (list, tuple)):
            return {"seq": [enc(x) for x in v]}
        if v is None or isinstance(v, (bool, int, float, str)):
            return {"v": v}
        raise TypeError(f"cannot send a {type(v).__name__} to the worker")

    return [enc(v) for v in values], (metas, blobs)


def decode_args(encoded: list, metas: list[dict], blobs: list[bytes]) -> list:
    tensors = [decode_tensor(m, b) for m, b in zip(metas, blobs)]

    def dec(e):
        if "t" in e:
            return tensors[e["t"]]
        if "seq" in e:
            return [dec(x) for x in e["seq"]]
        return e["v"]

    return [dec(e) for e in encoded]
