"""The red-team corpus (tests/redteam/): every cheat rejected with its reason, controls pass,
and this (parent) process survives all of them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kernelagent.errors import BadInput
from kernelagent.harness import verify

CORPUS = Path(__file__).parent / "redteam"
PROBLEMS = Path(__file__).parent / "problems"


def _header(path: Path) -> dict[str, str]:
    meta = {}
    for line in path.read_text().splitlines():
        if not line.startswith("# ") or ":" not in line:
            break
        key, _, value = line[2:].partition(":")
        meta[key.strip()] = value.strip()
    return meta


CANDIDATES = sorted(p for p in CORPUS.glob("*.py"))


@pytest.mark.parametrize("path", CANDIDATES, ids=[p.stem for p in CANDIDATES])
def test_redteam_candidate(path: Path):
    meta = _header(path)
    target = meta["target"]
    if target.startswith("problem:"):
        target = str(PROBLEMS / target.split(":", 1)[1])
    expect = meta["expect"].split("|")
    timeout = 12.0 if "timeout" in expect else 120.0
    try:
        verdict = verify(target, path.read_text(), examples=int(meta.get("examples", 6)), seed=20261126,
                         timeout=timeout, candidate_name=path.name, static_checks=meta.get("static", "on") != "off")
    except BadInput as e:
        assert "bad-input" in expect, f"unexpected BadInput: {e}"
        return
    if "verified" in expect:
        assert verdict.verified, f"control rejected: {verdict.reason}: {verdict.detail}"
        assert verdict.trials >= 1
    else:
        assert not verdict.verified, f"{path.name} ({meta['taxonomy']}) was verified"
        assert verdict.reason in expect, f"{path.name}: got {verdict.reason} ({verdict.detail[:300]}), expected {expect}"
    # This process survived (we are here), and the candidate left nothing running under it.
    assert _children() == [], f"{path.name} left processes behind: {_children()}"


def _children() -> list[int]:
    me = os.getpid()
    return [int(c) for c in Path(f"/proc/{me}/task/{me}/children").read_text().split()]
