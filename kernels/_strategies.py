"""Hypothesis strategies shared by op specs, and the hard input classes they draw.

Sizes that break naive kernels (``size_strategy``), the dtype/layout/dist/scale/seed part of a
Case (``common_strategy``), the choice of a Case's shape class (``pick_class``), the shape params
of a row-wise op's Case with its hard classes (``row_params_strategy``: wide rows, rows past a
grid cap, rank 1 and 4, empty dims; the classes it offers are ``row_shape_classes``; the input
shape such params give is ``row_shape``) and the bench cases that fit a budget
(``bench_strategy``). Re-exported by ``kernels/spec.py``, where op specs import them from.
Hypothesis is imported inside the functions, so importing this module (or ``kernels/spec.py``)
does not pay for it.

A *pin* (``{"dtype": "bf16"}``, ``{"layout": "sliced", "shape_class": "wide"}``) restricts a
strategy to the classes it names: every draw then has them. The harness pins each class an op
declares at least once per verify (``harness/verify.py``), so no class is left to chance.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

from ._inputs import DISTRIBUTIONS, LAYOUTS


# ---------------------------------------------------------------------------------------------
# Hypothesis helpers shared by op strategies (hypothesis imported lazily by callers).

AWKWARD_SIZES = (1, 2, 3, 7, 31, 127, 129, 257, 1000, 1021, 4097)


def size_strategy(lo: int, hi: int):
    """Sizes that break naive kernels: 1, primes, non-multiples of block sizes, and any int."""
    from hypothesis import strategies as st

    awkward = [s for s in AWKWARD_SIZES if lo <= s <= hi]
    if awkward:
        return st.one_of(st.sampled_from(awkward), st.integers(lo, hi))
    return st.integers(lo, hi)


def _pinned(values: Sequence[Any], pin: Mapping[str, Any] | None, axis: str) -> list:
    """``values`` restricted to the pinned one (none left when the pin names another)."""
    values = list(values)
    if pin and axis in pin:
        return [v for v in values if v == pin[axis]]
    return values


def common_strategy(dtypes: Sequence[str] = ("fp32", "fp16", "bf16"),
                    layouts: Sequence[str] = LAYOUTS, dists: Sequence[str] = DISTRIBUTIONS,
                    scales: Sequence[float] = (1.0,), pin: Mapping[str, str] | None = None):
    """A strategy of the dtype/layout/dist/scale/seed part of a Case, as a dict.

    With a ``pin`` naming a dtype or layout, only that one (``st.nothing()`` when this call does
    not offer it, so a ``st.one_of`` of several calls keeps the branches that do)."""
    from hypothesis import strategies as st

    dtypes, layouts = _pinned(dtypes, pin, "dtype"), _pinned(layouts, pin, "layout")
    if not dtypes or not layouts:
        return st.nothing()
    return st.fixed_dictionaries({
        "dtype": st.sampled_from(dtypes),
        "layout": st.sampled_from(layouts),
        "dist": st.sampled_from(list(dists)),
        "scale": st.sampled_from(list(scales)),
        "seed": st.integers(0, 2**31 - 1),
    })


def pick_class(weights: Mapping[str, int], pin: Mapping[str, str] | None = None, axis: str = "shape_class"):
    """A strategy of a class name on ``axis``, drawn with ``weights`` (class -> relative
    frequency; the first class is the plain one hypothesis shrinks toward), or the pinned
    ``pin[axis]`` (``st.nothing()`` if it is not offered)."""
    from hypothesis import strategies as st

    names = [k for k, w in weights.items() if w > 0]
    if pin and axis in pin:
        return st.just(pin[axis]) if pin[axis] in names else st.nothing()
    return st.sampled_from([k for k in names for _ in range(int(weights[k]))])


# ---------------------------------------------------------------------------------------------
# Hard input classes: the shapes naive kernels get wrong, drawn by every op's strategy where
# they apply. Each class is a named branch of one weighted choice (``pick_class``): unpinned, the
# plain branch dominates and hypothesis shrinks a failure toward it; pinned, every draw is of
# that class, which is how the harness puts each class in every verify.

# Rows just past a power-of-two grid cap: a kernel that launches min(rows, cap) programs and
# does not loop over the rest leaves rows unwritten.
PAST_CAP_ROWS = (65, 129, 257, 513, 1025, 2049, 4097, 65537)
# The widest single tile the tuning spaces offer; rows wider than this need a loop.
SINGLE_TILE_CAP = 16384
WIDE_COLS = (16385, 32768, 65537, 131073)
# ``EMPTY_CASES`` (size-0 dims) is defined in ``kernels/spec.py``: op specs read it there as
# ``spec.EMPTY_CASES`` and tests flip it there, so ``row_params_strategy`` reads it there too.


def many_rows_cap(max_numel: int) -> int:
    """The most rows a "many rows" draw takes.

    Triton's interpreter runs programs one after another (2-7 ms each for a row kernel, two
    calls per case), so the CPU budget (max_numel 2**15) stops at 1100 rows and draws 1025,
    just past a 1024 cap, at most; a GPU budget (2**24) reaches 69905, past the 65535
    programs of a grid's y and z axes.
    """
    return min(70000, max(1100, max_numel // 240))


def row_shape(p: Mapping[str, Any]) -> tuple[int, ...]:
    """The input shape of a row-wise Case: ``(*lead, rows, cols)``, or ``(cols,)`` for rank 1.

    ``batch`` is 0 (no leading dim), an int (one leading dim) or a list of leading dims (so
    ``[0]`` is an empty batch and ``[2, 3]`` makes a rank-4 input).
    """
    if p.get("rank") == 1:
        return (int(p["cols"]),)
    b = p.get("batch") or 0
    lead = tuple(int(v) for v in b) if isinstance(b, (list, tuple)) else ((int(b),) if b else ())
    return lead + (int(p["rows"]), int(p["cols"]))


def _fits(bench_cases, numel, max_numel: int) -> list[dict]:
    return [dict(c) for c in bench_cases if numel is not None and numel(c) <= max_numel]


def _row_branches(max_numel: int, *, max_rows: int = 64, max_cols: int = SINGLE_TILE_CAP,
                  batches: Sequence[int] = (0, 0, 2), bench_cases: Sequence[Mapping[str, Any]] = (),
                  rank1: bool = True, rank4: bool = True) -> dict[str, tuple[int, Callable[[], Any]]]:
    """Shape class -> (weight, strategy factory) for a row-wise op at this budget."""
    from . import spec  # EMPTY_CASES, read at call time (tests set it on spec)

    numel = lambda c: math.prod(row_shape(c))  # noqa: E731
    fitting = _fits(bench_cases, numel, max_numel)

    def plain():
        from hypothesis import strategies as st

        @st.composite
        def draw_plain(draw):
            cols = draw(size_strategy(1, max(1, min(max_numel, max_cols))))
            batch = draw(st.sampled_from(list(batches)))
            rows = draw(size_strategy(1, max(1, min(max_rows, max_numel // (cols * max(batch, 1))))))
            return {"batch": batch, "rows": rows, "cols": cols}
        return draw_plain()

    def wide():
        from hypothesis import strategies as st

        hi = min(max_numel, 1 << 18)
        past = [c for c in WIDE_COLS if c <= hi]
        cols = st.one_of(st.sampled_from(past), st.integers(SINGLE_TILE_CAP + 1, hi))
        return st.builds(lambda c: {"batch": 0, "rows": 1, "cols": c}, cols)

    def many_rows():
        from hypothesis import strategies as st

        hi = min(many_rows_cap(max_numel), max_numel)
        past = [r for r in PAST_CAP_ROWS if max_rows < r <= hi]

        # Under the interpreter's small budget only the just-past-a-cap counts (each costs
        # seconds); with a GPU's budget any count up to the cap as well.
        counts = st.sampled_from(past)
        if hi > 4096:
            counts = st.one_of(counts, st.integers(max_rows + 1, hi))

        @st.composite
        def draw_many(draw):
            rows = draw(counts)
            cols = draw(size_strategy(1, max(1, min(64, max_numel // rows))))
            return {"batch": 0, "rows": rows, "cols": cols}
        return draw_many()

    def rank_one():
        from hypothesis import strategies as st

        return st.builds(lambda c: {"rank": 1, "batch": 0, "rows": 1, "cols": c},
                         size_strategy(1, max(1, min(max_numel, 1 << 18))))

    def rank_four():
        from hypothesis import strategies as st

        @st.composite
        def draw4(draw):
            lead = [draw(st.integers(1, 3)), draw(st.integers(1, 3))]
            rows = draw(size_strategy(1, 8))
            cols = draw(size_strategy(1, max(1, min(max_cols, max_numel // (lead[0] * lead[1] * rows)))))
            rows = max(1, min(rows, max_numel // (lead[0] * lead[1] * cols)))
            return {"batch": lead, "rows": rows, "cols": cols}
        return draw4()

    def empty():
        from hypothesis import strategies as st

        # No rows, no columns, an empty batch, and an empty last dim behind a batch or alone
        # (where ``reshape(-1, 0)`` is ambiguous).
        small = size_strategy(1, 64)
        return st.one_of(st.builds(lambda c: {"batch": 0, "rows": 0, "cols": c}, small),
                         st.builds(lambda r: {"batch": 0, "rows": r, "cols": 0}, small),
                         st.builds(lambda r, c: {"batch": [0], "rows": r, "cols": c}, small, small),
                         st.builds(lambda r: {"batch": [2], "rows": r, "cols": 0}, small),
                         st.just({"rank": 1, "batch": 0, "rows": 1, "cols": 0}))

    def bench():
        from hypothesis import strategies as st

        return st.sampled_from(fitting)

    # The plain branch dominates; each hard class comes up about once in 15 draws (the many-rows
    # class costs seconds per case in the interpreter, so not more often), the wide class (one
    # program: the cheapest) twice as often.
    branches: dict[str, tuple[int, Callable[[], Any]]] = {"plain": (9, plain)}
    if max_numel > SINGLE_TILE_CAP and max_cols >= SINGLE_TILE_CAP:
        branches["wide"] = (2, wide)
    if min(many_rows_cap(max_numel), max_numel) > max_rows:
        branches["many_rows"] = (1, many_rows)
    if rank1:
        branches["rank1"] = (1, rank_one)
    if rank4:
        branches["rank4"] = (1, rank_four)
    if spec.EMPTY_CASES:
        branches["empty"] = (1, empty)
    if fitting:
        branches["bench"] = (1, bench)
    return branches


def row_shape_classes(max_numel: int, **kw) -> tuple[str, ...]:
    """The shape classes ``row_params_strategy`` draws with the same arguments."""
    return tuple(_row_branches(max_numel, **kw))


def row_params_strategy(max_numel: int, *, pin: Mapping[str, str] | None = None, **kw):
    """(shape class, shape params) of a row-wise op's Case: ``batch``, ``rows``, ``cols``, maybe
    ``rank``.

    Classes: plain (the common case: awkward sizes up to ``max_rows`` x ``max_cols``); wide
    (one row of more than SINGLE_TILE_CAP columns, when the budget allows); many_rows (past a
    grid cap, narrow); rank1; rank4; empty (``EMPTY_CASES``); bench (a bench case whose input
    fits ``max_numel``: the GPU lane). Every input stays within ``max_numel`` elements.
    Keywords: ``max_rows``, ``max_cols``, ``batches``, ``bench_cases``, ``rank1``, ``rank4``;
    ``pin["shape_class"]`` draws that class only.
    """
    branches = _row_branches(max_numel, **kw)
    strategies = {k: make() for k, (_, make) in branches.items()}
    return pick_class({k: w for k, (w, _) in branches.items()}, pin).flatmap(
        lambda k: strategies[k].map(lambda p, k=k: (k, p)))


def bench_strategy(bench_cases: Sequence[Mapping[str, Any]], numel: Callable[[Mapping[str, Any]], int],
                   max_numel: int):
    """A strategy of the bench cases whose largest input fits ``max_numel``, or None."""
    from hypothesis import strategies as st

    fitting = _fits(bench_cases, numel, max_numel)
    return st.sampled_from(fitting) if fitting else None
