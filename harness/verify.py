"""``verify``: is this candidate correct for this target? Decided in the trusted parent.

Flow: static checks on the source (ast only) → one sandboxed worker per candidate → hypothesis
draws Cases (seeds, value distributions, and for registered ops shapes, dtypes and layouts;
stratified: the simplest Case, then one Case pinned to each class the op declares, so every
dtype, layout and shape class is in every verify, then random ones; see ``strata``) →
for each Case A the parent also builds B, the same Case with another seed (same shapes, other
values), computes the float64 oracle and PyTorch's native result of both on pristine copies,
and runs three calls in an order drawn from a secret stream: A twice and B once (ABA, AAB or
BAA), the two A calls under different ambient state (grad mode on, then off; on CUDA the second
on a non-default stream), each with fresh output memory and different allocator poison. Inputs
and the output travel through a shared-memory file; after every call the parent re-reads the
inputs there (on the CPU, input integrity is decided here, not by the worker). It checks the
worker's audit (which can only convict), type, shape, dtype, finiteness, the error budget of A
and of B against their own references, and that both A calls returned the same bytes → the
first failure is shrunk to a minimal counterexample. Any malformed reply is a ``crash``.
"""

from __future__ import annotations

import math
import os
import random
import secrets
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ..errors import BadInput
from ..kernels.spec import Call, Case, OpSpec, covered_classes
from .compare import compare
from .judge import Outcome, judge_call, reason_of, zeros_would_fail
from .problem import ProblemTarget, is_problem_path
from .protocol import Malformed
from .sandbox import Limits, SandboxedWorker, WorkerDied
from .session import CandidateSession, SessionError, tensor_nbytes
from .verdict import Reason, Verdict
from .wire import WireError, align, itemsize, pack_shared
from .error_pattern import ClassTally

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

    def strategy(self, max_numel: int, pin: dict | None = None):
        return self.spec.strategy(max_numel, pin) if pin else self.spec.strategy(max_numel)

    def classes(self, max_numel: int) -> dict[str, tuple[str, ...]]:
        return self.spec.classes(max_numel)

    def covered(self, case: Case, call: Call) -> dict[str, str]:
        return self.spec.covered(case, call)

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


class _Rejected(Exception):
    def __init__(self, outcome: Outcome):
        super().__init__(outcome.reason)
        self.outcome = outcome


@dataclass
class _Run:
    target: Any
    session: CandidateSession
    worker: SandboxedWorker
    init_seed: int
    device: str
    seed: int = 0
    evaluations: int = 0
    passed: int = 0
    worst_ratio: float = 0.0
    informative: int = 0
    float64_unavailable: bool = False
    calls: int = 0
    # axis -> the classes of the Cases evaluated so far (``covered_classes``: by effect)
    covered: dict = field(default_factory=dict)
    memo: dict = field(default_factory=dict)    # repr(case) -> Outcome, across hypothesis runs
    # which classes passed and failed (error_pattern.ClassTally): "failed only with dtype bf16"
    tally: Any = None


