"""The runtime defenses of the harness, each attacked directly (static checks off where the
attack needs it): the audit of the whole call including Triton launches, host reads, the
output-storage rule, input integrity decided in the parent through shared memory, malformed
worker replies, the interleaved call schedule, and the per-reply time limit.

The end-to-end cheats live in tests/redteam/rt_runtime_*.py; these tests pin the mechanisms.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from kernelagent.harness import verify
from kernelagent.harness import verify as verify_fn
from kernelagent.harness.wire import (SHM_ALIGN, WireError, decode_tensor, pack_message, pack_shared, read_message,
                                      storage_bytes, unpack_shared)

REDTEAM = Path(__file__).parent / "redteam"
CONTROL = (REDTEAM / "control_softmax_single_tile.py").read_text()
verify_module = sys.modules[verify_fn.__module__]


# ---------------------------------------------------------------------------------------------
# Host reads: every way a tensor value reaches Python is counted while a call is audited.

_PROBE = r'''
import io, json, pickle, sys
import numpy as np
import torch
from kernelagent.harness.worker_audit import Audit as _Audit

CAND = "/tmp/kernelagent-probe-candidate.py"
audit = _Audit("candidate_probe", CAND)
audit.install_host_read_hooks()
x = torch.randn(4, 3)
snippets = json.loads(sys.argv[1])
out = {}
for name, src in snippets.items():
    code = compile(src, CAND, "exec")     # as if written in the candidate's file
    scope = {"x": x, "torch": torch, "np": np, "io": io, "pickle": pickle}
    audit.reset()
    with audit.dispatch_mode():
        audit.active = True
        try:
            exec(code, scope)
        finally:
            audit.active = False
    out[name] = {"host": audit.host_reads, "bad": audit.bad_ops, "text": str(scope.get("text", ""))}
audit.reset()
exec(compile("x.tolist(); float(x[0, 0]); repr(x)", CAND, "exec"), {"x": x})   # not in a call: not counted
out["__inactive__"] = {"host": audit.host_reads, "bad": audit.bad_ops, "text": repr(x)[:40]}
print(json.dumps(out))
'''

HOST_READS = {
    "float": "float(x[0, 0])",
    "item": "x[0, 0].item()",
    "int": "int(x[0, 0])",
    "bool": "bool(x[0, 0] > 0) if False else bool(x[0, 0])",
    "iteration": "[float(v) for v in x[0]]",
    "format": "text = f'{x[0, 0]:.3f}'",
    "tolist": "x.tolist()",
    "numpy": "x.numpy()",
    "np.asarray": "np.asarray(x)",
    "dlpack": "np.from_dlpack(x)",
    "pickle": "pickle.dumps(x)",
    "torch.save": "torch.save(x, io.BytesIO())",
    "bytes(storage)": "bytes(x.untyped_storage())",
    "data_ptr": "x.data_ptr()",
    "torch.tensor": "torch.tensor([1.0, 2.0])",
    "as_tensor": "torch.as_tensor([1.0, 2.0])",
    "scalar_tensor": "torch.scalar_tensor(3.0)",
}
NOT_HOST_READS = {
    "shapes": "n = x.shape[0] * x.stride(0) + x.numel() + x.dim()",
    "alloc/view/copy": "y = torch.empty_like(x); y.copy_(x.t().t()); z = y.reshape(-1)[:2].clone()",
    "constant fill": "torch.full((3,), 0.5); torch.zeros(2).fill_(1.0)",
    "repr": "text = repr(x) + str(x)",
}


@pytest.fixture(scope="module")
def probe():
    snippets = dict(HOST_READS, **NOT_HOST_READS)
    res = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(snippets)], capture_output=True, text=True,
                         timeout=120, env={"PATH": "/usr/bin:/bin", "TRITON_INTERPRET": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", sorted(HOST_READS))
def test_every_host_read_is_counted(probe, name):
    assert probe[name]["host"], f"{name}: {HOST_READS[name]!r} reached Python unseen ({probe[name]})"


@pytest.mark.parametrize("name", sorted(NOT_HOST_READS))
def test_shapes_allocation_and_constants_are_not_host_reads(probe, name):
    assert probe[name]["host"] == {} and probe[name]["bad"] == {}, probe[name]


def test_printing_during_a_call_hides_the_values(probe):
    text = probe["repr"]["text"]
    assert "values hidden" in text and "shape=(4, 3)" in text


def test_nothing_is_counted_outside_a_call(probe):
    assert probe["__inactive__"]["host"] == {} and "values hidden" not in probe["__inactive__"]["text"]


# ---------------------------------------------------------------------------------------------
# Wire: storage bytes at memcpy speed, shared-memory layout, and every malformed message is a
# WireError.


@pytest.mark.parametrize("make", [
    lambda: torch.randn(7, 5),
    lambda: torch.randn(6, 10)[:, ::2],
    lambda: torch.randn(5, 4).to(torch.bfloat16).mT,
    lambda: torch.randn(9)[3:],
    lambda: torch.zeros(0, 3),
])
def test_storage_bytes_are_the_whole_storage(make):
    t = make()
    assert storage_bytes(t) == bytes(t.untyped_storage())


def test_storage_bytes_are_fast():
    t = torch.randn(1 << 20)   # 4 MiB: bytes(untyped_storage()) takes ~15 s here
    t0 = time.perf_counter()
    raw = storage_bytes(t)
    assert len(raw) == 4 << 20 and time.perf_counter() - t0 < 0.5


def test_pack_and_unpack_shared_keep_values_strides_and_offsets():
    base = torch.randn(6, 10)
    values = [base[:, ::2], torch.randn(4, 3).to(torch.bfloat16).mT, 1.5, [torch.arange(5, dtype=torch.int32), None],
              torch.zeros(0, 4), torch.randn(12)[5:]]
    enc, metas, image = pack_shared(values)
    assert all(m["shm"] % SHM_ALIGN == 0 for m in metas)
    buf = bytearray(image) + bytearray(64)
    got = unpack_shared(enc, metas, buf)
    for want, have in zip([values[0], values[1], values[4], values[5]], [got[0], got[1], got[4], got[5]]):
        assert have.shape == want.shape and have.stride() == want.stride() and have.dtype == want.dtype
        assert torch.equal(have, want)
    assert got[2] == 1.5 and torch.equal(got[3][0], values[3][0]) and got[3][1] is None
    got[0].fill_(0)                       # zero-copy: writes land in the buffer
    assert bytes(buf[:len(image)]) != image


def test_unpack_shared_refuses_views_past_their_range():
    enc, metas, image = pack_shared([torch.randn(4, 4)])
    bad = [dict(metas[0], stride=[40, 1])]
    with pytest.raises(WireError):
        unpack_shared(enc, bad, bytearray(image))
    with pytest.raises(WireError):
        unpack_shared(enc, [dict(metas[0], shm=len(image))], bytearray(image))


@pytest.mark.parametrize("meta", [
    {"dtype": "float99", "shape": [2]},
    {"dtype": "float32", "shape": [2, -1]},
    {"dtype": "float32", "shape": "2"},
    {"dtype": "float32", "shape": [2, 2], "stride": [2, 1], "offset": 3},      # reaches past the storage
    {"dtype": "float32", "shape": [2], "stride": [1], "offset": -1},
    {"dtype": "float32", "shape": [2], "stride": [1, 1], "offset": 0},
    ["not", "a", "dict"],
])
def test_decode_tensor_rejects_malformed_descriptions(meta):
    with pytest.raises(WireError):
        decode_tensor(meta, bytes(16))


class _Bytes:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def read(self, n):
        chunk = self.data[self.pos:self.pos + n]
        self.pos += len(chunk)
        return chunk


def _framed(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


@pytest.mark.parametrize("raw", [
    _framed(b"[" * 100_000 + b"]" * 100_000),          # RecursionError inside json
    _framed(b'{"ok": "\xff\xfe"}'),                     # not UTF-8
    _framed(b"[1, 2, 3]"),                             # not an object
    _framed(b"{not json"),
    _framed(b'{"blob_sizes": [-1]}'),
    _framed(b'{"blob_sizes": [true]}'),
    struct.pack(">I", 1 << 31),                         # a header bigger than MAX_HEADER
])
def test_read_message_turns_every_malformed_header_into_wire_error(raw):
    with pytest.raises(WireError):
        read_message(_Bytes(raw), max_bytes=1 << 20)


def test_read_message_refuses_blobs_over_the_limit_before_reading_them():
    chunks = pack_message({"ok": True}, [b"x" * 100])
    with pytest.raises(WireError, match="exceeds"):
        read_message(_Bytes(b"".join(chunks)), max_bytes=99)


# ---------------------------------------------------------------------------------------------
# Forged worker replies: the candidate rewrites the worker's reply; the parent answers `crash`
# with a reason, never a traceback.

_FORGER = '''
import struct
import sys

_w = sys.modules["__main__"]          # the worker module (python -m kernelagent.harness.worker)
_orig_call, _orig_reply = _w.Worker.call, _w._reply
PATCH, OUT_PATCH, RAW, BLOB = {patch!r}, {out_patch!r}, {raw!r}, {blob!r}


def _call(self, h, blobs):
    header, out = _orig_call(self, h, blobs)
    if RAW is not None:
        return "RAW", []
    header.update(PATCH)
    if OUT_PATCH:
        header["out"].update(OUT_PATCH)
    return header, ([BLOB] if BLOB else out)


def _reply(header, blobs=()):
    if header == "RAW":
        _w.REPLY_FD.write(RAW)
        return
    _orig_reply(header, blobs)


_w.Worker.call, _w._reply = _call, _reply
'''

FORGERIES = {
    "launches-not-an-int": dict(patch={"launches": "many"}),
    "bad-ops-a-list": dict(patch={"bad_ops": [1, 2]}),
    "ok-a-string": dict(patch={"ok": "yes"}),
    "out-type-a-number": dict(patch={"out_type": 7}),
    "dtype-float99": dict(out_patch={"dtype": "float99"}),
    "output-larger-than-expected": dict(out_patch={"nbytes": 1 << 40}),
    "output-not-written": dict(patch={"out_written": False}),
    "shape-of-strings": dict(out_patch={"shape": ["a"]}),
    "a-blob-on-a-call-reply": dict(blob=b"\0" * 4096),
    "not-utf8": dict(raw=_framed(b'{"ok": "\xff"}')),
    "nested-json": dict(raw=_framed(b"[" * 50_000 + b"]" * 50_000)),
    "header-too-large": dict(raw=struct.pack(">I", 1 << 30)),
}


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_a_forged_reply_is_a_crash_verdict_never_a_traceback(name):
    spec = dict(dict(patch={}, out_patch={}, raw=None, blob=None), **FORGERIES[name])
    source = _FORGER.format(**spec) + CONTROL.split("\n", 5)[-1]
    verdict = verify("softmax", source, examples=2, seed=5, timeout=60, static_checks=False)
    assert not verdict.verified
    assert verdict.reason == "crash", (verdict.reason, verdict.detail[:500])
    assert "malformed" in verdict.detail or "protocol violation" in verdict.detail, verdict.detail[:500]


def test_the_forger_itself_is_honest_when_it_forges_nothing():
    """The forging harness above, with no forgery, verifies: the crashes come from the forgeries."""
    source = _FORGER.format(patch={}, out_patch={}, raw=None, blob=None) + CONTROL.split("\n", 5)[-1]
    verdict = verify("softmax", source, examples=2, seed=5, timeout=60, static_checks=False)
    assert verdict.verified, (verdict.reason, verdict.detail[:500])


# ---------------------------------------------------------------------------------------------
# Input integrity is the parent's: an in-place kernel is caught even with every in-process
# integrity claim rewritten, and writes just past an input are caught too.


def test_a_write_just_past_the_inputs_view_is_input_mutation_decided_by_the_parent():
    """The kernel stores one element past the last element its input view reaches (metadata
    only, no storage access): the parent sees the changed bytes in the shared file."""
    kernel = CONTROL.split("def softmax")[0]
    source = kernel + textwrap.dedent('''
    @triton.jit
    def _poke_kernel(p, at):
        tl.store(p + at, tl.load(p) + 1.0)


    def softmax(x, *, config=None):
        x2 = x.reshape(-1, x.shape[-1])
        y = torch.empty(x2.shape, dtype=x.dtype, device=x.device)
        _row_softmax_kernel[(x2.shape[0],)](x2, y, x2.shape[1], x2.stride(0), x2.stride(1), y.stride(0),
                                            BLOCK=triton.next_power_of_2(x2.shape[1]))
        extent = sum((n - 1) * st for n, st in zip(x.shape, x.stride())) + 1
        _poke_kernel[(1,)](x, extent)
        return y.reshape(x.shape)
    ''')
    verdict = verify("softmax", source, examples=2, seed=5, timeout=60, static_checks=False)
    assert verdict.reason == "input-mutation", (verdict.reason, verdict.detail[:400])
    assert "seen by the parent" in verdict.detail


# ---------------------------------------------------------------------------------------------
# The call schedule: the secret order is what catches a cheat tuned to a fixed one.


def test_a_fixed_schedule_is_fooled_and_the_secret_one_is_not(monkeypatch):
    source = (REDTEAM / "rt_runtime_period3_jitter.py").read_text()
    monkeypatch.setattr(verify_module, "_SCHEDULES", ("ABA",))
    fixed = verify("softmax", source, examples=6, seed=20261126, static_checks=False)
    assert fixed.verified, "the period-3 cheat should fool a fixed A B A order (else this test proves nothing)"
    monkeypatch.undo()
    secret = verify("softmax", source, examples=6, seed=20261126, static_checks=False)
    assert not secret.verified and secret.reason == "nondeterministic", (secret.reason, secret.detail[:300])


def test_each_case_runs_a_and_b_and_repeats_a(monkeypatch):
    seen = []
    original = verify_module._call

    def spy(run, inp, ambient):
        seen.append((inp.case.seed, ambient["grad"]))
        return original(run, inp, ambient)

    monkeypatch.setattr(verify_module, "_call", spy)
    verdict = verify("softmax", CONTROL, examples=3, seed=11)
    assert verdict.verified
    assert len(seen) == 3 * verdict.trials
    for i in range(0, len(seen), 3):
        seeds = [s for s, _ in seen[i:i + 3]]
        a = max(set(seeds), key=seeds.count)
        assert seeds.count(a) == 2 and len(set(seeds)) == 2          # A twice, B (other values) once
        grads = [g for s, g in seen[i:i + 3] if s == a]
        assert grads == [True, False]                                # A under grad mode, then no_grad


# ---------------------------------------------------------------------------------------------
# The limit is the caller's timeout, in CPU seconds, not a fixed 60 s wall cap.


def test_the_limit_follows_the_callers_timeout(monkeypatch):
    from kernelagent.harness import session as session_module

    captured = []
    real = session_module.SandboxedWorker

    class Recording(real):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            captured.append(self.limits)

    monkeypatch.setattr(session_module, "SandboxedWorker", Recording)
    verify("softmax", "import torch\nraise RuntimeError('stop')\n", timeout=300, static_checks=False)
    assert captured and captured[0].cpu_s == 300


_RSS_PROBE = """
import json, resource, sys
from kernelagent.harness import verify
v = verify("softmax", sys.stdin.read(), examples=2, seed=5, timeout=60, static_checks=False)
print(json.dumps({"reason": v.reason, "detail": v.detail[:300],
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def _parent_peak(source: str) -> dict:
    res = subprocess.run([sys.executable, "-c", _RSS_PROBE], input=source, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_an_oversized_reply_is_refused_unread_and_the_parent_stays_small():
    """The worker sends 256 MiB with a 1-element-sized call reply: the parent refuses it from
    the header, before reading a byte of it; its peak RSS is that of an honest run (measured)."""
    honest = _FORGER.format(patch={}, out_patch={}, raw=None, blob=None)
    huge = honest.replace("None, None\n", "None, None\nBLOB = bytes(256 << 20)\n", 1)
    assert huge != honest
    tail = CONTROL.split("\n", 5)[-1]
    base, forged = _parent_peak(honest + tail), _parent_peak(huge + tail)
    assert base["reason"] is None, base
    assert forged["reason"] == "crash" and "exceeds the limit" in forged["detail"], forged
    grew_mib = (forged["maxrss_kib"] - base["maxrss_kib"]) / 1024
    assert grew_mib < 64, f"the parent's peak RSS grew {grew_mib:.0f} MiB reading a refused reply"


def test_a_long_traceback_tail_never_starts_inside_a_host_path():
    """CI checks out under a longer path than a developer machine: a tail cut at a fixed number
    of characters then began mid-path ("ython3.11/site-packages/…"), which the parent's scrub can
    no longer recognise, so the agent saw a host path and the replay differed per machine."""
    import site

    from kernelagent.harness.worker import _tail

    root = next(p for p in sys.path if p.endswith("site-packages")) if any(
        p.endswith("site-packages") for p in sys.path) else site.getsitepackages()[0]
    frame = f'  File "{root}/torch/nn/modules/module.py", line 1778, in _wrapped_call_impl\n    return x\n'
    for pad in range(0, 90, 7):  # every offset of the cut relative to a path
        text = "Traceback (most recent call last):\n" + "x" * pad + "\n" + frame * 40 + "ValueError: boom\n"
        tail = _tail(text, 1500)
        assert "site-packages/" not in tail.replace("<site-packages>/", "")
        assert tail.startswith("…\n  File ") or tail.startswith("…\n    return")
        assert tail.endswith("ValueError: boom\n")
