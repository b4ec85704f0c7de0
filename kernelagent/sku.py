"""The SKU registry: one JSON file per GPU model, validated, looked up by id, alias or device name.

Shipped files live in ``kernelagent/skus/``; a user folder (``KERNELAGENT_SKU_DIR``, else
``~/.cache/kernelagent/skus``) is searched as well, so a new GPU can be described before the
project ships it (``kernelagent sku add FILE``). Figures are spec-sheet figures with their
sources; the ``model`` measurement backend and static targeting read them.

Matching a device is ``re.search(pattern, name, re.IGNORECASE)`` for any of a SKU's ``match``
patterns — the runtime library (``kernelagent.kernels._device``) reads the same files with the
same rule, so the two never disagree about which SKU a GPU is.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol, Sequence

from .errors import BadInput, EnvironmentProblem

SHIPPED_DIR = Path(__file__).resolve().parent / "skus"

# Architectures the project knows how to name. NVIDIA ones can be compiled for statically
# (harness.compile); AMD ones are described for the model backend only.
NVIDIA_ARCHES = ("sm_80", "sm_86", "sm_87", "sm_89", "sm_90", "sm_100", "sm_103", "sm_110", "sm_120", "sm_121")
AMD_ARCHES = ("gfx90a", "gfx942", "gfx950")
KNOWN_ARCHES = NVIDIA_ARCHES + AMD_ARCHES
FAMILIES = ("ampere", "ada", "hopper", "blackwell", "blackwell-consumer", "cdna2", "cdna3", "cdna4")
VENDORS = ("nvidia", "amd")
PEAK_KEYS = ("fp32", "tf32", "fp16", "bf16", "fp8")

# (field, accepted types, required). bool is excluded from numbers explicitly below.
_INT = (int,)
_NUM = (int, float)
FIELDS: tuple[tuple[str, tuple, bool], ...] = (
    ("id", (str,), True),
    ("name", (str,), True),
    ("vendor", (str,), True),
    ("arch", (str,), True),
    ("family", (str,), True),
    ("compute_capability", (list,), True),
    ("match", (list,), True),
    ("sm_count", _INT, True),
    ("smem_per_block_bytes", _INT, True),
    ("smem_per_sm_bytes", _INT, True),
    ("registers_per_sm", _INT, True),
    ("max_registers_per_thread", _INT, True),
    ("l2_bytes", _INT, True),
    ("memory_gb", _NUM, True),
    ("mem_bandwidth_gbps", _NUM, True),
    ("peak_tflops", (dict,), True),
    ("power_limit_w", _NUM, True),
    ("boost_clock_mhz", _NUM + (type(None),), True),
    ("sources", (list,), True),
    ("notes", (str,), True),
    ("aliases", (list,), False),
    ("warp_size", _INT, False),
    ("max_threads_per_sm", _INT, False),
    ("max_blocks_per_sm", _INT, False),
    ("max_threads_per_block", _INT, False),
    ("static_compile", (bool,), False),
)
_FIELD_NAMES = {f[0] for f in FIELDS}
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")

# Resident-thread and resident-block limits by compute capability (CUDA programming guide),
# used when a SKU file does not state them.
_CC_LIMITS = {(8, 0): (2048, 32), (8, 6): (1536, 16), (8, 7): (1536, 16), (8, 9): (1536, 24),
              (9, 0): (2048, 32), (10, 0): (2048, 32), (10, 3): (2048, 32), (12, 0): (1536, 32)}


@dataclass(frozen=True)
class SkuProblem:
    """One thing wrong with a SKU file: which field, and what is wrong with it."""

    field: str
    message: str
    file: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}: " if self.file else ""
        return f"{where}{self.field}: {self.message}"


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
# Validation


def _is_num(v: Any, types: tuple) -> bool:
    return isinstance(v, types) and not isinstance(v, bool)


def validate_sku_data(data: Any, file: str | None = None) -> list[SkuProblem]:
    """Every problem in one SKU document (empty list when valid)."""
    P = lambda f, m: SkuProblem(f, m, file)  # noqa: E731
    if not isinstance(data, dict):
        return [P("(file)", f"expected a JSON object, got {type(data).__name__}")]
    problems: list[SkuProblem] = []
    for name, types, required in FIELDS:
        if name not in data:
            if required:
                problems.append(P(name, "missing required field"))
            continue
        v = data[name]
        if v is None:
            ok = type(None) in types
        elif types == (bool,):
            ok = isinstance(v, bool)
        elif int in types or float in types:
            ok = _is_num(v, tuple(t for t in types if t is not type(None)))
        else:
            ok = isinstance(v, types)
        if not ok:
            want = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            problems.append(P(name, f"wrong type: expected {want}, got {type(v).__name__} ({v!r})"))
            continue
        if _is_num(v, _NUM):
            if not math.isfinite(v):
                problems.append(P(name, f"must be a finite number, got {v!r}"))
            elif v <= 0:
                problems.append(P(name, f"must be positive, got {v!r}"))
    for k in data:
        if k not in _FIELD_NAMES:
            problems.append(P(k, "unknown field (typo?); known fields: " + ", ".join(sorted(_FIELD_NAMES))))

    sid = data.get("id")
    if isinstance(sid, str) and not _ID_RE.match(sid):
        problems.append(P("id", f"{sid!r} must be lowercase letters, digits, '.', '_' or '-' (e.g. 'h100-sxm')"))
    if isinstance(data.get("vendor"), str) and data["vendor"] not in VENDORS:
        problems.append(P("vendor", f"unknown vendor {data['vendor']!r}; expected one of {', '.join(VENDORS)}"))
    if isinstance(data.get("arch"), str) and data["arch"] not in KNOWN_ARCHES:
        problems.append(P("arch", f"unknown arch {data['arch']!r}; expected one of {', '.join(KNOWN_ARCHES)}"))
    if isinstance(data.get("family"), str) and data["family"] not in FAMILIES:
        problems.append(P("family", f"unknown family {data['family']!r}; expected one of {', '.join(FAMILIES)}"))
    vendor, arch = data.get("vendor"), data.get("arch")
    if vendor == "nvidia" and arch in AMD_ARCHES or vendor == "amd" and arch in NVIDIA_ARCHES:
        problems.append(P("arch", f"arch {arch!r} does not belong to vendor {vendor!r}"))

    cc = data.get("compute_capability")
    if isinstance(cc, list):
        if len(cc) != 2 or not all(_is_num(x, _INT) and x >= 0 for x in cc):
            problems.append(P("compute_capability", f"must be [major, minor], two non-negative ints; got {cc!r}"))
        elif vendor == "nvidia" and isinstance(arch, str) and arch.startswith("sm_") and arch[3:].isdigit() \
                and int(arch[3:]) != cc[0] * 10 + cc[1]:
            problems.append(P("compute_capability", f"{cc!r} disagrees with arch {arch!r}"))

    pats = data.get("match")
    if isinstance(pats, list):
        if not pats:
            problems.append(P("match", "needs at least one pattern (matched against the NVML/torch device name)"))
        for i, p in enumerate(pats):
            if not isinstance(p, str) or not p:
                problems.append(P(f"match[{i}]", f"must be a non-empty string, got {p!r}"))
                continue
            try:
                re.compile(p, re.IGNORECASE)
            except re.error as e:
                problems.append(P(f"match[{i}]", f"bad regex {p!r}: {e}"))

    aliases = data.get("aliases")
    if isinstance(aliases, list):
        for i, a in enumerate(aliases):
            if not isinstance(a, str) or not _ID_RE.match(a.lower()):
                problems.append(P(f"aliases[{i}]", f"must be an id-like string, got {a!r}"))

    peaks = data.get("peak_tflops")
    if isinstance(peaks, dict):
        for k in PEAK_KEYS:
            if k not in peaks:
                problems.append(P(f"peak_tflops.{k}", "missing (use null where the GPU lacks the format)"))
        for k, v in peaks.items():
            if k not in PEAK_KEYS:
                problems.append(P(f"peak_tflops.{k}", f"unknown precision; expected {', '.join(PEAK_KEYS)}"))
            elif v is None:
                if k in ("fp32", "fp16"):
                    problems.append(P(f"peak_tflops.{k}", "must be a number (every supported GPU has it)"))
            elif not _is_num(v, _NUM):
                problems.append(P(f"peak_tflops.{k}", f"wrong type: expected number or null, got {type(v).__name__}"))
            elif not math.isfinite(v) or v <= 0:
                problems.append(P(f"peak_tflops.{k}", f"must be positive, got {v!r}"))

    srcs = data.get("sources")
    if isinstance(srcs, list):
        if not srcs:
            problems.append(P("sources", "name where the figures come from (datasheet, whitepaper, CUDA guide table)"))
        for i, s in enumerate(srcs):
            if not isinstance(s, str) or not s.strip():
                problems.append(P(f"sources[{i}]", f"must be a non-empty string, got {s!r}"))

    a, b = data.get("smem_per_block_bytes"), data.get("smem_per_sm_bytes")
    if _is_num(a, _INT) and _is_num(b, _INT) and a > b:
        problems.append(P("smem_per_block_bytes", f"{a} exceeds smem_per_sm_bytes {b}"))
    return problems


def check_registry(skus: Iterable[Sku]) -> list[SkuProblem]:
    """Problems between files: an id or alias claimed twice."""
    problems: list[SkuProblem] = []
    seen: dict[str, Sku] = {}
    for s in skus:
        for key, what in [(s.id, "id")] + [(a.lower(), "alias") for a in s.aliases]:
            other = seen.get(key)
            if other is not None and other is not s:
                problems.append(SkuProblem(what, f"duplicate {what} {key!r}: also claimed by "
                                                 f"{other.path or other.id}", str(s.path) if s.path else None))
            elif other is None:
                seen[key] = s
    return problems


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


def read_sku_file(path: Path | str, origin: str = "user") -> tuple[Sku | None, list[SkuProblem]]:
    """Parse and validate one file; (sku, []) when valid, (None, problems) otherwise."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        return None, [SkuProblem("(file)", f"cannot read: {e.strerror or e}", str(path))]
    except UnicodeDecodeError as e:
        return None, [SkuProblem("(file)", f"not UTF-8 text (byte {e.start}): a SKU file is JSON", str(path))]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        return None, [SkuProblem("(file)", f"not valid JSON: {e}", str(path))]
    problems = validate_sku_data(data, str(path))
    if problems:
        return None, problems
    return sku_from_data(data, path, origin), []