def verify(target, candidate_source: str, *, examples: int | None = None, seed: int | None = None,
           timeout: float = 120.0, config: dict | None = None, candidate_name: str = "candidate.py",
           static_checks: bool = True, session: CandidateSession | None = None) -> Verdict:
    """Verify ``candidate_source`` against ``target`` (op name, OpSpec, or problem file path).

    ``examples``: how many Cases to draw (default 16). For a registered op, after the simplest
    Case come the strata, Cases pinned to each declared class (``strata``: as many as the op's
    longest class list, 5 or 6 today), plus one per class whose effect those missed (these may
    go past ``examples``): with ``examples`` >= ``stratified_minimum`` (6 or 7; the default,
    and the tuner's and nightly's 8) every declared class is covered, for any seed. Fewer is a
    smoke check: that many Cases, and a warning naming the classes left out. The verdict's
    ``covered`` lists the declared classes the evaluated Cases showed.
    ``timeout``: the CPU seconds the worker may use (start, import and every call); a worker
    that makes no progress for ``Limits.stall`` wall seconds is stopped too (see sandbox.py).
    ``session``: a ``CandidateSession`` for this target and source, reused (tuning); without
    one, a fresh worker is started and closed. Raises ``BadInput`` for an unknown op or a
    malformed problem file; every verdict about the candidate itself, including crashes and
    timeouts, is returned as a ``Verdict``. ``static_checks=False`` exists only so tests can
    prove the sandbox and the runtime audit hold on their own; the CLI never turns them off.
    """
    t0 = time.monotonic()
    examples = DEFAULT_EXAMPLES if examples is None else int(examples)
    if examples < 1:
        raise BadInput("--examples must be at least 1")
    if not (timeout > 0 and math.isfinite(timeout)):
        raise BadInput(f"--timeout must be a positive number of CPU seconds, got {timeout}")
    if session is None:
        with CandidateSession(target, candidate_source, candidate_name=candidate_name,
                              static_checks=static_checks) as own:
            return verify(own.target, candidate_source, examples=examples, seed=seed, timeout=timeout,
                          config=config, session=own)
    if not session.matches(target, candidate_source):
        raise ValueError("the session is for another target or candidate source")
    tgt = session.target
    seed = secrets.randbits(32) if seed is None else int(seed)
    device = session.device
    device_desc = torch.cuda.get_device_name() if device == "cuda" else "cpu (triton interpreter)"
    base = dict(target=tgt.name, device=device_desc, seed=seed)

    problems = session.problems()
    if problems:
        reason = problems[0][0]
        detail = "static check: " + "; ".join(m for _, m in problems)
        return Verdict.reject(Reason(reason), detail, duration_s=time.monotonic() - t0,
                              sandbox="not started", **base)

    warnings: list[str] = []
    run: _Run | None = None

    def done(kw: dict) -> dict:
        """Verdict fields every exit shares; ``cpu_s`` from the live worker, else as given."""
        if run is not None:
            kw["covered"] = _covered_json(run)
        if session.alive():
            kw["cpu_s"] = round(session.worker.budget_used(), 2)
        elif kw.get("cpu_s") is not None:
            kw["cpu_s"] = round(kw["cpu_s"], 2)
        return dict(kw, duration_s=time.monotonic() - t0, warnings=warnings, **base)

    try:
        worker = session.begin(Limits(cpu_s=timeout))
        base["sandbox"] = worker.mode if worker.mode == "namespaces" else f"weak: {worker.mode_detail}"
        if worker.mode != "namespaces":
            warnings.append(f"sandbox is weak ({worker.mode_detail}): no network/filesystem isolation")
        session.load(config)
    except WorkerDied as e:
        detail = e.detail + (_interpreter_note(device) if e.reason == "timeout" else "")
        return Verdict.reject(reason_of(e.reason, Reason.CRASH), detail, **done({"cpu_s": e.cpu_s}))
    except SessionError as e:
        return Verdict.reject(reason_of(e.reason, Reason.IMPORT_ERROR), e.detail[:4000], **done({}))
    run = _Run(tgt, session, worker, session.init_seed, device, seed=seed, tally=ClassTally())
    failure = _stratified_search(run, examples, seed)
    uncovered = _uncovered(run)
    if uncovered and failure is None:
        needed = stratified_minimum(tgt, device, seed)
        why = (f"--examples {examples} is fewer than the {needed} that cover every class" if examples < needed
               else "every draw of them was skipped: non-finite reference")
        warnings.append(f"classes not covered ({why}): " + ", ".join(f"{a}={v}" for a, v in uncovered))
    if run.float64_unavailable:
        warnings.append("the reference could not run in float64: the budget is relative to PyTorch's "
                        "result in the input dtype instead (weaker)")

    if failure is None:
        if run.evaluations == 0:
            return Verdict.reject(Reason.MISMATCH, "no example could be evaluated (every drawn input gave a "
                                  "non-finite reference)", **done({}))
        if run.informative == 0:
            raise BadInput(f"target {tgt.name} is degenerate: an all-zeros output is within the error budget on "
                           "every example, so correctness cannot be judged (outputs below the numerical noise floor)")
        return Verdict(verified=True, detail=f"{run.evaluations} examples passed; worst error "
                       f"{run.worst_ratio:.3g}× the budget", trials=run.evaluations,
                       worst_error_ratio=run.worst_ratio, **done({}))
    cx = failure.case.to_json() if failure.case else None
    detail = failure.detail + (f"\nminimal counterexample: {failure.case.describe()}" if failure.case else "")
    singled = run.tally.describe() if failure.reason in ("mismatch", "nonfinite") and tgt.kind == "op" else ""
    if singled:
        detail += f"\npattern across the cases tried: {singled}"
    if failure.case is not None and tgt.kind == "problem":   # its Case has no shapes: say the inputs'
        shapes = _input_shapes(tgt, failure.case)
        if shapes:
            cx["inputs"] = shapes
            detail += "; inputs: " + ", ".join(shapes)
    return Verdict.reject(reason_of(failure.reason, Reason.MISMATCH), detail, trials=run.evaluations,
                          counterexample=cx, worst_error_ratio=failure.worst_ratio,
                          **done({"cpu_s": failure.cpu_s}))


