"""``verify``: is this candidate correct for this target? Decided in the trusted parent.

Flow: static checks on the source (ast only) → one sandboxed worker per candidate → hypothesis
draws Cases (seeds, value distributions, and for registered ops shapes, dtypes and layouts) →
for each: the parent builds inputs, computes the float64 oracle and PyTorch's native result on
pristine copies, sends the inputs to the worker twice (fresh output memory, different
allocator poison), and checks type, shape, dtype, finiteness, the error budget, determinism
and the worker's audit → the first failure is shrunk to a minimal counterexample.
"""

from __future__ import annotations

import math
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import BadInput
from ..kernels.spec import DTYPE_NAMES, Call, Case, OpSpec
from .compare import compare
from .problem import ProblemTarget, is_problem_path
from .sandbox import Limits, SandboxedWorker, WorkerDied
from .static_checks import check_candidate
from .verdict import Reason, Verdict
from .wire import decode_tensor, encode_args

DEFAULT_EXAMPLES = 16
SHRINK_BUDGET = 12   # extra evaluations spent shrinking a failure to a minimal counterexample


@dataclass
class OpTarget:
    spec: OpSpec
    kind = "op"

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def entry(self) -> str:
        return self.spec.name

    @property
    def tolerance(self):
        return self.spec.tolerance

    def strategy(self, max_numel: int):
        return self.spec.strategy(max_numel)

    def build(self, case: Case) -> Call:
        return self.spec.build(case)

    def reference(self, call: Call, init_seed: int):
        ref = self.spec.reference
        if self.spec.float64_reference:
            a64 = [_to64(a) for a in call.args]
            k64 = {k: _to64(v) for k, v in call.kwargs.items()}
            ref64 = ref(*a64, **k64)
        native = _native_reference(ref, call)
        if not self.spec.float64_reference:
            ref64 = native.double()
        return ref64, native, self.spec.float64_reference

    def reduction_length(self, call: Call) -> int | None:
        f = self.spec.tolerance.reduction_length
        return int(f(call)) if f else None


def _to64(v):
    return v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v


def _native_reference(ref, call: Call) -> torch.Tensor:
    """PyTorch's own answer in the input dtype (or via fp32 where CPU lacks a half kernel)."""
    try:
        return ref(*call.args, **call.kwargs)
    except (RuntimeError, NotImplementedError):
        up = lambda v: v.float() if isinstance(v, torch.Tensor) and v.dtype in (torch.float16, torch.bfloat16) else v  # noqa: E731
        dtype = next((a.dtype for a in call.args if isinstance(a, torch.Tensor) and a.is_floating_point()), torch.float32)
        return ref(*[up(a) for a in call.args], **{k: up(v) for k, v in call.kwargs.items()}).to(dtype)


def resolve_target(target) -> OpTarget | ProblemTarget:
    """An op name, an OpSpec, or a path to a KernelBench problem file → a target."""
    if isinstance(target, OpSpec):
        return OpTarget(target)
    if isinstance(target, Path) or (isinstance(target, str) and is_problem_path(target)):
        return ProblemTarget.load(Path(target))
    from ..kernels.registry import UnknownOpError, get_opspec

    try:
        return OpTarget(get_opspec(str(target)))
    except UnknownOpError as e:
        raise BadInput(f"{e} (or pass a path to a KernelBench problem file)") from None


@dataclass
class _Outcome:
    status: str                       # "pass" | "fail" | "skip"
    reason: str | None = None
    detail: str = ""
    case: Case | None = None
    worst_ratio: float | None = None
    fatal: bool = False               # the worker is gone; stop evaluating
    informative: bool = True          # would an all-zeros output have failed this case?


class _Rejected(Exception):
    def __init__(self, outcome: _Outcome):
        super().__init__(outcome.reason)
        self.outcome = outcome


@dataclass
class _Run:
    target: Any
    worker: SandboxedWorker
    init_seed: int
    device: str
    evaluations: int = 0
    worst_ratio: float = 0.0
    informative: int = 0
    float64_unavailable: bool = False


