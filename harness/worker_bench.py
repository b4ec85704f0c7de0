"""The worker's ``bench`` op: staged input sets, timed and energy-window calls, fingerprints.

Runs in the sandboxed worker for ``harness.measure``. Everything it reports (times, call
counts, fingerprints) is a claim the parent checks against its own clock and its own copy of
the outputs. ``fingerprint_*`` are shared with the parent, which recomputes them.
"""

from __future__ import annotations

import os
import time


FINGERPRINT_CHUNK = 1 << 22
_FINGERPRINT_MOD = (1 << 61) - 1


def fingerprint_weights(seed: int, device="cpu"):
    """The fixed pseudo-random weights of ``fingerprint_parts`` (the parent rebuilds them)."""
    import torch

    g = torch.Generator().manual_seed(int(seed))
    return torch.randint(1, 1 << 16, (FINGERPRINT_CHUNK,), generator=g, dtype=torch.int64).to(device)


def fingerprint_parts(t, weights):
    """A weighted sum of the output's bytes, computed where the output lives (no copy to the
    host per call). Read as int16 words (bytes when the size is odd), each chunk's sum is exact
    in int64, so the CPU and the GPU give the same numbers. Returns (chunk sums, nbytes)."""
    import torch

    from .wire import flat_bytes

    b = flat_bytes(t)
    n = b.numel()
    if n % 2 == 0:
        try:
            w = b.view(torch.int16)
        except RuntimeError:  # misaligned storage offset
            w = b.clone().view(torch.int16)
    else:
        w = b
    sums = [(w[c:c + FINGERPRINT_CHUNK].to(torch.int64) * weights[:min(FINGERPRINT_CHUNK, w.numel() - c)]).sum()
            for c in range(0, w.numel(), FINGERPRINT_CHUNK)]
    return (torch.stack(sums) if sums else torch.zeros(0, dtype=torch.int64, device=t.device)), n


def fingerprint_hex(parts) -> str:
    sums, nbytes = parts
    h = nbytes
    for s in sums.tolist():
        h = (h * 1_000_003 + int(s)) % _FINGERPRINT_MOD
    return f"{h:016x}"