def _input_shapes(tgt, case: Case) -> list[str]:
    try:
        call = tgt.build(case)
    except Exception:  # the problem's own get_inputs failing is not the candidate's verdict
        return []
    return [f"{tuple(v.shape)} {str(v.dtype).removeprefix('torch.')}" if isinstance(v, torch.Tensor) else repr(v)[:40]
            for v in call.args]


def _interpreter_note(device: str) -> str:
    return ("; it ran in the Triton interpreter on the CPU, which is 10³–10⁴× slower than a GPU "
            "(raise --timeout for large shapes)") if device == "cpu" else ""


def _max_numel(device: str) -> int:
    return (1 << 24) if device == "cuda" else int(os.environ.get("KERNELAGENT_CPU_MAX_NUMEL", 1 << 15))


def target_classes(target, max_numel: int) -> dict[str, tuple[str, ...]]:
    """The classes a target declares, by axis; none for a problem file (its inputs are its own)."""
    classes = getattr(target, "classes", None)
    return {a: tuple(v) for a, v in classes(max_numel).items() if v} if classes else {}


def strata(classes: dict[str, tuple[str, ...]], seed: int) -> list[dict[str, str]]:
    """Pins that between them name every declared class: the i-th pins, on each axis, that
    axis's i-th class (axes with fewer classes are left unpinned past their last). Each axis's
    order is shuffled by the seed, so which classes meet in one Case varies from seed to seed."""
    rng = random.Random(f"strata/{seed}")
    orders = {}
    for axis, values in classes.items():
        order = list(values)
        rng.shuffle(order)
        orders[axis] = order
    n = max((len(v) for v in orders.values()), default=0)
    return [{a: v[i] for a, v in orders.items() if i < len(v)} for i in range(n)]


def _uncovered(run: _Run) -> list[tuple[str, str]]:
    classes = target_classes(run.target, _max_numel(run.device))
    return [(a, v) for a, values in classes.items() for v in values if v not in run.covered.get(a, ())]


def _covered_json(run: _Run) -> dict[str, list[str]]:
    classes = target_classes(run.target, _max_numel(run.device))
    return {a: [v for v in values if v in run.covered.get(a, ())] for a, values in classes.items()}


def _classes_shown(target, case: Case, call: Call) -> dict[str, str]:
    covered = getattr(target, "covered", None)
    return covered(case, call) if covered else covered_classes(case, call)


def _note_covered(run: _Run, case: Case, call: Call) -> None:
    for axis, value in _classes_shown(run.target, case, call).items():
        run.covered.setdefault(axis, set()).add(value)


