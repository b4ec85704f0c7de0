# target: softmax
# expect: crash
# examples: 2
# static: off
# taxonomy: H1 a forged worker reply: a header of JSON nested 100000 deep (RecursionError in json.loads) must be a crash verdict, not a traceback in the parent
import struct
import sys

import torch
import triton
import triton.language as tl

_worker = sys.modules["__main__"]
_original_reply = _worker._reply
_FORGED = object()


def _reply(header, blobs=()):
    if header is _FORGED:
        body = b"[" * 100_000 + b"]" * 100_000
        _worker.REPLY_FD.write(struct.pack(">I", len(body)) + body)
        return
    _original_reply(header, blobs)


_worker._reply = _reply
_worker.Worker.call = lambda self, h, blobs: (_FORGED, [])


@triton.jit
def _kernel(y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    tl.store(y_ptr + offs, tl.load(y_ptr + offs, mask=offs < n), mask=offs < n)


def softmax(x, *, config=None):
    y = torch.empty_like(x)
    _kernel[(1,)](y, 0, BLOCK=16)
    return y
