"""The regression gate: did a metric (latency, energy) really get worse, by enough to matter?

A pure function of (stored samples, new samples, policy): no clock, no GPU, no files, so a
recorded night replays to the same decisions. One timing against a threshold is never a
verdict; a decision needs all of

* **significance** — a one-sided rank test says the new samples are larger (smaller, for an
  improvement) than the stored ones at level ``1 - confidence``: Mann–Whitney U when the
  stored evidence has repeated samples, an exact sign test against the stored median when it
  has only the median (older entries);
* **a confidence bound** — the percentile-bootstrap interval of median(new) / median(stored)
  lies wholly above 1 (below 1);
* **a minimum effect** — the point ratio moves by at least ``min_effect`` (5 %): a real but
  tiny shift is not worth a red build;
* **a noise floor** — the medians differ by at least ``noise_floor`` in the metric's own unit
  (the timer's resolution: a 0.3 µs kernel cannot regress by 0.02 µs in any way we can see).

Anything short of that is ``unchanged`` (with the reason) or, when there are too few samples
to test at all, ``inconclusive``. Both leave the build green.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

REGRESSION, IMPROVEMENT, UNCHANGED, INCONCLUSIVE = "regression", "improvement", "unchanged", "inconclusive"
VERDICTS = (REGRESSION, IMPROVEMENT, UNCHANGED, INCONCLUSIVE)
_EXACT_MWU_MAX_N = 40  # exact U distribution below this total size when there are no ties


@dataclass(frozen=True)
class GatePolicy:
    """How sure, and how big, a change must be before the gate calls it."""

    min_effect: float = 0.05      # relative change of the median that matters (0.05 = 5 %)
    confidence: float = 0.99      # one-sided test level and two-sided bootstrap interval
    min_samples: int = 5          # fewer new samples than this: inconclusive
    noise_floor: float = 0.0      # absolute difference of medians below which nothing is called
    resamples: int = 2000         # bootstrap resamples
    seed: int = 0                 # bootstrap seed: same inputs, same decision

    def __post_init__(self):
        if not 0 < self.min_effect < 1:
            raise ValueError(f"min_effect must be in (0, 1), got {self.min_effect}")
        if not 0.5 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0.5, 1), got {self.confidence}")
        if self.min_samples < 2:
            raise ValueError(f"min_samples must be at least 2, got {self.min_samples}")
        if self.noise_floor < 0:
            raise ValueError(f"noise_floor must be >= 0, got {self.noise_floor}")

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class GateDecision:
    """What the gate decided for one metric, and the numbers it decided on."""

    verdict: str                  # one of VERDICTS
    reason: str                   # one sentence a reader can check against the numbers
    test: str                     # "mann-whitney" | "sign-test" | "none"
    n_stored: int
    n_new: int
    stored_median: float | None
    new_median: float | None
    ratio: float | None           # median(new) / median(stored): > 1 is slower / more energy
    ci_low: float | None          # bootstrap interval of the ratio at ``confidence``
    ci_high: float | None
    p_worse: float | None         # one-sided p-value for "new is larger"
    p_better: float | None        # one-sided p-value for "new is smaller"

    @property
    def flagged(self) -> bool:
        return self.verdict == REGRESSION

    def to_json(self) -> dict:
        return asdict(self)


def _clean(values: Sequence[float] | None) -> np.ndarray:
    a = np.asarray([] if values is None else [float(v) for v in values], dtype=np.float64)
    return a[np.isfinite(a) & (a > 0)]


def gate(stored: Sequence[float] | None, new: Sequence[float] | None,
         policy: GatePolicy = GatePolicy()) -> GateDecision:
    """Compare new samples of a metric with the stored ones (lower is better).

    ``stored`` may be a single value (the stored median of an entry without samples): then the
    new samples are tested against it as a fixed baseline (sign test, bootstrap of the new
    median only).
    """
    s, n = _clean(stored), _clean(new)
    base = dict(n_stored=int(s.size), n_new=int(n.size),
                stored_median=float(np.median(s)) if s.size else None,
                new_median=float(np.median(n)) if n.size else None)
    if s.size == 0:
        return GateDecision(INCONCLUSIVE, "no stored baseline to compare with", "none", ratio=None, ci_low=None,
                            ci_high=None, p_worse=None, p_better=None, **base)
    if n.size < policy.min_samples:
        return GateDecision(INCONCLUSIVE, f"{n.size} new sample(s); the gate needs at least {policy.min_samples} "
                            "repeated measurements", "none", ratio=_ratio(base), ci_low=None, ci_high=None,
                            p_worse=None, p_better=None, **base)

    rng = np.random.default_rng(policy.seed)
    new_meds = _bootstrap_medians(n, policy.resamples, rng)
    if s.size >= policy.min_samples:
        test = "mann-whitney"
        p_worse, p_better = mann_whitney_one_sided(n, s)
        ratios = new_meds / _bootstrap_medians(s, policy.resamples, rng)
    else:
        test = "sign-test"
        baseline = float(np.median(s))
        p_worse, p_better = sign_test_one_sided(n, baseline)
        ratios = new_meds / baseline
    alpha = 1.0 - policy.confidence
    lo, hi = (float(v) for v in np.quantile(ratios, [alpha / 2, 1 - alpha / 2]))
    ratio = _ratio(base)
    diff = abs(base["new_median"] - base["stored_median"])
    numbers = dict(test=test, ratio=ratio, ci_low=lo, ci_high=hi, p_worse=p_worse, p_better=p_better, **base)
    change = f"{(ratio - 1) * 100:+.1f}% (interval {(lo - 1) * 100:+.1f}%…{(hi - 1) * 100:+.1f}%)"

    worse = p_worse < alpha and lo > 1.0
    better = p_better < alpha and hi < 1.0
    if (worse or better) and diff < policy.noise_floor:
        return GateDecision(UNCHANGED, f"{change}: the medians differ by {diff:.3g}, under the noise floor "
                            f"{policy.noise_floor:g}", **numbers)
    if worse and ratio >= 1.0 + policy.min_effect:
        return GateDecision(REGRESSION, f"{change}, p={p_worse:.2g} ({test}): worse by more than "
                            f"{policy.min_effect:.0%}", **numbers)
    if better and ratio <= 1.0 / (1.0 + policy.min_effect):
        return GateDecision(IMPROVEMENT, f"{change}, p={p_better:.2g} ({test}): better by more than "
                            f"{policy.min_effect:.0%}", **numbers)
    if worse or better:
        return GateDecision(UNCHANGED, f"{change}: significant but under the {policy.min_effect:.0%} minimum "
                            "effect", **numbers)
    return GateDecision(UNCHANGED, f"{change}: not significant (p={min(p_worse, p_better):.2g}, "
                        f"needs < {alpha:.2g} and an interval clear of 0%)", **numbers)


def _ratio(base: dict) -> float | None:
    if base["stored_median"] and base["new_median"] is not None:
        return base["new_median"] / base["stored_median"]
    return None


def _bootstrap_medians(x: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    idx = rng.integers(0, x.size, size=(resamples, x.size))
    return np.median(x[idx], axis=1)


# ---------------------------------------------------------------------------------------------
# Rank tests (written out here: scipy is not a project dependency)


def mann_whitney_one_sided(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """One-sided Mann–Whitney U p-values (P[x tends larger], P[x tends smaller]).

    Exact null distribution when there are no ties and the samples are small; otherwise the
    normal approximation with tie and continuity corrections.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n1, n2 = x.size, y.size
    allv = np.concatenate([x, y])
    ranks = _midranks(allv)
    u = float(ranks[:n1].sum() - n1 * (n1 + 1) / 2)  # U of x: pairs where x > y (ties count 1/2)
    ties = np.unique(allv).size != allv.size
    if not ties and n1 + n2 <= _EXACT_MWU_MAX_N:
        counts = _u_distribution(n1, n2)
        total = counts.sum()
        k = int(round(u))
        p_larger = float(counts[k:].sum() / total)
        p_smaller = float(counts[:k + 1].sum() / total)
        return p_larger, p_smaller
    n = n1 + n2
    _, tie_counts = np.unique(allv, return_counts=True)
    tie_term = float(((tie_counts ** 3) - tie_counts).sum()) / (n * (n - 1)) if n > 1 else 0.0
    sigma = math.sqrt(n1 * n2 / 12.0 * ((n + 1) - tie_term))
    mu = n1 * n2 / 2.0
    if sigma == 0:
        return 1.0, 1.0
    z_larger = (u - mu - 0.5) / sigma
    z_smaller = (u - mu + 0.5) / sigma
    return _norm_sf(z_larger), _norm_cdf(z_smaller)