def _shows(target, case: Case, pin: dict) -> bool:
    """Does ``case``, built, exercise every class ``pin`` names (not only in name)?"""
    try:
        got = _classes_shown(target, case, target.build(case))
    except Exception:  # a build that fails is the evaluation's to report, not the filter's
        return True
    return all(got.get(a) == v for a, v in pin.items())


def stratified_minimum(target, device: str, seed: int = 0) -> int:
    """The fewest ``examples`` with which a verify of ``target`` covers every declared class:
    the simplest Case and the strata (the top-ups come on top). ``target``: as for ``verify``,
    or a resolved target."""
    if not hasattr(target, "build"):
        target = resolve_target(target)
    plan = strata(target_classes(target, _max_numel(device)), seed)
    return 1 + len(plan) if plan else 1


def _stratified_search(run: _Run, examples: int, seed: int) -> Outcome | None:
    """The simplest Case, every declared class (one pinned Case each), then random Cases up to
    ``examples`` in all.

    The simplest Case (hypothesis's first draw: sizes of 1, fp32, contiguous) comes first: a
    gross bug fails there fast, with a counterexample that reads well. A stratum's Case is a
    random member of its classes, not the simplest one (a 1x1 input shows no layout), and a
    failure there shrinks within the stratum. A class that the strata drew only in name (a
    transposed layout of a single row) is pinned again on its own, with draws that do not show
    it filtered out before anything is evaluated; these top-ups may take a verify past
    ``examples``. Fewer ``examples`` than the simplest Case and the strata (a smoke check) run
    that many, the strata in order, and the verdict names the classes left out.
    Returns the (shrunk) failure, or None.
    """
    max_numel = _max_numel(run.device)
    classes = target_classes(run.target, max_numel)
    unpinned = run.target.strategy(max_numel)
    if not classes:  # a problem file: nothing to stratify
        return _property_search(run, unpinned, examples, seed)
    failure = _property_search(run, unpinned, 1, seed)
    if failure is not None:
        return failure
    runs = 1

    def pinned(pin: dict, tag: str, strict: bool = False) -> Outcome | None:
        nonlocal runs
        runs += 1
        strategy = run.target.strategy(max_numel, pin)
        if strict:
            strategy = strategy.filter(lambda case: _shows(run.target, case, pin))
        sub = random.Random(f"{seed}/{tag}").getrandbits(32)
        return _property_search(run, strategy, 1, sub, skip_simplest=True)

    plan = strata(classes, seed)
    for i, pin in enumerate(plan[:max(0, examples - 1)]):
        failure = pinned(pin, f"stratum{i}")
        if failure is not None:
            return failure
    if examples < 1 + len(plan):
        return None
    for axis, value in _uncovered(run):
        if value not in run.covered.get(axis, ()):  # not covered meanwhile
            failure = pinned({axis: value}, f"{axis}={value}", strict=True)
            if failure is not None:
                return failure
    remaining = examples - runs
    if remaining <= 0:
        return None
    # The same seed draws the simplest Case first again (answered from the memo, not evaluated).
    return _property_search(run, unpinned, remaining + 1, seed)


def _property_search(run: _Run, strategy, examples: int, seed: int, *, skip_simplest: bool = False) -> Outcome | None:
    """Hypothesis draws ``examples`` Cases from ``strategy``; returns the (shrunk) failing
    outcome, or None. ``skip_simplest``: hypothesis always tries the all-zero choice first (its
    simplest Case: sizes of 1); a leading False is made a dead end so one example is random."""
    from hypothesis import HealthCheck, Phase, assume, given, settings
    from hypothesis import seed as hseed
    from hypothesis import strategies as st
    from hypothesis.errors import Unsatisfiable

    memo = run.memo
    state = {"failure_evals": None, "fatal": False}
    if skip_simplest:
        strategy = st.booleans().flatmap(lambda go, s=strategy: s if go else st.nothing())

    @hseed(seed)
    @settings(max_examples=examples, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate, Phase.shrink],
              report_multiple_bugs=False, print_blob=False)
    @given(strategy)
    def prop(case):
        key = repr(case)
        outcome = memo.get(key)
        if outcome is None:
            if state["fatal"] or (state["failure_evals"] is not None and run.evaluations - state["failure_evals"] >= SHRINK_BUDGET):
                return  # shrink budget spent: unseen cases pass, the best failure so far stands
            outcome = _evaluate(run, case)
            memo[key] = outcome
            if outcome.status in ("pass", "fail") and run.tally is not None:
                run.tally.record({"dtype": case.dtype, "layout": case.layout}, outcome.status == "pass")
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
    except Unsatisfiable:  # every draw was skipped (non-finite reference): nothing evaluated here
        return None
    return None


