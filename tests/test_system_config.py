"""System configs (SM clock, power limit) through NVML: asked for, permitted, always restored.

Driven against a simulated NVML device; nothing here touches a real GPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from kernelagent.errors import BadInput, EnvironmentProblem
from kernelagent.tuner.system import SystemControl, parse_dimensions, split_config

SUPPORTED = list(range(1980, 344, -15))   # graphics clocks at the current memory clock, MHz


class FakeNvml:
    """A simulated NVML device: power limit 200–700 W (default 700), application clocks."""

    NVML_CLOCK_GRAPHICS, NVML_CLOCK_SM, NVML_CLOCK_MEM = 0, 1, 2
    NVML_ERROR_NO_PERMISSION, NVML_ERROR_INVALID_ARGUMENT = 4, 2

    class NVMLError(Exception):
        def __init__(self, value):
            super().__init__(f"NVML error {value}")
            self.value = value

    def __init__(self, *, permitted=True):
        self.permitted, self.broken = permitted, False
        self.limit_mw, self.app = 650_000, (2619, 1755)
        self.sets: list[tuple] = []

    def nvmlInit(self):
        pass

    def nvmlDeviceGetHandleByIndex(self, i):
        return f"gpu{i}"

    def nvmlDeviceGetPowerManagementLimitConstraints(self, h):
        return [200_000, 700_000]

    def nvmlDeviceGetPowerManagementLimit(self, h):
        return self.limit_mw

    def nvmlDeviceGetPowerManagementDefaultLimit(self, h):
        return 700_000

    def nvmlDeviceGetApplicationsClock(self, h, kind):
        return self.app[0] if kind == self.NVML_CLOCK_MEM else self.app[1]

    def nvmlDeviceGetSupportedGraphicsClocks(self, h, mem):
        assert mem == 2619
        return list(SUPPORTED)

    def _may_set(self):
        if not self.permitted:
            raise self.NVMLError(self.NVML_ERROR_NO_PERMISSION)
        if self.broken:
            raise self.NVMLError(999)

    def nvmlDeviceSetPowerManagementLimit(self, h, mw):
        self._may_set()
        if not 200_000 <= mw <= 700_000:
            raise self.NVMLError(self.NVML_ERROR_INVALID_ARGUMENT)
        self.sets.append(("limit", mw))
        self.limit_mw = mw

    def nvmlDeviceSetApplicationsClocks(self, h, mem, gr):
        self._may_set()
        if gr not in SUPPORTED:
            raise self.NVMLError(self.NVML_ERROR_INVALID_ARGUMENT)
        self.sets.append(("clocks", mem, gr))
        self.app = (mem, gr)

    def nvmlDeviceResetApplicationsClocks(self, h):
        self._may_set()
        self.app = (2619, 1980)


def control(nv, tmp_path, dims=("clocks", "power-limit")):
    return SystemControl(dims, nvml=nv, marker_path=tmp_path / "system-config.json")


def test_dimensions_are_parsed_and_unknown_ones_named():
    assert parse_dimensions("clocks,power-limit") == ("clocks", "power-limit")
    assert parse_dimensions(None) == ()
    with pytest.raises(BadInput, match="memory-clock"):
        parse_dimensions("clocks,memory-clock")
    assert split_config({"BLOCK": 64, "sm_clock_mhz": 1500}) == ({"BLOCK": 64}, {"sm_clock_mhz": 1500})


def test_without_permission_nothing_is_changed_and_it_is_an_environment_problem(tmp_path):
    nv = FakeNvml(permitted=False)
    with pytest.raises(EnvironmentProblem, match="may not change them") as e:
        with control(nv, tmp_path):
            pass
    assert e.value.exit_code == 3
    assert nv.sets == [] and (nv.limit_mw, nv.app) == (650_000, (2619, 1755))
    assert not (tmp_path / "system-config.json").exists()


def test_search_values_come_from_the_board(tmp_path):
    c = control(FakeNvml(), tmp_path).open()
    values = c.space_values()
    assert set(values["sm_clock_mhz"]) <= set(SUPPORTED) and max(SUPPORTED) in values["sm_clock_mhz"]
    assert 3 <= len(values["sm_clock_mhz"]) <= 7 and values["sm_clock_mhz"] == sorted(values["sm_clock_mhz"])
    assert values["power_limit_w"][0] == 200 and values["power_limit_w"][-1] == 700
    assert all(200 <= w <= 700 for w in values["power_limit_w"])
    assert c.current() == {"sm_clock_mhz": 1755, "power_limit_w": 650}


def test_settings_are_restored_after_a_run_and_the_marker_removed(tmp_path):
    nv = FakeNvml()
    marker = tmp_path / "system-config.json"
    with control(nv, tmp_path) as c:
        saved = json.loads(marker.read_text())
        assert saved["pid"] == os.getpid() and saved["saved"] == {"power_limit_mw": 650_000, "app_clocks": [2619, 1755]}
        c.apply({"sm_clock_mhz": 1200, "power_limit_w": 400})
        assert (nv.limit_mw, nv.app) == (400_000, (2619, 1200))
    assert (nv.limit_mw, nv.app) == (650_000, (2619, 1755))
    assert not marker.exists()


def test_settings_are_restored_when_the_run_fails(tmp_path):
    nv = FakeNvml()
    with pytest.raises(ZeroDivisionError):
        with control(nv, tmp_path) as c:
            c.apply({"power_limit_w": 300})
            1 / 0
    assert nv.limit_mw == 650_000 and not (tmp_path / "system-config.json").exists()


@pytest.mark.parametrize("sig,raised", [(signal.SIGTERM, SystemExit), (signal.SIGINT, KeyboardInterrupt)])
def test_settings_are_restored_on_a_signal(tmp_path, sig, raised):
    nv = FakeNvml()
    before = signal.getsignal(sig)
    with pytest.raises(raised):
        with control(nv, tmp_path) as c:
            c.apply({"sm_clock_mhz": 900, "power_limit_w": 250})
            os.kill(os.getpid(), sig)
    assert (nv.limit_mw, nv.app) == (650_000, (2619, 1755))
    assert signal.getsignal(sig) is before           # the caller's handler is back


def test_a_failed_restore_keeps_the_marker_and_the_next_start_restores(tmp_path):
    nv = FakeNvml()
    marker = tmp_path / "system-config.json"
    with pytest.raises(EnvironmentProblem, match="could not restore") as e:
        with control(nv, tmp_path) as c:
            c.apply({"power_limit_w": 300, "sm_clock_mhz": 1005})
            nv.broken = True
    assert "nvidia-smi -pl 650" in str(e.value) and "nvidia-smi -ac 2619,1755" in str(e.value)
    assert marker.exists() and nv.limit_mw == 300_000
    nv.broken = False
    c2 = control(nv, tmp_path)
    with c2:
        assert any("were restored" in n for n in c2.notes)
    assert (nv.limit_mw, nv.app) == (650_000, (2619, 1755)) and not marker.exists()


def test_a_killed_run_is_restored_at_the_next_start(tmp_path):
    nv = FakeNvml()
    nv.limit_mw, nv.app = 250_000, (2619, 900)           # what the killed run left set
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    marker = tmp_path / "system-config.json"
    import socket

    marker.write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "index": 0,
                                  "saved": {"power_limit_mw": 650_000, "app_clocks": [2619, 1755]}}))
    c = control(nv, tmp_path)
    with c:
        assert (nv.limit_mw, nv.app) == (650_000, (2619, 1755))
    assert any(f"pid {int(dead.stdout)}" in n for n in c.notes)


def test_a_live_run_holding_the_gpu_is_not_overridden(tmp_path):
    import socket

    marker = tmp_path / "system-config.json"
    marker.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "index": 0,
                                  "saved": {"power_limit_mw": 650_000, "app_clocks": None}}))
    nv = FakeNvml()
    with pytest.raises(EnvironmentProblem, match="another run"):
        with control(nv, tmp_path):
            pass
    assert nv.sets == [] and marker.exists()


def test_an_unsupported_clock_is_refused_by_the_device(tmp_path):
    nv = FakeNvml()
    with control(nv, tmp_path) as c:
        with pytest.raises(FakeNvml.NVMLError):
            c.apply({"sm_clock_mhz": 1234})
    assert nv.app == (2619, 1755)


def test_system_dimensions_join_the_search_space_and_stay_out_of_the_kernel_config(tmp_path):
    from kernelagent.tuner.search import SearchSpace
    from kernelagent.tuner.tune import _with_system

    kernel = SearchSpace.from_values({"BLOCK": [64, 128]}, lambda c: "too big" if c["BLOCK"] > 64 and len(c) != 1
                                     else None)
    with control(FakeNvml(), tmp_path) as c:
        space = _with_system(kernel, c, c.current())
        names = [p.name for p in space.params]
        assert names == ["BLOCK", "sm_clock_mhz", "power_limit_w"]
        assert 1755 in space.params[1].values and 650 in space.params[2].values   # the board's own values
        assert space.check({"BLOCK": 128, "sm_clock_mhz": 1755, "power_limit_w": 650}) is None  # kernel keys only


def test_system_is_refused_for_a_replay_and_unknown_dimensions_are_named(tmp_path):
    from kernelagent.tuner.tune import tune

    rec = tmp_path / "rec.json"
    rec.write_text("{}")
    with pytest.raises(BadInput, match="a replay has only what it recorded"):
        tune(sku_id="h100", ops=["softmax"], measure=f"replay:{rec}", system="clocks")
    with pytest.raises(BadInput, match="unknown --system"):
        tune(sku_id="h100", ops=["softmax"], measure="model", system="voltage")


def test_the_model_backend_predicts_system_settings_from_the_spec_sheet_without_nvml():
    from kernelagent.sku import get_sku
    from kernelagent.tuner.search import SearchSpace
    from kernelagent.tuner.system import PredictedSystem
    from kernelagent.tuner.tune import _with_system

    h100 = get_sku("h100")                      # 1980 MHz boost, 700 W
    with PredictedSystem(("clocks", "power-limit"), h100) as c:
        values = c.space_values()
        assert values["sm_clock_mhz"] == [990, 1185, 1380, 1590, 1785, 1980]   # 50-100 %, 15 MHz steps
        assert values["power_limit_w"] == [350, 438, 525, 612, 700]
        assert c.current() == {"sm_clock_mhz": 1980, "power_limit_w": 700}
        c.apply({"sm_clock_mhz": 990})          # nothing to set: a prediction
        assert "nothing is set on any GPU" in c.assumptions() and "assumed grid" in c.assumptions()
        space = _with_system(SearchSpace.from_values({"BLOCK": [64]}), c, c.current())
        assert [p.name for p in space.params] == ["BLOCK", "sm_clock_mhz", "power_limit_w"]
    b200 = PredictedSystem(("clocks",), get_sku("b200"))   # no boost clock on its spec sheet
    assert "assumed clock" in b200.assumptions() and b200.current()["sm_clock_mhz"] == 1500