def _persisting_l2_reset():
    """cudaCtxResetPersistingL2Cache from the CUDA runtime torch already loaded, or None."""
    import ctypes

    for name in ("libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0", "libcudart.so"):
        try:
            lib = ctypes.CDLL(name, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
        except OSError:
            continue
        fn = getattr(lib, "cudaCtxResetPersistingL2Cache", None)
        if fn is not None:
            fn.restype = ctypes.c_int
            return fn
    return None


class BenchState:
    """Input sets staged once, the L2 flush buffer and the fingerprint weights.

    Requests (fields of a ``bench`` header):
      stage: ``sets`` [[n_args, kwarg names], …] with ``args``/``metas`` and blobs as in
             ``call``, all sets' values flattened; ``device``.
      run:   ``mode`` "warmup" (calls until ``duration_s`` on this process's clock, at least
             ``min_calls``, at most ``max_calls``), "calls" (exactly ``calls``, each timed) or
             "duration" (like warmup, for energy windows; synchronises every ``sync_every``);
             ``order`` (set indices, cycled); ``flush_l2``; ``fingerprint_every`` (0: none),
             ``fingerprint_phase``, ``fingerprint_seed``; ``return_outputs`` (set indices
             whose first output travels back); ``calibrate`` {shape, dtype}: time a harness
             function that only allocates an output, instead of the candidate.
    """

    def __init__(self):
        self.sets: list = []
        self.device = "cpu"
        self._flush = None
        self._weights: dict = {}
        self._l2_reset = None
        self.l2_reset_ok = False

    def stage(self, h, blobs) -> dict:
        import torch

        from .wire import decode_args

        self.device = h.get("device", "cpu")
        values = decode_args(h["args"], h["metas"], blobs)
        sets, pos = [], 0
        for n_args, names in h["sets"]:
            vals = values[pos:pos + n_args + len(names)]
            pos += n_args + len(names)
            if self.device != "cpu":
                vals = [v.to(self.device) if isinstance(v, torch.Tensor) else v for v in vals]
            sets.append((tuple(vals[:n_args]), dict(zip(names, vals[n_args:]))))
        self.sets = sets
        return {"ok": True, "staged": len(sets)}

    def flush_buffer(self):
        import torch

        if self._flush is None:
            props = torch.cuda.get_device_properties(torch.cuda.current_device())
            l2 = int(getattr(props, "L2_cache_size", 0) or 0)
            self._flush = torch.empty(max(256 << 20, 2 * l2), dtype=torch.uint8, device=self.device)
            self._l2_reset = _persisting_l2_reset()
            self.l2_reset_ok = self._l2_reset is not None
        return self._flush

    def reset_persisting_l2(self) -> None:
        if self._l2_reset is not None and self._l2_reset() != 0:
            self._l2_reset, self.l2_reset_ok = None, False

    def weights(self, seed: int):
        if seed not in self._weights:
            self._weights = {seed: fingerprint_weights(seed, self.device)}
        return self._weights[seed]

    def run(self, entry, h):
        import torch

        from .wire import WIRE_DTYPES, encode_tensor

        cuda = self.device != "cpu"
        if h.get("calibrate"):
            shape, dtype = list(h["calibrate"]["shape"]), WIRE_DTYPES[h["calibrate"]["dtype"]]
            device = self.device
            fn = lambda *a, **k: torch.empty(shape, dtype=dtype, device=device)  # noqa: E731
        elif entry is None:
            return {"ok": False, "reason": "protocol", "detail": "bench before a candidate was loaded"}, []
        else:
            fn = entry
        if not self.sets:
            return {"ok": False, "reason": "protocol", "detail": "bench before input sets were staged"}, []
        mode = h["mode"]
        order = [int(i) for i in h["order"]]
        n_calls = int(h.get("calls", 0))
        duration = float(h.get("duration_s", 0.0))
        min_calls, max_calls = int(h.get("min_calls", 1)), int(h.get("max_calls", 1 << 31))
        sync_every = max(1, int(h.get("sync_every", 64)))
        fp_every, fp_phase = int(h.get("fingerprint_every", 0)), int(h.get("fingerprint_phase", 0))
        weights = self.weights(int(h.get("fingerprint_seed", 0))) if fp_every > 0 else None
        flush = self.flush_buffer() if (cuda and h.get("flush_l2")) else None
        timed = mode == "calls"
        events, times, fps, first = [], [], [], {}
        clock = time.perf_counter
        t_start = clock()
        j = 0
        with torch.no_grad():
            while True:
                if timed:
                    if j >= n_calls:
                        break
                elif j >= max_calls or (j >= min_calls and clock() - t_start >= duration):
                    break
                i = order[j % len(order)]
                args, kwargs = self.sets[i]
                if flush is not None:
                    self.reset_persisting_l2()
                    flush.zero_()
                if timed and cuda:
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    out = fn(*args, **kwargs)
                    end.record()
                    events.append((start, end))
                elif timed:
                    t0 = clock()
                    out = fn(*args, **kwargs)
                    times.append(clock() - t0)
                else:
                    out = fn(*args, **kwargs)
                if type(out) is not torch.Tensor:
                    return {"ok": False, "reason": "not-tensor",
                            "detail": f"call {j} returned a {type(out).__module__}.{type(out).__qualname__}"}, []
                if weights is not None and ((timed and i not in first) or (j - fp_phase) % fp_every == 0):
                    parts = fingerprint_parts(out, weights)
                    fps.append((j, parts))
                    if timed and i not in first:
                        first[i] = (out, parts)  # kept alive: re-read after the final sync
                if cuda and not timed and (j + 1) % sync_every == 0:
                    torch.cuda.synchronize()
                j += 1
        if cuda:
            torch.cuda.synchronize()
        elapsed = clock() - t_start
        if events:
            times = [s.elapsed_time(e) / 1e3 for s, e in events]
        reply = {"ok": True, "n": j, "times_s": times, "elapsed_s": elapsed,
                 "clock": "cuda-events" if cuda else "perf_counter",
                 "fingerprints": [[k, fingerprint_hex(p)] for k, p in fps],
                 "flush_bytes": int(flush.numel()) if flush is not None else 0,
                 "l2_persist_reset": bool(flush is not None and self.l2_reset_ok)}
        # Deferred writes: a first output must read the same after the final synchronize.
        reply["changed_after_return"] = sorted(
            i for i, (out, parts) in first.items()
            if fingerprint_hex(fingerprint_parts(out, weights)) != fingerprint_hex(parts))
        outs, blobs = [], []
        for i in h.get("return_outputs") or []:
            if int(i) in first:
                meta, raw = encode_tensor(first[int(i)][0], keep_strides=False)
                outs.append([int(i), meta])
                blobs.append(raw)
        reply["outputs"] = outs
        return reply, blobs
