"""The SKU registry: one JSON file per GPU model, validated, looked up by id, alias or device name.

Shipped files live in ``kernelagent/skus/``; a user folder (``KERNELAGENT_SKU_DIR``, else
``~/.cache/kernelagent/skus``) is searched as well, so a new GPU can be described before the
project ships it (``kernelagent sku add FILE``). Figures are spec-sheet figures with their
sources; the ``model`` measurement backend and static targeting read them.

Reading, validating and matching files is ``kernelagent.kernels._sku``'s job, shared with the
runtime library (``kernelagent.kernels._device``), so the two never disagree about which SKU a
GPU is or whether a file is valid. This module adds the typed ``Sku``, the strict registry (every
problem and every duplicate id or alias is a ``BadInput`` naming the file), detection of the
local GPU, and similarity between SKUs for warm starts.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol, Sequence

from .errors import BadInput, EnvironmentProblem
from .kernels import _sku

SHIPPED_DIR = _sku.shipped_sku_dir()

# The schema and its vocabulary are the shared module's; re-exported for the CLI and tests.
NVIDIA_ARCHES, AMD_ARCHES, KNOWN_ARCHES = _sku.NVIDIA_ARCHES, _sku.AMD_ARCHES, _sku.KNOWN_ARCHES
FAMILIES, VENDORS, PEAK_KEYS, FIELDS = _sku.FAMILIES, _sku.VENDORS, _sku.PEAK_KEYS, _sku.FIELDS
SkuProblem = _sku.SkuProblem
validate_sku_data = _sku.validate
user_sku_dir = _sku.user_sku_dir

# Resident-thread and resident-block limits by compute capability (CUDA programming guide),
# used when a SKU file does not state them.
_CC_LIMITS = {(8, 0): (2048, 32), (8, 6): (1536, 16), (8, 7): (1536, 16), (8, 9): (1536, 24),
              (9, 0): (2048, 32), (10, 0): (2048, 32), (10, 3): (2048, 32), (12, 0): (1536, 32)}


@dataclass(frozen=True)
class Sku:
    """A GPU model's spec sheet. ``data`` keeps the file's full content (sources, notes)."""

    id: str
    name: str
    vendor: str
    arch: str
    family: str
    compute_capability: tuple[int, int]
    match: tuple[str, ...]
    aliases: tuple[str, ...]
    sm_count: int
    smem_per_block_bytes: int
    smem_per_sm_bytes: int
    registers_per_sm: int
    max_registers_per_thread: int
    l2_bytes: int
    memory_gb: float
    mem_bandwidth_gbps: float
    peak_tflops: Mapping[str, float | None]
    power_limit_w: float
    boost_clock_mhz: float | None
    warp_size: int
    max_threads_per_sm: int
    max_blocks_per_sm: int
    max_threads_per_block: int
    static_compile: bool
    sources: tuple[str, ...]
    notes: str
    path: Path | None = None
    origin: str = "shipped"  # "shipped" | "user"
    data: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def cc(self) -> int:
        """Compute capability as Triton's integer target arch (9.0 -> 90)."""
        return self.compute_capability[0] * 10 + self.compute_capability[1]

    def peak(self, dtype: str) -> float | None:
        """Peak TFLOP/s for a dtype name (fp32/tf32/fp16/bf16/fp8), None when unsupported."""
        v = self.peak_tflops.get(dtype)
        return float(v) if v is not None else None

    def matches(self, device_name: str) -> bool:
        return any(re.search(p, device_name, re.IGNORECASE) for p in self.match)

    def to_json(self) -> dict:
        out = dict(self.data)
        out["origin"] = self.origin
        if self.path is not None:
            out["path"] = str(self.path)
        return out


# ---------------------------------------------------------------------------------------------
# Files (read, validated and matched by ``kernelagent.kernels._sku``)


def check_registry(skus: Iterable[Sku]) -> list[SkuProblem]:
    """Problems between files: an id or alias claimed twice."""
    return _sku.duplicate_problems(skus)


