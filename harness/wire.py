"""The byte protocol between the trusted parent and a sandboxed worker.

A message is a 4-byte big-endian header length, a JSON header, then the raw bytes of each
tensor the header lists, back to back. No pickle in either direction: the parent decodes
what an untrusted worker sends with ``json`` and ``torch.frombuffer`` only, and checks every
size against hard limits before reading it. Every malformed message, whatever Python error
decoding it would raise, surfaces as ``WireError``.

``call`` requests use a shared-memory file instead of the pipe for tensor bytes (see
``pack_shared`` / ``unpack_shared``): the parent writes each input's whole storage into it, the
worker builds its tensors over the mapping without a copy, and after the call the parent
re-reads the bytes to decide input integrity itself; the output comes back the same way, in a
region the parent sized for the expected output.
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
SHM_ALIGN = 64            # every tensor in the shared file starts on a 64-byte boundary


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


def storage_bytes(t: torch.Tensor) -> bytes:
    """The bytes of ``t``'s whole underlying storage, at memcpy speed.

    (``bytes(t.untyped_storage())`` reads one byte per dispatched call, microseconds each.)
    """
    storage = t.detach().untyped_storage()
    if storage.device.type != "cpu":
        storage = storage.cpu()
    if storage.nbytes() == 0:
        return b""
    return torch.empty(0, dtype=torch.uint8).set_(storage).numpy().tobytes()


def flat_bytes(t: torch.Tensor) -> torch.Tensor:
    """A 1-d uint8 view of the elements of ``t`` in row-major order, where ``t`` lives (a copy
    only when ``t`` is not already dense row-major). Any layout: a view whose dims are all of
    size 1 counts as contiguous to torch whatever its strides (``torch.randn(1, 5)[:, :1]``,
    ``as_strided((1, 1), (7, 3))``), so ``contiguous()`` keeps them and flattening gives a
    1-element view of stride 3, which ``view(torch.uint8)`` refuses; such a view is its one
    element, so it is re-viewed with unit stride."""
    c = t.detach().contiguous().reshape(-1)
    if c.numel() == 0:
        return torch.empty(0, dtype=torch.uint8, device=c.device)
    if c.stride(0) != 1:  # only a 1-element view: a flattened contiguous tensor has unit stride
        c = c.as_strided((c.numel(),), (1,))
    return c.view(torch.uint8)


def tensor_bytes(t: torch.Tensor) -> bytes:
    """The bytes of a contiguous copy of ``t`` (any dtype and layout, bf16 included), at memcpy
    speed."""
    c = t.detach()
    if c.device.type != "cpu":
        c = c.cpu()
    return flat_bytes(c).numpy().tobytes() if c.numel() else b""


def itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def encode_tensor(t: torch.Tensor, *, keep_strides: bool) -> tuple[dict, bytes]:
    """Describe ``t`` and give its bytes.

    With ``keep_strides`` the whole underlying storage travels with (shape, stride, offset), so
    the receiver can rebuild the same non-contiguous view; otherwise a contiguous copy.
    """
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if keep_strides:
        raw = storage_bytes(t)  # the whole storage, as the strided view needs it
        meta = {"dtype": WIRE_NAMES[t.dtype], "shape": list(t.shape), "stride": list(t.stride()),
                "offset": t.storage_offset(), "nbytes": len(raw)}
        return meta, raw
    raw = tensor_bytes(t)
    return {"dtype": WIRE_NAMES[t.dtype], "shape": list(t.shape), "nbytes": len(raw)}, raw


def _int_list(v, what: str, *, min_value: int = 0) -> list[int]:
    if not isinstance(v, list) or len(v) > 64 or not all(type(x) is int and x >= min_value for x in v):
        raise WireError(f"bad {what} {v!r}"[:200])
    return v


def wire_dtype(name) -> torch.dtype:
    dtype = WIRE_DTYPES.get(name) if isinstance(name, str) else None
    if dtype is None:
        raise WireError(f"unsupported dtype {name!r}"[:200])
    return dtype


def strided_extent(shape: list[int], stride: list[int], offset: int) -> int:
    """Elements of storage a (shape, stride, offset) view reaches: 0 if it is empty."""
    if any(s == 0 for s in shape):
        return 0
    return offset + 1 + sum((n - 1) * st for n, st in zip(shape, stride))


def decode_tensor(meta: dict, raw: bytes) -> torch.Tensor:
    """Rebuild a plain CPU tensor from a description and bytes, validating every field."""
    if not isinstance(meta, dict):
        raise WireError("tensor description is not an object")
    dtype = wire_dtype(meta.get("dtype"))
    shape = _int_list(meta.get("shape"), "shape")
    size = itemsize(dtype)
    base = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
    if "stride" in meta:
        stride = _int_list(meta["stride"], "stride")
        offset = meta.get("offset")
        if len(stride) != len(shape) or type(offset) is not int or offset < 0:
            raise WireError(f"bad stride/offset for shape {shape}")
        if len(raw) % size:
            raise WireError("storage size is not a multiple of the item size")
        if strided_extent(shape, stride, offset) * size > len(raw):
            raise WireError(f"a view of shape {shape} stride {stride} offset {offset} reaches past "
                            f"{len(raw)} bytes of storage")
        flat = base.view(dtype) if raw else torch.empty(0, dtype=dtype)
        return flat.as_strided(shape, stride, offset)
    if len(raw) != math.prod(shape) * size:
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
    raw = _read_exact(f, n)
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, bad UTF-8, absurd nesting
        raise WireError(f"header is not JSON: {type(e).__name__}: {str(e)[:200]}") from None
    if not isinstance(header, dict):
        raise WireError("header is not an object")
    sizes = header.get("blob_sizes", [])
    if not isinstance(sizes, list) or not all(type(s) is int and s >= 0 for s in sizes):
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


def _substitute(encoded: list, tensors: list) -> list:
    """Rebuild encoded values: ``{"t": i}`` is the i-th tensor, ``{"seq": …}`` a list."""

    def dec(e):
        if "t" in e:
            return tensors[e["t"]]
        if "seq" in e:
            return [dec(x) for x in e["seq"]]
        return e["v"]

    return [dec(e) for e in encoded]


def decode_args(encoded: list, metas: list[dict], blobs: list[bytes]) -> list:
    tensors = [decode_tensor(m, b) for m, b in zip(metas, blobs)]

    return _substitute(encoded, tensors)


# ---------------------------------------------------------------------------------------------
# Shared memory for ``call``: inputs and the output travel through a file both sides map.


def align(n: int) -> int:
    return (n + SHM_ALIGN - 1) // SHM_ALIGN * SHM_ALIGN


def pack_shared(values: list | tuple, start: int = 0) -> tuple[list, list[dict], bytes]:
    """Lay out every tensor in ``values`` (its whole storage, so strided views survive) in one
    byte image meant for offset ``start`` of the shared file.

    Returns (encoded values as in ``encode_args``, one description per tensor with its byte
    range ``shm``/``nbytes`` in the file, the image). The parent keeps the image as the pristine
    copy it compares the file against after the call.
    """
    if start % SHM_ALIGN:
        raise ValueError(f"start {start} is not a multiple of {SHM_ALIGN}")
    metas: list[dict] = []
    chunks: list[bytes] = []
    pos = start

    def enc(v):
        nonlocal pos
        if isinstance(v, torch.Tensor):
            raw = storage_bytes(v)
            metas.append({"dtype": WIRE_NAMES[v.dtype], "shape": list(v.shape), "stride": list(v.stride()),
                          "offset": v.storage_offset(), "shm": pos, "nbytes": len(raw)})
            end = pos + len(raw)
            chunks.append(raw)
            pad = align(end) - end
            if pad:
                chunks.append(bytes(pad))
            pos = align(end)
            return {"t": len(metas) - 1}
        if isinstance(v, (list, tuple)):
            return {"seq": [enc(x) for x in v]}
        if v is None or isinstance(v, (bool, int, float, str)):
            return {"v": v}
        raise TypeError(f"cannot send a {type(v).__name__} to the worker")

    encoded = [enc(v) for v in values]
    return encoded, metas, b"".join(chunks)


def shared_extent(metas: list[dict]) -> tuple[int, int]:
    """(first byte, end) of the tensors' ranges in the shared file; (0, 0) when there are none."""
    if not metas:
        return 0, 0
    return min(m["shm"] for m in metas), max(m["shm"] + m["nbytes"] for m in metas)