@dataclass
class _Inputs:
    """One input set as sent to the worker, with its references and the pristine bytes."""

    case: Case
    call: Call
    ref64: torch.Tensor
    native: torch.Tensor
    float64_ok: bool
    header: dict = field(default_factory=dict)
    image: bytes = b""               # the inputs' bytes as written at offset 0 of the shared file
    ranges: list = field(default_factory=list)   # (start, end) of each tensor input in the file
    out_off: int = 0
    out_bytes: int = 0


def _prepare(run: _Run, case: Case) -> _Inputs | None:
    """The inputs and references of ``case`` (cached in the session); None when the reference
    is not finite."""
    key = ("verify", repr(case))
    cached = run.session.refs.get(key)
    if cached is not None:
        return cached if cached != "nonfinite" else None
    inp = _build_inputs(run, case)
    if inp is None:
        run.session.refs.put(key, "nonfinite", 64)
    else:
        run.session.refs.put(key, inp, tensor_nbytes(inp.ref64, inp.native, *inp.call.args,
                                                     *inp.call.kwargs.values()) + 2 * len(inp.image))
    return inp


def _build_inputs(run: _Run, case: Case) -> _Inputs | None:
    tgt = run.target
    call = tgt.build(case)
    with torch.no_grad():
        ref64, native, float64_ok = tgt.reference(call, run.init_seed)
    if not isinstance(ref64, torch.Tensor) or not isinstance(native, torch.Tensor) \
            or not bool(torch.isfinite(ref64).all()):
        return None
    values = list(call.args) + list(call.kwargs.values())
    enc, metas, image = pack_shared(values)
    inp = _Inputs(case, call, ref64, native, float64_ok, image=image,
                  ranges=[(m["shm"], m["shm"] + m["nbytes"]) for m in metas])
    inp.out_off = align(len(image))
    inp.out_bytes = native.numel() * itemsize(native.dtype)
    inp.header = {"op": "call", "args": enc[:len(call.args)], "metas": metas,
                  "kwargs_names": list(call.kwargs), "kwargs_enc": enc[len(call.args):],
                  "shm_size": inp.out_off + inp.out_bytes, "out_off": inp.out_off, "out_capacity": inp.out_bytes,
                  "poison_bytes": 4 * max(ref64.numel(), 1) * 4}
    return inp


def _other_inputs(run: _Run, case: Case, rng: random.Random) -> _Inputs | None:
    """B: the same Case (shapes, dtype, layout, distribution) with other values."""
    for _ in range(3):
        seed = rng.randrange(2**31 - 1)
        if seed == case.seed:
            continue
        other = _prepare(run, replace(case, seed=seed))
        if other is not None:
            return other
    return None


# Calls per Case: which input set, grad mode, a non-default stream (CUDA), allocator poison.
_SCHEDULES = ("ABA", "AAB", "BAA")