# ---------------------------------------------------------------------------------------------
# The registry


def user_sku_dir(override: Path | str | None = None) -> Path:
    """Where user SKU files live: the argument, else $KERNELAGENT_SKU_DIR, else ~/.cache/kernelagent/skus."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get("KERNELAGENT_SKU_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "kernelagent" / "skus"


def load_skus(user_dir: Path | str | None = None) -> dict[str, Sku]:
    """All SKUs, shipped then user, by id. A malformed or clashing file is an error naming it."""
    skus: list[Sku] = []
    problems: list[SkuProblem] = []
    dirs = [(SHIPPED_DIR, "shipped"), (user_sku_dir(user_dir), "user")]
    for folder, origin in dirs:
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.json")):
            sku, probs = read_sku_file(path, origin)
            problems += probs
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

    When several match, the same tie-break as the runtime library's ``match_sku``: the one whose
    compute capability equals the device's, then the one whose pattern matched the longest span
    of the name (the most specific), then the smallest id.
    """
    pool = list(skus) if skus is not None else list(load_skus().values())
    cc = tuple(int(x) for x in compute_capability) if compute_capability is not None else None
    best: tuple | None = None
    for s in sorted(pool, key=lambda s: s.id):
        span = 0
        for p in s.match:
            m = re.search(p, device_name, re.IGNORECASE)
            if m is not None:
                span = max(span, m.end() - m.start(), 1)
        if span == 0:
            continue
        rank = (cc is not None and s.compute_capability == cc, span)
        if best is None or rank > best[0]:
            best = (rank, s)
    return best[1] if best is not None else None


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
