"""``kernelagent sku list | show ID | detect | add FILE``: the GPU SKU registry on the command line.

Errors are raised as BadInput / EnvironmentProblem; ``kernelagent.cli.main`` prints them as one
``error: …`` line with the exit code (2 bad input, 3 environment). ``--json`` prints JSON on stdout.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

import typer

from .errors import BadInput

sku_app = typer.Typer(name="sku", help="GPU SKUs: spec sheets used for targeting and the model backend.",
                      no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

_DIR_HELP = "User SKU folder (default: $KERNELAGENT_SKU_DIR or ~/.cache/kernelagent/skus)."


def _fmt_bytes(n: int) -> str:
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % (size // 16 or 1) == 0:
            return f"{n / size:g} {unit}"
    return f"{n} B"


def _fmt_peak(v) -> str:
    return "—" if v is None else f"{v:g}"


@sku_app.command("list")
def list_cmd(json_out: bool = typer.Option(False, "--json", help="Print a JSON array on stdout."),
             sku_dir: Optional[Path] = typer.Option(None, "--dir", help=_DIR_HELP)) -> None:
    """List the known SKUs (shipped and user-added), spec-sheet figures."""
    from .sku import load_skus

    skus = sorted(load_skus(sku_dir).values(), key=lambda s: s.id)
    if json_out:
        typer.echo(json.dumps([s.to_json() for s in skus], indent=2))
        return
    typer.echo(f"{'id':10s} {'arch':7s} {'family':19s} {'SMs':>4s} {'mem GB':>6s} {'GB/s':>6s} "
               f"{'bf16 TF':>8s} {'fp32 TF':>8s}  name")
    for s in skus:
        tag = "" if s.origin == "shipped" else "  [user]"
        typer.echo(f"{s.id:10s} {s.arch:7s} {s.family:19s} {s.sm_count:4d} {s.memory_gb:6g} "
                   f"{s.mem_bandwidth_gbps:6g} {_fmt_peak(s.peak('bf16')):>8s} {_fmt_peak(s.peak('fp32')):>8s}  "
                   f"{s.name}{tag}")
    typer.echo("peaks are vendor spec-sheet figures, dense (no sparsity); see `kernelagent sku show ID` for sources",
               err=True)


@sku_app.command("show")
def show_cmd(sku_id: str = typer.Argument(..., help="SKU id or alias (e.g. h100, a100-sxm)."),
             json_out: bool = typer.Option(False, "--json", help="Print the SKU file's JSON on stdout."),
             sku_dir: Optional[Path] = typer.Option(None, "--dir", help=_DIR_HELP)) -> None:
    """Print one SKU's spec with where each figure comes from."""
    from .sku import get_sku

    s = get_sku(sku_id, sku_dir)
    if json_out:
        typer.echo(json.dumps(s.to_json(), indent=2))
        return
    cc = ".".join(map(str, s.compute_capability))
    lines = [
        f"{s.id}: {s.name} ({s.vendor}, {s.family}, {s.arch}, compute capability {cc})",
        f"  aliases:            {', '.join(s.aliases) or '—'}",
        f"  device-name match:  {' | '.join(s.match)}",
        f"  SMs:                {s.sm_count} (warp size {s.warp_size}, ≤{s.max_threads_per_sm} threads and "
        f"≤{s.max_blocks_per_sm} blocks resident per SM)",
        f"  shared memory:      {_fmt_bytes(s.smem_per_block_bytes)} per block (opt-in), "
        f"{_fmt_bytes(s.smem_per_sm_bytes)} per SM",
        f"  registers:          {s.registers_per_sm} per SM, ≤{s.max_registers_per_thread} per thread",
        f"  L2:                 {_fmt_bytes(s.l2_bytes)}",
        f"  memory:             {s.memory_gb:g} GB at {s.mem_bandwidth_gbps:g} GB/s",
        "  peak TFLOP/s dense: " + ", ".join(f"{k} {_fmt_peak(v)}" for k, v in s.peak_tflops.items()),
        f"  power limit:        {s.power_limit_w:g} W; boost clock "
        f"{'not published' if s.boost_clock_mhz is None else f'{s.boost_clock_mhz:g} MHz'}",
        f"  static compile:     {'yes' if s.static_compile else 'no (model backend from the spec sheet only)'}",
        "  sources:",
        *[f"    - {src}" for src in s.sources],
        f"  notes: {s.notes}",
        f"  file: {s.path} ({s.origin})",
    ]
    typer.echo("\n".join(lines))


@sku_app.command("detect")
def detect_cmd(index: int = typer.Option(0, "--index", help="Which local GPU."),
               json_out: bool = typer.Option(False, "--json", help="Print {sku, device} as JSON on stdout."),
               sku_dir: Optional[Path] = typer.Option(None, "--dir", help=_DIR_HELP)) -> None:
    """Find the local GPU's SKU (NVML, else torch.cuda). Exit 3 without a GPU or for an unknown one."""
    from . import sku as registry

    s, dev = registry.detect(index=index, user_dir=sku_dir)
    if json_out:
        typer.echo(json.dumps({"sku": s.id, "device": {
            "name": dev.name, "index": dev.index, "source": dev.source,
            "compute_capability": list(dev.compute_capability) if dev.compute_capability else None,
            "memory_bytes": dev.memory_bytes}}))
        return
    typer.echo(f"{s.id}: GPU {dev.index} is {dev.name!r} (via {dev.source}) -> {s.name}")


@sku_app.command("add")
def add_cmd(file: Path = typer.Argument(..., help="A SKU JSON file (see `kernelagent sku show h100 --json`)."),
            json_out: bool = typer.Option(False, "--json", help="Print {ok, problems, path} as JSON on stdout."),
            sku_dir: Optional[Path] = typer.Option(None, "--dir", help=_DIR_HELP)) -> None:
    """Validate a SKU file and copy it into the user SKU folder. Every problem is listed (exit 2)."""
    from .sku import check_registry, load_skus, read_sku_file, user_sku_dir

    sku, problems = read_sku_file(file, origin="user")
    if sku is not None:
        dest_dir = user_sku_dir(sku_dir)
        dest = dest_dir / f"{sku.id}.json"
        others = [s for s in load_skus(sku_dir).values() if s.path is None or s.path.resolve() != dest.resolve()]
        problems = [p for p in check_registry(others + [sku]) if p.file == str(sku.path)]
    if problems:
        if json_out:
            typer.echo(json.dumps({"ok": False, "problems": [
                {"field": p.field, "message": p.message, "file": p.file} for p in problems]}))
        if len(problems) == 1 and problems[0].field == "(file)":  # unreadable as a whole: one line says it
            raise BadInput(f"SKU file {file}: {problems[0].message}; not added")
        for p in problems:
            typer.echo(f"  {p}", err=True)
        raise BadInput(f"{len(problems)} problem(s) in {file}; not added")
    dest_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(file, dest)
    if json_out:
        typer.echo(json.dumps({"ok": True, "problems": [], "id": sku.id, "path": str(dest)}))
    else:
        typer.echo(f"added {sku.id} ({sku.name}) -> {dest}")


def register(app: typer.Typer) -> None:
    app.add_typer(sku_app, name="sku")
