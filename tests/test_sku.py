"""The SKU registry: shipped files are valid, validation names every problem, aliases, device
matching (fake NVML devices), nearest-SKU warm starts, and the `kernelagent sku` commands."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kernelagent import sku as registry
from kernelagent.errors import BadInput, EnvironmentProblem

REQUIRED = ["a100-sxm", "h100-sxm", "h100-pcie", "h200", "b200", "l40s", "rtx-4090", "rtx-5090", "mi300x"]


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    d = tmp_path / "skus"
    monkeypatch.setenv("KERNELAGENT_SKU_DIR", str(d))
    return d


def h100_doc() -> dict:
    return copy.deepcopy(dict(registry.get_sku("h100-sxm").data))


def problems_for(doc) -> dict[str, str]:
    return {p.field: p.message for p in registry.validate_sku_data(doc, "x.json")}


# ---------------------------------------------------------------------------------------------
# Shipped data


def test_shipped_skus_are_valid_and_complete(user_dir):
    skus = registry.load_skus()
    assert set(REQUIRED) <= set(skus)
    for s in skus.values():
        assert registry.validate_sku_data(dict(s.data)) == []
        assert s.sources and all(len(src) > 20 for src in s.sources)
        assert s.peak("bf16") and s.peak("fp32") and s.peak("bf16") > s.peak("fp32")
        assert s.smem_per_block_bytes <= s.smem_per_sm_bytes
        assert isinstance(s.data["compute_capability"], list) and len(s.data["compute_capability"]) == 2
    assert skus["h100-sxm"].arch == "sm_90" and skus["h100-sxm"].sm_count == 132
    assert skus["b200"].arch == "sm_100" and skus["rtx-5090"].family == "blackwell-consumer"
    assert skus["a100-sxm"].peak("fp8") is None
    mi = skus["mi300x"]
    assert mi.vendor == "amd" and mi.arch == "gfx942" and not mi.static_compile and "untested" in mi.notes.lower()


def test_aliases_and_unknown(user_dir):
    assert registry.get_sku("h100").id == "h100-sxm"
    assert registry.get_sku("H100").id == "h100-sxm"
    assert registry.get_sku("A100").id == "a100-sxm"
    assert registry.get_sku("  h100-PCIE ").id == "h100-pcie"
    with pytest.raises(BadInput) as e:
        registry.get_sku("h900")
    assert "h900" in str(e.value) and "h100-sxm" in str(e.value) and "mi300x" in str(e.value)


# ---------------------------------------------------------------------------------------------
# Validation: each kind of problem, named by field


def test_valid_document_has_no_problems():
    assert registry.validate_sku_data(h100_doc()) == []


def test_missing_field():
    doc = h100_doc()
    del doc["sm_count"]
    assert problems_for(doc)["sm_count"] == "missing required field"


def test_wrong_type():
    doc = h100_doc()
    doc["sm_count"] = "132"
    doc["compute_capability"] = "9.0"
    doc["static_compile"] = 1
    probs = problems_for(doc)
    assert "wrong type" in probs["sm_count"] and "str" in probs["sm_count"]
    assert "wrong type" in probs["compute_capability"]
    assert "wrong type" in probs["static_compile"]


def test_bool_is_not_a_number():
    doc = h100_doc()
    doc["sm_count"] = True
    assert "wrong type" in problems_for(doc)["sm_count"]


def test_unknown_arch_family_vendor():
    doc = h100_doc()
    doc["arch"], doc["family"], doc["vendor"] = "sm_99", "volta-ish", "intel"
    probs = problems_for(doc)
    assert "unknown arch 'sm_99'" in probs["arch"]
    assert "unknown family" in probs["family"]
    assert "unknown vendor" in probs["vendor"]


def test_negative_and_zero_numbers():
    doc = h100_doc()
    doc["mem_bandwidth_gbps"] = -3350
    doc["l2_bytes"] = 0
    doc["peak_tflops"]["bf16"] = -1.0
    probs = problems_for(doc)
    assert "must be positive" in probs["mem_bandwidth_gbps"] and "-3350" in probs["mem_bandwidth_gbps"]
    assert "must be positive" in probs["l2_bytes"]
    assert "must be positive" in probs["peak_tflops.bf16"]


def test_bad_regex_and_empty_match():
    doc = h100_doc()
    doc["match"] = ["H100(", "ok"]
    probs = problems_for(doc)
    assert "bad regex" in probs["match[0]"] and "H100(" in probs["match[0]"]
    doc["match"] = []
    assert "at least one pattern" in problems_for(doc)["match"]


def test_compute_capability_shape_and_agreement():
    doc = h100_doc()
    doc["compute_capability"] = [9]
    assert "two non-negative ints" in problems_for(doc)["compute_capability"]
    doc["compute_capability"] = [8, 0]
    assert "disagrees with arch 'sm_90'" in problems_for(doc)["compute_capability"]


def test_peak_keys_and_unknown_fields():
    doc = h100_doc()
    del doc["peak_tflops"]["fp8"]
    doc["peak_tflops"]["int4"] = 5.0
    doc["sm_cout"] = 132
    probs = problems_for(doc)
    assert "missing" in probs["peak_tflops.fp8"]
    assert "unknown precision" in probs["peak_tflops.int4"]
    assert "unknown field" in probs["sm_cout"]


def test_every_problem_is_reported_at_once():
    doc = h100_doc()
    del doc["name"]
    doc["arch"] = "sm_1"
    doc["sm_count"] = -1
    doc["match"] = ["("]
    fields = {p.field for p in registry.validate_sku_data(doc)}
    assert {"name", "arch", "sm_count", "match[0]"} <= fields


def test_duplicate_id_and_alias_across_files(user_dir):
    user_dir.mkdir(parents=True)
    doc = h100_doc()
    (user_dir / "mine.json").write_text(json.dumps(doc))
    with pytest.raises(BadInput) as e:
        registry.load_skus()
    msg = str(e.value)
    assert "duplicate id 'h100-sxm'" in msg and "mine.json" in msg
    doc["id"], doc["aliases"] = "h100-custom", ["a100"]
    (user_dir / "mine.json").write_text(json.dumps(doc))
    with pytest.raises(BadInput, match="duplicate alias 'a100'"):
        registry.load_skus()


def test_user_sku_dir_is_searched(user_dir, tmp_path):
    user_dir.mkdir(parents=True)
    doc = h100_doc()
    doc.update(id="h100-lab", aliases=["lab"], match=["H100 LAB"], name="lab H100")
    (user_dir / "h100-lab.json").write_text(json.dumps(doc))
    s = registry.get_sku("lab")
    assert s.id == "h100-lab" and s.origin == "user"
    # An explicit folder argument overrides the environment.
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(BadInput):
        registry.get_sku("lab", user_dir=other)


# ---------------------------------------------------------------------------------------------
# Detect, with fake NVML devices


class FakeProbe:
    def __init__(self, devices, name="NVML", fail=None):
        self._devices, self.name, self._fail = devices, name, fail

    def devices(self):
        if self._fail:
            raise EnvironmentProblem(self._fail)
        return self._devices


def fake(name, cc):
    return [FakeProbe([registry.DeviceInfo(name, cc)])]


@pytest.mark.parametrize("name,cc,expected", [
    ("NVIDIA H100 80GB HBM3", (9, 0), "h100-sxm"),
    ("NVIDIA H100 PCIe", (9, 0), "h100-pcie"),
    ("NVIDIA H200", (9, 0), "h200"),
    ("NVIDIA A100-SXM4-80GB", (8, 0), "a100-sxm"),
    ("NVIDIA B200", (10, 0), "b200"),
    ("NVIDIA GeForce RTX 4090", (8, 9), "rtx-4090"),
    ("NVIDIA GeForce RTX 5090", (12, 0), "rtx-5090"),
    ("NVIDIA L40S", (8, 9), "l40s"),
    ("AMD Instinct MI300X", (9, 4), "mi300x"),
])
def test_detect_maps_device_names(user_dir, name, cc, expected):
    s, dev = registry.detect(probes=fake(name, cc))
    assert s.id == expected and dev.name == name


@pytest.mark.parametrize("name,cc", [
    ("NVIDIA GH200 480GB", (9, 0)),     # contains "H200" but is not one
    ("NVIDIA H100 NVL", (9, 0)),        # neither PCIe nor SXM figures
    ("NVIDIA A100 80GB PCIe", (8, 0)),
    ("Tesla T4", (7, 5)),
])
def test_detect_unknown_device_names_it_and_says_how_to_add(user_dir, name, cc):
    with pytest.raises(EnvironmentProblem) as e:
        registry.detect(probes=fake(name, cc))
    assert name in str(e.value) and "kernelagent sku add" in str(e.value)


def test_match_tie_break_prefers_compute_capability_then_specificity(user_dir):
    user_dir.mkdir(parents=True)
    doc = h100_doc()
    doc.update(id="any-nvidia", aliases=[], match=["NVIDIA"])
    (user_dir / "any.json").write_text(json.dumps(doc))
    # Both match; the longer match ("H100 80GB HBM3") is the more specific one.
    assert registry.detect(probes=fake("NVIDIA H100 80GB HBM3", (9, 0)))[0].id == "h100-sxm"
    # Only the loose pattern matches this name.
    assert registry.detect(probes=fake("NVIDIA H100 NVL", (9, 0)))[0].id == "any-nvidia"
    # Equal compute capability outranks pattern length.
    doc.update(id="old-nvidia", match=["NVIDIA"], compute_capability=[8, 0], arch="sm_80", family="ampere")
    (user_dir / "any.json").write_text(json.dumps(doc))
    assert registry.detect(probes=fake("NVIDIA H100 80GB HBM3", (8, 0)))[0].id == "old-nvidia"


def test_detect_falls_back_to_the_next_probe(user_dir):
    probes = [FakeProbe([], fail="NVML Shared Library Not Found"),
              FakeProbe([registry.DeviceInfo("NVIDIA H100 PCIe", (9, 0), source="torch")], name="torch.cuda")]
    s, dev = registry.detect(probes=probes)
    assert s.id == "h100-pcie" and dev.source == "torch"


def test_detect_without_gpu_is_an_environment_problem(user_dir):
    probes = [FakeProbe([], fail="NVML Shared Library Not Found"), FakeProbe([], name="torch.cuda")]
    with pytest.raises(EnvironmentProblem) as e:
        registry.detect(probes=probes)
    assert e.value.exit_code == 3 and "no GPU" in str(e.value) and "NVML Shared Library Not Found" in str(e.value)


# ---------------------------------------------------------------------------------------------
# Nearest SKU for warm starts


def test_nearest_sku_prefers_family_then_similarity(user_dir):
    skus = registry.load_skus()
    near = lambda i: registry.nearest_sku(skus[i], skus.values()).id  # noqa: E731
    assert near("h100-sxm") == "h200"
    assert near("h200") == "h100-sxm"
    assert near("l40s") == "rtx-4090"
    assert near("rtx-5090") == "rtx-4090"   # programs like sm_89 despite the number
    assert near("b200") in ("h100-sxm", "h200")
    assert registry.nearest_sku(skus["h100-sxm"], [skus["h100-sxm"]]) is None
    ranked = [s.id for s in registry.rank_similar(skus["h100-sxm"], skus.values())]
    assert ranked.index("h100-pcie") < ranked.index("a100-sxm") < ranked.index("mi300x")


# ---------------------------------------------------------------------------------------------
# CLI


@pytest.fixture
def cli(user_dir):
    from kernelagent.cli import app

    runner = CliRunner()
    return lambda *args: runner.invoke(app, ["sku", *args])


def test_cli_list_and_show(cli):
    r = cli("list")
    assert r.exit_code == 0 and "h100-sxm" in r.stdout and "mi300x" in r.stdout
    r = cli("list", "--json")
    assert r.exit_code == 0 and {d["id"] for d in json.loads(r.stdout)} >= set(REQUIRED)
    r = cli("show", "h100")
    assert r.exit_code == 0 and "NVIDIA H100 Tensor Core GPU datasheet" in r.stdout and "sources:" in r.stdout
    r = cli("show", "h100", "--json")
    assert json.loads(r.stdout)["id"] == "h100-sxm"
    r = cli("show", "h900")
    assert isinstance(r.exception, BadInput)


def test_cli_add_validates_and_copies(cli, user_dir, tmp_path):
    bad = h100_doc()
    bad.update(id="bad-one", aliases=[], sm_count=-5, arch="sm_1")
    del bad["name"]
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(bad))
    r = cli("add", str(f), "--json")
    assert isinstance(r.exception, BadInput) and r.exception.exit_code == 2
    probs = {p["field"] for p in json.loads(r.stdout)["problems"]}
    assert {"sm_count", "arch", "name"} <= probs
    assert not (user_dir / "bad-one.json").exists()

    good = h100_doc()
    good.update(id="h100-lab", aliases=["lab"], match=["H100 LAB"])
    f.write_text(json.dumps(good))
    r = cli("add", str(f), "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["ok"] and Path(out["path"]) == user_dir / "h100-lab.json"
    assert registry.get_sku("lab").id == "h100-lab"
    # Adding the same id again replaces the user's own file; a shipped id is a duplicate.
    assert cli("add", str(f)).exit_code == 0
    good["id"] = "h200"
    f.write_text(json.dumps(good))
    r = cli("add", str(f))
    assert isinstance(r.exception, BadInput) and "duplicate id 'h200'" in r.output


def test_cli_detect_without_gpu(cli, monkeypatch):
    monkeypatch.setattr(registry, "default_probes",
                        lambda: [FakeProbe([], fail="NVML Shared Library Not Found"), FakeProbe([], name="torch.cuda")])
    r = cli("detect")
    assert isinstance(r.exception, EnvironmentProblem) and r.exception.exit_code == 3
    monkeypatch.setattr(registry, "default_probes", lambda: fake("NVIDIA H200", (9, 0)))
    r = cli("detect", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["sku"] == "h200"


def _run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "kernelagent.cli", "sku", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_cli_exit_codes_without_tracebacks(user_dir, tmp_path):
    env = dict(os.environ, KERNELAGENT_SKU_DIR=str(user_dir))
    r = _run("show", "nope", env=env)
    assert r.returncode == 2 and r.stderr.startswith("error: unknown SKU 'nope'") and "Traceback" not in r.stderr
    f = tmp_path / "broken.json"
    f.write_text("{not json")
    r = _run("add", str(f), env=env)
    assert r.returncode == 2 and "not valid JSON" in r.stderr and "Traceback" not in r.stderr
    r = _run("list", "--json", env=env)
    assert r.returncode == 0 and json.loads(r.stdout)