def verify(target, candidate_source: str, *, examples: int | None = None, seed: int | None = None,
           timeout: float = 120.0, config: dict | None = None, candidate_name: str = "candidate.py",
           static_checks: bool = True) -> Verdict:
    """Verify ``candidate_source`` against ``target`` (op name, OpSpec, or problem file path).

    Raises ``BadInput`` for an unknown op or a malformed problem file; every verdict about the
    candidate itself, including crashes and timeouts, is returned as a ``Verdict``.
    ``static_checks=False`` exists only so tests can prove the sandbox and the runtime audit
    hold on their own; the CLI never turns them off.
    """
    t0 = time.monotonic()
    tgt = resolve_target(target)
    examples = DEFAULT_EXAMPLES if examples is None else int(examples)
    if examples < 1:
        raise BadInput("--examples must be at least 1")
    seed = secrets.randbits(32) if seed is None else int(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    device_desc = torch.cuda.get_device_name() if device == "cuda" else "cpu (triton interpreter)"
    base = dict(target=tgt.name, device=device_desc, seed=seed)

    problems = [] if not static_checks else check_candidate(candidate_source, entry=tgt.entry if tgt.kind == "op" else None,
                               model_class="ModelNew" if tgt.kind == "problem" else None)
    if problems:
        reason = problems[0][0]
        detail = "static check: " + "; ".join(m for _, m in problems)
        return Verdict.reject(Reason(reason), detail, duration_s=time.monotonic() - t0,
                              sandbox="not started", **base)

    limits = Limits(wall_s=timeout, reply_s=max(5.0, min(timeout, 60.0)))
    if device == "cuda":
        limits.memory_bytes = None
    rng = torch.Generator().manual_seed(seed)
    init_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=rng))
    with SandboxedWorker(device=device, limits=limits) as worker:
        sandbox_desc = worker.mode if worker.mode == "namespaces" else f"weak: {worker.mode_detail}"
        base["sandbox"] = sandbox_desc
        warnings = [] if worker.mode == "namespaces" else [f"sandbox is weak ({worker.mode_detail}): "
                                                            "no network/filesystem isolation"]
        try:
            worker.start()
            loaded = worker.request(*_load_request(tgt, candidate_source, candidate_name, config, device, init_seed))[0]
        except WorkerDied as e:
            return Verdict.reject(Reason(e.reason), e.detail, duration_s=time.monotonic() - t0, warnings=warnings, **base)
        if not loaded.get("ok"):
            return Verdict.reject(_reason(loaded.get("reason"), Reason.IMPORT_ERROR), str(loaded.get("detail", ""))[:4000],
                                  duration_s=time.monotonic() - t0, warnings=warnings, **base)
        run = _Run(tgt, worker, init_seed, device)
        failure = _property_search(run, examples, seed)
    if run.float64_unavailable:
        warnings.append("the reference could not run in float64: the budget is relative to PyTorch's "
                        "result in the input dtype instead (weaker)")

    duration = time.monotonic() - t0
    if failure is None:
        if run.evaluations == 0:
            return Verdict.reject(Reason.MISMATCH, "no example could be evaluated (every drawn input gave a "
                                  "non-finite reference)", duration_s=duration, warnings=warnings, **base)
        if run.informative == 0:
            raise BadInput(f"target {tgt.name} is degenerate: an all-zeros output is within the error budget on "
                           "every example, so correctness cannot be judged (outputs below the numerical noise floor)")
        return Verdict(verified=True, detail=f"{run.evaluations} examples passed; worst error "
                       f"{run.worst_ratio:.3g}× the budget", trials=run.evaluations, duration_s=duration,
                       worst_error_ratio=run.worst_ratio, warnings=warnings, **base)
    cx = failure.case.to_json() if failure.case else None
    detail = failure.detail + (f"\nminimal counterexample: {failure.case.describe()}" if failure.case else "")
    return Verdict.reject(_reason(failure.reason, Reason.MISMATCH), detail, trials=run.evaluations,
                          duration_s=duration, counterexample=cx, worst_error_ratio=failure.worst_ratio,
                          warnings=warnings, **base)


def _reason(value, default: Reason) -> Reason:
    try:
        return Reason(value)
    except ValueError:
        return default


def _load_request(tgt, source: str, filename: str, config, device: str, init_seed: int):
    header: dict[str, Any] = {"op": "load", "kind": tgt.kind, "entry": tgt.entry, "source": source,
                              "filename": Path(filename).name or "candidate.py", "config": config,
                              "device": device, "init_seed": init_seed}
    blobs: list[bytes] = []
    if tgt.kind == "problem":
        enc, (metas, blobs) = encode_args(tgt.init_inputs)
        header.update(init_args=enc, metas=metas)
    return header, blobs


def _property_search(run: _Run, examples: int, seed: int) -> _Outcome | None:
    """Hypothesis drives the cases; returns the (shrunk) failing outcome, or None."""
    from hypothesis import HealthCheck, Phase, assume, given, settings
    from hypothesis import seed as hseed

    max_numel = (1 << 24) if run.device == "cuda" else int(os.environ.get("KERNELAGENT_CPU_MAX_NUMEL", 1 << 15))
    memo: dict[str, _Outcome] = {}
    state = {"failure_evals": None, "fatal": False}

    @hseed(seed)
    @settings(max_examples=examples, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate, Phase.shrink],
              report_multiple_bugs=False, print_blob=False)
    @given(run.target.strategy(max_numel))
    def prop(case):
        key = repr(case)
        outcome = memo.get(key)
        if outcome is None:
            if state["fatal"] or (state["failure_evals"] is not None and run.evaluations - state["failure_evals"] >= SHRINK_BUDGET):
                return  # shrink budget spent: unseen cases pass, the best failure so far stands
            outcome = _evaluate(run, case)
            memo[key] = outcome
            if outcome.status == "fail" and state["failure_evals"] is None:
                state["failure_evals"] = run.evaluations
            if outcome.fatal:
                state["fatal"] = True
        if outcome.status == "skip":
            assume(False)
        if outcome.status == "fail":
            raise _Rejected(outcome)

    try:
        prop()
    except _Rejected as e:
        return e.outcome
    return None