def _midranks(v: np.ndarray) -> np.ndarray:
    order = np.argsort(v, kind="mergesort")
    ranks = np.empty(v.size, dtype=np.float64)
    sv = v[order]
    i = 0
    while i < v.size:
        j = i
        while j + 1 < v.size and sv[j + 1] == sv[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def _u_distribution(n1: int, n2: int) -> np.ndarray:
    """Counts of each U value over all C(n1+n2, n1) arrangements (no ties)."""
    # f[i][j] = distribution of U for sizes (i, j); recurrence on whether the largest value is an x.
    max_u = n1 * n2
    f = [[None] * (n2 + 1) for _ in range(n1 + 1)]
    for i in range(n1 + 1):
        for j in range(n2 + 1):
            if i == 0 or j == 0:
                d = np.zeros(max_u + 1, dtype=np.float64)
                d[0] = 1.0
            else:
                d = np.zeros(max_u + 1, dtype=np.float64)
                d[j:] += f[i - 1][j][: max_u + 1 - j]   # largest is an x: it beats all j y's
                d += f[i][j - 1]                        # largest is a y
            f[i][j] = d
    return f[n1][n2]


def sign_test_one_sided(x: Sequence[float], baseline: float) -> tuple[float, float]:
    """Exact one-sided sign-test p-values of x against a fixed median (larger, smaller)."""
    x = np.asarray(x, dtype=np.float64)
    above = int((x > baseline).sum())
    below = int((x < baseline).sum())
    m = above + below
    if m == 0:
        return 1.0, 1.0
    tail = lambda k: sum(math.comb(m, i) for i in range(k, m + 1)) / 2.0 ** m  # noqa: E731
    return float(tail(above)), float(tail(below))


def _norm_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _norm_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))