def sku_from_data(data: Mapping[str, Any], path: Path | None = None, origin: str = "shipped") -> Sku:
    """Build a Sku from an already-validated document."""
    cc = (int(data["compute_capability"][0]), int(data["compute_capability"][1]))
    thr, blk = _CC_LIMITS.get(cc, (2048, 32))
    return Sku(
        id=data["id"], name=data["name"], vendor=data["vendor"], arch=data["arch"], family=data["family"],
        compute_capability=cc, match=tuple(data["match"]), aliases=tuple(a.lower() for a in data.get("aliases", [])),
        sm_count=data["sm_count"], smem_per_block_bytes=data["smem_per_block_bytes"],
        smem_per_sm_bytes=data["smem_per_sm_bytes"], registers_per_sm=data["registers_per_sm"],
        max_registers_per_thread=data["max_registers_per_thread"], l2_bytes=data["l2_bytes"],
        memory_gb=data["memory_gb"], mem_bandwidth_gbps=data["mem_bandwidth_gbps"],
        peak_tflops=dict(data["peak_tflops"]), power_limit_w=data["power_limit_w"],
        boost_clock_mhz=data["boost_clock_mhz"],
        warp_size=data.get("warp_size", 64 if data["vendor"] == "amd" else 32),
        max_threads_per_sm=data.get("max_threads_per_sm", thr), max_blocks_per_sm=data.get("max_blocks_per_sm", blk),
        max_threads_per_block=data.get("max_threads_per_block", 1024),
        static_compile=data.get("static_compile", data["vendor"] == "nvidia"),
        sources=tuple(data["sources"]), notes=data["notes"], path=path, origin=origin, data=dict(data),
    )


def _from_file(f: _sku.SkuFile) -> Sku | None:
    return sku_from_data(f.data, f.path, f.origin) if f.data is not None and not f.problems else None


def read_sku_file(path: Path | str, origin: str = "user") -> tuple[Sku | None, list[SkuProblem]]:
    """Parse and validate one file; (sku, []) when valid, (None, problems) otherwise."""
    f = _sku.read_file(path, origin)
    return _from_file(f), list(f.problems)


# ---------------------------------------------------------------------------------------------
# The registry


def load_skus(user_dir: Path | str | None = None) -> dict[str, Sku]:
    """All SKUs, shipped then user, by id. A malformed or clashing file is an error naming it."""
    skus: list[Sku] = []
    problems: list[SkuProblem] = []
    for f in _sku.sku_files(user_dir):
        problems += f.problems
        sku = _from_file(f)
        if sku is not None:
            skus.append(sku)
    problems += check_registry(skus)
    if problems:
        raise BadInput("invalid SKU file(s):\n  " + "\n  ".join(str(p) for p in problems))
    return {s.id: s for s in skus}


def get_sku(id_or_alias: str, user_dir: Path | str | None = None) -> Sku:
    """A SKU by id or alias, case-insensitive ("h100" -> h100-sxm). Unknown -> BadInput."""
    skus = load_skus(user_dir)
    key = id_or_alias.strip().lower()
    if key in skus:
        return skus[key]
    for s in skus.values():
        if key in s.aliases:
            return s
    listed = ", ".join(sorted(skus))
    raise BadInput(f"unknown SKU {id_or_alias!r}; known SKUs: {listed} "
                   f"(aliases such as 'h100', 'a100' work too; add one with `kernelagent sku add FILE`)")


def match_device(device_name: str, compute_capability: Sequence[int] | None = None,
                 skus: Iterable[Sku] | None = None) -> Sku | None:
    """The SKU whose ``match`` patterns find ``device_name`` (``re.search``, case-insensitive).

    The one rule, ``kernelagent.kernels._sku.match``, which the runtime library uses too: when
    several match, the one whose compute capability equals the device's, then the one whose
    pattern matched the longest span of the name (the most specific), then the smallest id.
    """
    pool = list(skus) if skus is not None else list(load_skus().values())
    return _sku.match(device_name, compute_capability, pool, doc=lambda s: {
        "id": s.id, "match": s.match, "compute_capability": s.compute_capability})


# ---------------------------------------------------------------------------------------------
# Detecting the local GPU


@dataclass(frozen=True)
class DeviceInfo:
    """What the driver says about one GPU."""

    name: str
    compute_capability: tuple[int, int] | None
    index: int = 0
    memory_bytes: int | None = None
    source: str = "nvml"  # "nvml" | "torch"


class DeviceProbe(Protocol):
    """Lists local GPUs; raises EnvironmentProblem when it cannot look."""

    name: str

    def devices(self) -> list[DeviceInfo]: ...


class NvmlProbe:
    """Reads devices through NVML (``pynvml`` from nvidia-ml-py)."""

    name = "NVML"

    def devices(self) -> list[DeviceInfo]:
        try:
            import pynvml
        except ImportError as e:
            raise EnvironmentProblem(f"NVML bindings not installed ({e}); pip install nvidia-ml-py") from None
        try:
            pynvml.nvmlInit()
        except Exception as e:  # pynvml.NVMLError subclasses, e.g. library not found
            raise EnvironmentProblem(f"NVML unavailable: {e}") from None
        try:
            out = []
            for i in range(pynvml.nvmlDeviceGetCount()):
                h = pynvml.nvmlDeviceGetHandleByIndex(i)
                name = pynvml.nvmlDeviceGetName(h)
                name = name.decode() if isinstance(name, bytes) else str(name)
                try:
                    cc = tuple(int(x) for x in pynvml.nvmlDeviceGetCudaComputeCapability(h))
                except Exception:
                    cc = None
                try:
                    mem = int(pynvml.nvmlDeviceGetMemoryInfo(h).total)
                except Exception:
                    mem = None
                out.append(DeviceInfo(name, cc, i, mem, "nvml"))
            return out
        finally:
            try:
                pynvml.nvmlShutdown()
            except Exception:
                pass