def _evaluate(run: _Run, case: Case) -> _Outcome:
    tgt = run.target
    call = tgt.build(case)
    with torch.no_grad():
        ref64, native, float64_ok = tgt.reference(call, run.init_seed)
    run.float64_unavailable |= not float64_ok
    if not isinstance(ref64, torch.Tensor) or not bool(torch.isfinite(ref64).all()):
        return _Outcome("skip", case=case)
    run.evaluations += 1
    values = list(call.args) + list(call.kwargs.values())
    enc, (metas, blobs) = encode_args(values)
    header = {"op": "call", "args": enc[:len(call.args)], "metas": metas,
              "kwargs_names": list(call.kwargs), "kwargs_enc": enc[len(call.args):],
              "poison_bytes": 4 * max(ref64.numel(), 1) * 4}
    replies = []
    for poison in (float("nan"), 1e30):
        try:
            reply, out_blobs = run.worker.request(dict(header, poison=poison), blobs)
        except WorkerDied as e:
            return _Outcome("fail", e.reason, e.detail, case, fatal=True)
        replies.append((reply, out_blobs))
        if not reply.get("ok"):
            return _Outcome("fail", _reason(reply.get("reason"), Reason.RUNTIME_ERROR).value,
                            str(reply.get("detail", ""))[:4000], case)
    return _judge(run, case, ref64, native, call, replies)


def _judge(run: _Run, case: Case, ref64, native, call: Call, replies) -> _Outcome:
    (r1, b1), (r2, b2) = replies

    def fail(reason: Reason, detail: str, ratio=None) -> _Outcome:
        return _Outcome("fail", reason.value, detail, case, worst_ratio=ratio)

    for r in (r1, r2):
        if int(r.get("launches", 0) or 0) < 1:
            return fail(Reason.NO_KERNEL, "no @triton.jit kernel of the candidate was launched during the call")
        bad = r.get("bad_ops") or {}
        if bad:
            ops = ", ".join(f"aten.{k}×{v}" for k, v in sorted(bad.items())[:12])
            return fail(Reason.PYTORCH_FALLBACK, f"PyTorch computed on the inputs outside the Triton kernels: {ops}")
        if r.get("out_type") != "torch.Tensor":
            return fail(Reason.NOT_TENSOR, f"the output is a {r.get('out_type')}, not a plain torch.Tensor")
        if r.get("mutated_inputs"):
            return fail(Reason.INPUT_MUTATION, f"the candidate modified its input(s) at position(s) {r['mutated_inputs']}")
        if r.get("aliases_input"):
            return fail(Reason.OUTPUT_REUSE, "the output shares memory with an input")
        if r.get("reuses_previous_output"):
            return fail(Reason.OUTPUT_REUSE, "the output reuses the memory of an earlier call's output (caching)")
        if r.get("changed_after_return") or int(r.get("threads_added", 0) or 0) > 0:
            return fail(Reason.DEFERRED_WRITE, "the output changed after the call returned, or the call left threads running")
    try:
        out1 = decode_tensor(r1["out"], b1[0])
        out2 = decode_tensor(r2["out"], b2[0])
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as e:  # malformed reply: the worker's fault
        return fail(Reason.CRASH, f"the worker returned a malformed output: {e}")
    exp_shape, exp_dtype = tuple(ref64.shape), native.dtype
    if tuple(out1.shape) != exp_shape:
        return fail(Reason.SHAPE, f"output shape {tuple(out1.shape)}, expected {exp_shape}")
    if out1.dtype != exp_dtype:
        return fail(Reason.DTYPE, f"output dtype {DTYPE_NAMES.get(out1.dtype, out1.dtype)}, expected "
                    f"{DTYPE_NAMES.get(exp_dtype, exp_dtype)}")
    tol = run.target.tolerance
    k = run.target.reduction_length(call)
    cmp = compare(out1, ref64, native, tol, k)
    if not cmp.ok:
        return fail(Reason(cmp.reason), cmp.detail, cmp.worst_ratio)
    if b1[0] != b2[0]:
        diff = int((out1.view(torch.uint8) != out2.view(torch.uint8)).sum()) if out1.numel() else 0
        return fail(Reason.NONDETERMINISTIC, f"two identical calls returned different bytes ({diff} bytes differ); "
                    "uninitialised memory or a race")
    if not compare(torch.zeros_like(out1), ref64, native, tol, k).ok:
        run.informative += 1
    run.worst_ratio = max(run.worst_ratio, cmp.worst_ratio if math.isfinite(cmp.worst_ratio) else 0.0)
    return _Outcome("pass", case=case, worst_ratio=cmp.worst_ratio)