def _evaluate(run: _Run, case: Case) -> Outcome:
    a = _prepare(run, case)
    if a is None:
        return Outcome("skip", case=case)
    run.float64_unavailable |= not a.float64_ok
    run.evaluations += 1
    _note_covered(run, case, a.call)
    # A secret stream (from the run's seed) picks B's seed and the order of the calls, so the
    # candidate cannot tell from the call count which call repeats an earlier one.
    rng = random.Random(f"{run.seed}/{case.seed}/{case.describe()}")
    b = _other_inputs(run, case, rng)
    schedule = rng.choice(_SCHEDULES) if b is not None else "AA"
    poisons = (float("nan"), 1e30, -1e30)
    first_a: torch.Tensor | None = None
    first_raw: bytes | None = None
    a_seen = 0
    worst = 0.0
    for pos, which in enumerate(schedule):
        inp = a if which == "A" else b
        ambient = {"grad": which == "A" and a_seen == 0,
                   "side_stream": run.device == "cuda" and which == "A" and a_seen == 1,
                   "poison": poisons[pos % len(poisons)]}
        got = _call(run, inp, ambient)
        if isinstance(got, Outcome):
            return got
        out, raw = got
        if which == "A" and a_seen == 1:
            if raw != first_raw:
                diff = int((out.view(torch.uint8) != first_a.view(torch.uint8)).sum()) if out.numel() else 0
                between = " with a call on other inputs between them" if schedule == "ABA" else ""
                streams = " and current stream" if run.device == "cuda" else ""
                return Outcome("fail", Reason.NONDETERMINISTIC.value,
                                f"two calls on the same inputs{between}, differing only in grad mode{streams}, returned "
                                f"different bytes ({diff} bytes differ): uninitialised memory, a race, a result "
                                "carried over from an earlier call, or behaviour that depends on ambient state", case)
            a_seen += 1
            continue
        verdict = _check_values(run, inp, out)
        if verdict.status == "fail":
            return verdict
        worst = max(worst, verdict.worst_ratio or 0.0)
        if which == "A":
            first_a, first_raw, a_seen = out, raw, 1
            if zeros_would_fail(out, a, run.target):
                run.informative += 1
    run.worst_ratio = max(run.worst_ratio, worst if math.isfinite(worst) else 0.0)
    run.passed += 1
    return Outcome("pass", case=case, worst_ratio=worst)


def _check_values(run: _Run, inp: _Inputs, out: torch.Tensor) -> Outcome:
    tol = run.target.tolerance
    cmp = compare(out, inp.ref64, inp.native, tol, run.target.reduction_length(inp.call))
    if not cmp.ok:
        return Outcome("fail", cmp.reason, cmp.detail, inp.case, worst_ratio=cmp.worst_ratio)
    return Outcome("pass", case=inp.case, worst_ratio=cmp.worst_ratio)


def _call(run: _Run, inp: _Inputs, ambient: dict):
    """One call: write the inputs, ask, then judge the reply from the parent's side.

    Returns (output tensor, its bytes) or a failing ``Outcome``."""
    worker = run.worker
    case = inp.case

    def fail(reason: Reason, detail: str, **kw) -> Outcome:
        return Outcome("fail", reason.value, detail, case, **kw)

    def died(e: WorkerDied) -> Outcome:
        detail = e.detail
        if e.reason == "timeout":
            detail += (f"; {run.passed} case(s) passed before it; the slow case: {case.describe()}"
                       + (f"; {e.cpu_s:.1f} CPU-seconds used" if e.cpu_s is not None else "")
                       + _interpreter_note(run.device))
        return fail(reason_of(e.reason, Reason.CRASH), detail, fatal=True, cpu_s=e.cpu_s)

    run.calls += 1
    try:
        # Pristine inputs, then 0xFF (NaN) where the output goes: nothing of an earlier call's
        # output survives in the file, whatever the worker claims to have written.
        worker.shm_write(inp.image + b"\xff" * (inp.out_off - len(inp.image) + inp.out_bytes), 0)
        reply, _ = worker.request(dict(inp.header, **ambient), [], max_reply_bytes=0)
    except WorkerDied as e:
        return died(e)
    try:
        return judge_call(worker, inp, reply)
    except WorkerDied as e:
        return died(e)
    except (Malformed, WireError, KeyError, IndexError, TypeError, ValueError, AttributeError,
            OverflowError, RecursionError) as e:
        worker.close_quietly()
        return fail(Reason.CRASH, f"the worker sent a malformed reply ({type(e).__name__}: {str(e)[:300]})", fatal=True)