class TorchProbe:
    """Reads devices through ``torch.cuda`` (also covers ROCm builds of torch)."""

    name = "torch.cuda"

    def devices(self) -> list[DeviceInfo]:
        import torch

        if not torch.cuda.is_available():
            raise EnvironmentProblem("torch.cuda reports no GPU")
        out = []
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            out.append(DeviceInfo(p.name, (int(p.major), int(p.minor)), i, int(p.total_memory), "torch"))
        return out


def default_probes() -> list[DeviceProbe]:
    return [NvmlProbe(), TorchProbe()]


def local_devices(probes: Sequence[DeviceProbe] | None = None) -> list[DeviceInfo]:
    """The first probe that sees any GPU wins; none -> EnvironmentProblem with each probe's reason."""
    reasons = []
    for probe in probes if probes is not None else default_probes():
        try:
            devs = probe.devices()
        except EnvironmentProblem as e:
            reasons.append(f"{probe.name}: {e}")
            continue
        if devs:
            return devs
        reasons.append(f"{probe.name}: no devices")
    raise EnvironmentProblem("no GPU found (" + "; ".join(reasons) + "); target a SKU by id instead, "
                             "e.g. --sku h100 (see `kernelagent sku list`)")


def detect(index: int = 0, probes: Sequence[DeviceProbe] | None = None,
           user_dir: Path | str | None = None) -> tuple[Sku, DeviceInfo]:
    """The SKU of local GPU ``index`` (and what the driver said about it)."""
    devs = local_devices(probes)
    if not 0 <= index < len(devs):
        raise BadInput(f"GPU index {index} out of range; {len(devs)} GPU(s) present")
    dev = devs[index]
    sku = match_device(dev.name, dev.compute_capability, load_skus(user_dir).values())
    if sku is None:
        cc = ".".join(map(str, dev.compute_capability)) if dev.compute_capability else "unknown"
        raise EnvironmentProblem(
            f"GPU {dev.name!r} (compute capability {cc}, via {dev.source}) matches no known SKU. "
            f"Describe it in a JSON file (copy one of `kernelagent sku show h100-sxm --json`, change the figures "
            f"and its 'match' patterns so that one finds {dev.name!r}) and run `kernelagent sku add FILE`")
    return sku, dev


# ---------------------------------------------------------------------------------------------
# Warm starts: which known SKU is most like a new one


def _log_ratio(a: float | None, b: float | None) -> float:
    if not a or not b:
        return 1.0
    return abs(math.log(float(a) / float(b)))


def similarity_distance(a: Sku, b: Sku) -> tuple:
    """Sort key: same vendor, then same family first, then one distance that adds the gap in
    compute-capability generations to spec-sheet gaps on a log scale (bandwidth, bf16 and fp32
    peaks, shared memory per block — which decides what tiles fit — and SM count).

    Compute capability is weighed by major version only lightly: sm_120 (consumer Blackwell)
    is numerically near sm_100 but programs like sm_89 (mma.sync, 99 KB shared memory).
    """
    vend = 0 if a.vendor == b.vendor else 1
    fam = 0 if a.family == b.family else 1
    gen = 0.5 * abs(a.compute_capability[0] - b.compute_capability[0]) + 0.05 * abs(
        a.compute_capability[1] - b.compute_capability[1]) if a.vendor == b.vendor else 0.0
    spec = (_log_ratio(a.mem_bandwidth_gbps, b.mem_bandwidth_gbps) + _log_ratio(a.peak("bf16"), b.peak("bf16"))
            + _log_ratio(a.peak("fp32"), b.peak("fp32")) + _log_ratio(a.smem_per_block_bytes, b.smem_per_block_bytes)
            + 0.5 * _log_ratio(a.sm_count, b.sm_count))
    return (vend, fam, round(gen + spec, 6), b.id)


def rank_similar(sku: Sku, candidates: Iterable[Sku]) -> list[Sku]:
    """Candidates (other than ``sku`` itself) from most to least similar."""
    return sorted((c for c in candidates if c.id != sku.id), key=lambda c: similarity_distance(sku, c))


def nearest_sku(sku: Sku, candidates: Iterable[Sku]) -> Sku | None:
    """The candidate most like ``sku``, for warm-starting a search from its tuned configs."""
    ranked = rank_similar(sku, candidates)
    return ranked[0] if ranked else None
