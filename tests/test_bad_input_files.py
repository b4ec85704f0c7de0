"""Bad input files at every entry point that reads one: never a traceback.

Each command gets a file that is not UTF-8, a binary file (random bytes with NULs), valid UTF-8
holding NUL bytes and, where the command reads gzipped JSON (tune's replay files), a truncated
and a corrupt ``.gz``. The expected answer is exit 2 with one ``error:`` line on stderr that
names the file and says what is wrong, and nothing written to the library. ``kernelagent.cli.main``
runs in this process with the command line in ``sys.argv``, so the file stays fast; one case
also runs in a fresh process. Every file here is rejected before a sandboxed worker starts.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

NOT_UTF8 = b"\xff\xfe\x00bad"
_rng = random.Random(20240611)
BINARY = bytes(_rng.getrandbits(8) for _ in range(4096))[:4000] + b"\x00" * 96
NUL_BYTES = b"x = 1\n" + b"\x00" * 64  # valid UTF-8, but no text file holds NULs
RECORDING = {"format": "kernelagent-recording", "version": 1, "op": "softmax", "sku": "h100-sxm",
             "dtype": "fp32", "bucket": "cols=4096", "device": "test",
             "measurements": [{"config": {"BLOCK_N": b}, "latency_us": 10.0 + b / 1024, "feasible": True}
                              for b in (1024, 2048, 4096)]}
_GZ = gzip.compress(json.dumps(RECORDING).encode(), mtime=0)
TRUNCATED_GZ = _GZ[: len(_GZ) // 2]
# A valid gzip header over a deflate stream that is not one (zlib.error, not OSError).
CORRUPT_GZ = _GZ[:10] + bytes(b ^ 0x55 for b in _GZ[10:])

CONTENTS = {"not_utf8": NOT_UTF8, "binary": BINARY, "nul_bytes": NUL_BYTES,
            "truncated_gz": TRUNCATED_GZ, "corrupt_gz": CORRUPT_GZ}
TEXT = ("not_utf8", "binary", "nul_bytes")   # for commands that read text, not gzip
# What the one error line must say is wrong, per kind of content.
WHAT = {"not_utf8": r"UTF-8|UTF-16", "binary": r"UTF-8|binary", "nul_bytes": r"binary|null bytes|JSON",
        "truncated_gz": r"gzip.*truncated", "corrupt_gz": r"corrupt gzip"}

# (id, file name, argv with {bad} for the bad file and {tmp} for the test's folder, contents)
ENTRY_POINTS = [
    ("verify-op-candidate", "cand.py", ["verify", "softmax", "{bad}"], TEXT),
    ("verify-problem", "problem.py", ["verify", "{bad}", "{tmp}/cand.py"], TEXT),
    ("sku-add", "gpu.json", ["sku", "add", "{bad}", "--dir", "{tmp}/skus"], TEXT),
    ("generate-problem", "problem.py", ["generate", "{bad}", "--base-url", "http://127.0.0.1:9/v1", "--max-iters", "1",
                                        "--db", "{tmp}/agent.db", "--out", "{tmp}/out"], TEXT),
    ("generate-replay", "exchanges.jsonl", ["generate", "--replay", "{bad}", "--db", "{tmp}/agent.db",
                                            "--out", "{tmp}/out"], TEXT),
    ("library-add-candidate", "cand.py", ["library", "add", "m", "{tmp}/problem.py", "{bad}", "--library", "{tmp}/lib"],
     TEXT),
    ("library-add-problem", "problem.py", ["library", "add", "m", "{bad}", "{tmp}/cand.py", "--library", "{tmp}/lib"],
     TEXT),
    ("tune-measure-replay", "rec.json.gz", ["tune", "--sku", "h100", "--op", "softmax", "--dtype", "fp32",
                                            "--trials", "2", "--measure", "replay:{bad}"], tuple(CONTENTS)),
    ("tune-replay", "rec.json.gz", ["tune", "--replay", "{bad}", "--trials", "2"], tuple(CONTENTS)),
]
CASES = [pytest.param(name, argv, kind, id=f"{eid}-{kind}")
         for eid, name, argv, kinds in ENTRY_POINTS for kind in kinds]


def run_cli(argv: list[str], capfd, monkeypatch) -> tuple[int, str, str]:
    """``kernelagent ARGV`` through the real entry point; an exception escaping ``main`` is what
    a user would see as a traceback, so it is returned as one on stderr."""
    from kernelagent import cli

    monkeypatch.setattr(sys, "argv", ["kernelagent", *argv])
    try:
        cli.main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException as e:  # noqa: BLE001 - exactly what must never happen
        out, errs = capfd.readouterr()
        return -1, out, errs + f"\nTraceback (escaped main): {type(e).__name__}: {e}"
    out, errs = capfd.readouterr()
    return code, out, errs


def _snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.is_dir() else set()


@pytest.mark.parametrize("name, argv, kind", CASES)
def test_bad_file_is_exit_2_with_one_line_naming_it(tmp_path, monkeypatch, capfd, name, argv, kind):
    from kernelagent.kernels._configs import user_library_dir

    monkeypatch.chdir(tmp_path)
    (tmp_path / "cand.py").write_text("class ModelNew:\n    pass\n")
    bad = tmp_path / name
    bad.write_bytes(CONTENTS[kind])
    library = user_library_dir()
    before = _snapshot(library)

    code, out, errs = run_cli([a.format(bad=bad, tmp=tmp_path) for a in argv], capfd, monkeypatch)

    assert "Traceback" not in errs, errs[-2000:]
    assert code == 2, (code, errs[-2000:])
    lines = [ln for ln in errs.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and len(lines) == 1, lines
    assert str(bad) in errors[0], errors[0]
    assert re.search(WHAT[kind], errors[0], re.IGNORECASE), errors[0]
    assert _snapshot(library) == before                     # nothing written to the library
    assert not (tmp_path / "skus").exists() or not any((tmp_path / "skus").iterdir())
    assert not (tmp_path / "out").exists() and not (tmp_path / "kernelagent-out").exists()


def test_a_good_recording_still_replays(tmp_path, monkeypatch, capfd):
    """The same recording, whole, is read: the cases above fail for their bytes alone."""
    good = tmp_path / "rec.json.gz"
    good.write_bytes(_GZ)
    code, out, errs = run_cli(["tune", "--replay", str(good), "--trials", "2", "--seed", "0", "--json"],
                              capfd, monkeypatch)
    assert code == 0, errs[-2000:]
    assert json.loads(out)["recorded_configs"] == 3


def test_across_the_process_boundary_too(tmp_path):
    """One case as a user runs it: ``python -m kernelagent.cli`` in a fresh process."""
    bad = tmp_path / "rec.json.gz"
    bad.write_bytes(CORRUPT_GZ)
    p = subprocess.run([sys.executable, "-m", "kernelagent.cli", "tune", "--replay", str(bad), "--trials", "2"],
                       capture_output=True, text=True, timeout=120, env=dict(os.environ), cwd=tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-2000:]
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: replay file {bad}: corrupt gzip data"), lines
