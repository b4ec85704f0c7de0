"""User modules through the public surface: `kernelagent library add/list/remove` and
`kernelagent.kernels.load_module(NAME)`, giving the problem's Model output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent
PROBLEM = HERE / "problems" / "relu_scale.py"
CANDIDATE = HERE / "modules" / "relu_scale_tunable.py"      # declares TUNING_SPACE, reads CONFIG
ZEROS = CANDIDATE.read_text().replace("tl.maximum(x, 0.0) * w", "x * 0.0")


def cli(*args: str, library: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, TRITON_INTERPRET="1", KERNELAGENT_LIBRARY=str(library))
    return subprocess.run([sys.executable, "-m", "kernelagent.cli", *args], capture_output=True, text=True,
                          timeout=300, env=env)


def _problem_model():
    import importlib.util

    spec = importlib.util.spec_from_file_location("relu_scale_problem", PROBLEM)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_add_list_load_and_remove(tmp_path, monkeypatch):
    lib = tmp_path / "lib"
    p = cli("library", "add", "relu_scale", str(PROBLEM), str(CANDIDATE), "--examples", "3",
            "--config", '{"BLOCK": 256}', "--json", library=lib)
    assert p.returncode == 0, p.stdout + p.stderr
    out = json.loads(p.stdout)
    assert out["added"] and out["verdict"]["verified"]
    entry = json.loads((lib / "modules" / "relu_scale" / "entry.json").read_text())
    assert entry["config"] == {"BLOCK": 256} and entry["tuning_space"] == {"BLOCK": [256, 512, 1024]}
    assert entry["verified"]["trials"] == 3 and entry["provenance"]["origin"] == "user"

    listed = json.loads(cli("library", "list", "--json", library=lib).stdout)
    assert [r["name"] for r in listed] == ["relu_scale"] and listed[0]["ok"]

    monkeypatch.setenv("KERNELAGENT_LIBRARY", str(lib))
    from kernelagent.kernels import load_module

    ModelNew = load_module("relu_scale")
    problem = _problem_model()
    torch.manual_seed(3)
    model = problem.Model(*problem.get_init_inputs())
    torch.manual_seed(3)
    new = ModelNew(*problem.get_init_inputs())
    assert new.block == 256                                   # the recorded config reached CONFIG
    x = torch.randn(5, 96)
    torch.testing.assert_close(new(x), model(x))

    p = cli("library", "remove", "relu_scale", library=lib)
    assert p.returncode == 0 and not (lib / "modules" / "relu_scale").exists()
    assert "no user modules" in cli("library", "list", library=lib).stdout


def test_a_rejected_candidate_is_not_stored(tmp_path):
    bad = tmp_path / "zeros.py"
    bad.write_text(ZEROS)
    p = cli("library", "add", "relu_scale", str(PROBLEM), str(bad), "--examples", "3", library=tmp_path / "lib")
    assert p.returncode == 1, p.stdout + p.stderr
    assert "not added" in p.stderr and "mismatch" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "lib" / "modules" / "relu_scale").exists()


def test_the_config_reaches_the_candidate_during_verification(tmp_path):
    """BLOCK 100 is not a power of two: Triton refuses it, so the config was applied."""
    p = cli("library", "add", "relu_scale", str(PROBLEM), str(CANDIDATE), "--examples", "2",
            "--config", '{"BLOCK": 100}', library=tmp_path / "lib")
    assert p.returncode == 1 and "compile-error" in p.stderr, p.stderr[-800:]


@pytest.mark.parametrize("args, message", [
    (["library", "add", "9bad name", str(PROBLEM), str(CANDIDATE)], "bad module name"),
    (["library", "add", "m", str(PROBLEM), str(CANDIDATE), "--config", '{"NOPE": 1}'], "not in the candidate's TUNING_SPACE"),
    (["library", "remove", "nothing_here"], "no user module 'nothing_here'"),
])
def test_bad_input_is_exit_2_with_the_fix(tmp_path, args, message):
    p = cli(*args, library=tmp_path / "lib")
    assert p.returncode == 2, p.stdout + p.stderr
    assert message in p.stderr and "Traceback" not in p.stderr


def test_a_tampered_module_is_refused_by_name(tmp_path, monkeypatch):
    from kernelagent.kernels._modules import CANDIDATE_FILE, ENTRY_FILE, UnknownModuleError, load_module, sha256_text

    folder = tmp_path / "lib" / "modules" / "relu_scale"
    folder.mkdir(parents=True)
    (folder / "problem.py").write_text(PROBLEM.read_text())
    (folder / CANDIDATE_FILE).write_text(CANDIDATE.read_text() + "\n# edited after verification\n")
    (folder / ENTRY_FILE).write_text(json.dumps({
        "version": 1, "name": "relu_scale", "problem_sha256": sha256_text(PROBLEM.read_text()),
        "candidate_sha256": sha256_text(CANDIDATE.read_text()), "config": None, "tuning_space": None,
        "verified": {}, "provenance": {}}))
    with pytest.raises(UnknownModuleError, match="candidate.py changed since it was verified"):
        load_module("relu_scale", library=tmp_path / "lib")
    listed = json.loads(cli("library", "list", "--json", library=tmp_path / "lib").stdout)
    assert listed[0]["ok"] is False and "candidate.py" in listed[0]["problem_note"]
    with pytest.raises(UnknownModuleError, match="no user module 'other'"):
        load_module("other", library=tmp_path / "lib")


def test_tuning_a_module_needs_its_space_and_a_gpu(tmp_path):
    lib = tmp_path / "lib"
    assert cli("library", "add", "relu_scale", str(PROBLEM), str(CANDIDATE), "--examples", "2",
               library=lib).returncode == 0
    p = cli("tune", "--module", "relu_scale", "--trials", "2", library=lib)
    if torch.cuda.is_available():
        pytest.skip("covered by the gpu test below")
    assert p.returncode == 3 and "GPU" in p.stderr and "Traceback" not in p.stderr, p.stderr[-800:]
    plain = HERE / "redteam" / "problem_control.py"            # no TUNING_SPACE
    assert cli("library", "add", "plain", str(PROBLEM), str(plain), "--examples", "2", library=lib).returncode == 0
    p = cli("tune", "--module", "plain", library=lib)
    assert p.returncode == 2 and "declares no TUNING_SPACE" in p.stderr, p.stderr[-800:]


@pytest.mark.gpu
def test_tuning_a_module_on_the_gpu_records_the_winner(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    lib = tmp_path / "lib"
    assert cli("library", "add", "relu_scale", str(PROBLEM), str(CANDIDATE), "--examples", "2",
               library=lib).returncode == 0
    p = cli("tune", "--module", "relu_scale", "--trials", "3", "--json", "--seed", "1", library=lib)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout)
    entry = json.loads((lib / "modules" / "relu_scale" / "entry.json").read_text())
    assert out["written"] and entry["config"] == out["config"] and entry["tuned"]["measured"] is True