def unpack_shared(encoded: list, metas: list[dict], buf) -> list:
    """The worker's side: tensors built over ``buf`` (a writable mapping of the shared file)
    without a copy, with the parent's shapes, strides and storage offsets."""
    tensors = []
    for m in metas:
        dtype = wire_dtype(m.get("dtype"))
        shape, stride = _int_list(m.get("shape"), "shape"), _int_list(m.get("stride"), "stride")
        off, n, offset = m.get("shm"), m.get("nbytes"), m.get("offset")
        if not all(type(x) is int and x >= 0 for x in (off, n, offset)) or off + n > len(buf) or off % SHM_ALIGN:
            raise WireError(f"bad shared-memory range {off!r}+{n!r}")
        size = itemsize(dtype)
        if n % size or strided_extent(shape, stride, offset) * size > n:
            raise WireError(f"a view of shape {shape} stride {stride} reaches past its {n} bytes")
        flat = torch.frombuffer(buf, dtype=dtype, count=n // size, offset=off) if n else torch.empty(0, dtype=dtype)
        tensors.append(flat.as_strided(shape, stride, offset))

    return _substitute(encoded, tensors)


def tensor_from_bytes(dtype: torch.dtype, shape: list[int], raw: bytes) -> torch.Tensor:
    """A plain CPU tensor of ``shape`` over a private copy of ``raw`` (exactly its size)."""
    if len(raw) != math.prod(shape) * itemsize(dtype):
        raise WireError(f"{len(raw)} bytes for shape {shape} of {WIRE_NAMES[dtype]}")
    if not raw:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dtype).reshape(shape)
