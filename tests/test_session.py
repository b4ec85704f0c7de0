"""A candidate session: one worker per candidate, configs switched per request, references
computed once; verify and measure both use it (tuning's access pattern)."""

from __future__ import annotations

import pytest

from kernelagent.harness import verify
from kernelagent.harness.measure import MeasureError, MeasureOptions, measure
from kernelagent.harness.session import CandidateSession, RefCache
from kernelagent.kernels import kernel_path

SOURCE = kernel_path("softmax").read_text()
CASE = {"batch": 0, "rows": 3, "cols": 40}
QUICK = MeasureOptions(energy=False, meter=None, input_sets=2, min_calls=2, max_calls=4, rep_ms=1.0,
                       warmup_ms=1.0, seed=5)


def test_a_tuning_run_reuses_one_worker_and_computes_references_once():
    configs = [{"BLOCK_N": 64, "num_warps": 4}, {"BLOCK_N": 16, "num_warps": 1}]
    with CandidateSession("softmax", SOURCE) as s:
        ms = [measure("softmax", SOURCE, CASE, config=c, options=QUICK, session=s) for c in configs * 2]
        assert all(m.ok and m.median_s for m in ms), [m.flags for m in ms]
        assert s.starts == 1 and s.uses == 4
        plan_misses = s.refs.misses
        # Re-verify two configs on the same cases, in the same worker.
        v = [verify("softmax", SOURCE, config=c, examples=3, seed=9, session=s) for c in configs]
        assert all(x.verified for x in v), [(x.reason, x.detail[-300:]) for x in v]
        assert s.starts == 1 and s.uses == 6
        # The second verify found every case's inputs and references in the session.
        assert s.refs.misses - plan_misses <= v[0].trials * 2
        assert s.refs.hits >= v[1].trials + 3


def test_the_config_is_switched_in_the_same_worker():
    """A config the kernel cannot run (BLOCK_N not a power of two) is rejected; the next config
    in the same session verifies: each request's config reached the kernel."""
    with CandidateSession("softmax", SOURCE) as s:
        bad = verify("softmax", SOURCE, config={"BLOCK_N": 48, "num_warps": 4}, examples=2, seed=1, session=s)
        good = verify("softmax", SOURCE, config={"BLOCK_N": 64, "num_warps": 4}, examples=2, seed=1, session=s)
    assert not bad.verified and bad.reason in {"compile-error", "runtime-error"}, (bad.reason, bad.detail[-300:])
    assert good.verified, (good.reason, good.detail[-300:])


def test_a_worker_that_dies_is_restarted_on_next_use():
    crash = SOURCE.replace('    """Softmax over the last dim', '    if config and config.get("crash"):\n'
                           '        import os\n        os._exit(3)\n    """Softmax over the last dim', 1)
    assert crash != SOURCE
    with CandidateSession("softmax", crash, static_checks=False) as s:
        dead = verify("softmax", crash, config={"crash": 1}, examples=2, seed=1, session=s)
        alive = verify("softmax", crash, config=None, examples=2, seed=1, session=s)
    assert dead.reason == "crash" and alive.verified, (dead.reason, alive.reason, alive.detail[-300:])
    assert s.starts == 2


def test_a_session_for_another_candidate_is_refused():
    with CandidateSession("softmax", SOURCE) as s:
        with pytest.raises(ValueError, match="another target or candidate"):
            verify("softmax", SOURCE + "\n# edited\n", session=s)
        with pytest.raises(ValueError, match="another target or candidate"):
            measure("rms_norm", SOURCE, CASE, options=QUICK, session=s)


def test_a_static_rejection_is_decided_once_without_a_worker():
    src = "import os\n" + SOURCE
    with CandidateSession("softmax", src) as s:
        assert verify("softmax", src, session=s).reason == "forbidden"
        with pytest.raises(MeasureError):
            measure("softmax", src, CASE, options=QUICK, session=s)
        assert s.starts == 0


def test_the_reference_cache_is_bounded_least_recently_used_first():
    c = RefCache(max_bytes=100)
    c.put("a", 1, 40)
    c.put("b", 2, 40)
    assert c.get("a") == 1          # a is now the most recent
    c.put("c", 3, 40)               # over 100: b goes
    assert c.get("b") is None and c.get("a") == 1 and c.get("c") == 3
    c.put("huge", 4, 1000)          # larger than the whole cache: not kept
    assert c.get("huge") is None and c.bytes <= 100
