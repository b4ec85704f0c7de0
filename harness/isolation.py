"""Which isolation a worker gets, and the script that builds it (see sandbox.py).

``isolation_mode`` decides ``namespaces`` or ``weak`` (with the reason, which every verdict
reports); ``SETUP_SCRIPT`` runs as root inside the new mount namespace, builds the read-only
view and drops to uid 65534; ``exposure_plan`` makes a Python install under a root-only
directory (a pyenv in /root) reachable by that uid without running the worker as root.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

ENV_ALLOWLIST = ("PATH", "LANG", "LC_ALL", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES",
                 "NVIDIA_DRIVER_CAPABILITIES", "LD_LIBRARY_PATH", "CUDA_HOME", "TRITON_PTXAS_PATH")

SETUP_SCRIPT = r"""
set -e
mount --make-rprivate /
mkdir -p "$KA_PRIVATE/.dev"
# Stash the subtrees to re-expose (below) while /tmp is still writable.
i=0
for pair in $KA_EXPOSE; do
  mkdir -p "$KA_PRIVATE/.expose$i"; mount -n --bind "${pair#*|}" "$KA_PRIVATE/.expose$i"; i=$((i+1))
done
awk '{print $5}' /proc/self/mountinfo | while read -r mp; do
  case "$mp" in /dev|/dev/*|/proc|/proc/*|/sys|/sys/*) continue;; esac
  mount -o remount,bind,ro "$mp" 2>/dev/null || true
done
# Re-expose the Python install under a directory uid 65534 cannot cross (a pyenv in /root):
# cover each blocking parent with an empty tmpfs and move the stashed subtree back, read-only.
for pair in $KA_EXPOSE; do
  a=${pair%%|*}; mountpoint -q "$a" && [ -f "$a/.ka-expose" ] || { mount -n -t tmpfs -o size=1m,mode=0755 tmpfs "$a"; touch "$a/.ka-expose"; }
done
i=0
for pair in $KA_EXPOSE; do
  c=${pair#*|}; mkdir -p "$c"; mount -n --move "$KA_PRIVATE/.expose$i" "$c"; mount -n -o remount,bind,ro "$c"; i=$((i+1))
done
for pair in $KA_EXPOSE; do mount -n -o remount,ro "${pair%%|*}" 2>/dev/null || true; done
# A minimal /dev: the null/zero/random nodes, the GPU's nodes (KA_DEVICES), the fd links and a
# private /dev/shm (nothing a candidate writes there outlives it); read-only apart from /dev/shm.
D="$KA_PRIVATE/.dev"
mount -n -t tmpfs -o size=1m,mode=0755,nosuid tmpfs "$D"
for n in null zero full random urandom $KA_DEVICES; do
  src="/dev/$n"; [ -e "$src" ] || continue
  if [ -d "$src" ]; then mkdir -p "$D/$n"; else mkdir -p "$(dirname "$D/$n")"; touch "$D/$n"; fi
  mount -n --bind "$src" "$D/$n"
done
ln -s /proc/self/fd "$D/fd"; ln -s /proc/self/fd/0 "$D/stdin"; ln -s /proc/self/fd/1 "$D/stdout"
ln -s /proc/self/fd/2 "$D/stderr"; mkdir "$D/shm"
mount -n --move "$D" /dev
mount -n -t tmpfs -o size=64m,mode=1777,nosuid,nodev tmpfs /dev/shm
mount -n -o remount,ro /dev
mount -o remount,bind,ro /sys 2>/dev/null || true
mount --bind /proc/sys /proc/sys 2>/dev/null && mount -o remount,bind,ro /proc/sys 2>/dev/null || true
mount -t tmpfs -o size="$KA_TMPFS_SIZE",mode=1777 tmpfs "$KA_PRIVATE"
for d in $KA_HIDE; do mount -t tmpfs -o size=1m,mode=0755 tmpfs "$d" 2>/dev/null || true; done
mkdir -p "$KA_PRIVATE/triton" "$KA_PRIVATE/inductor"
chmod 1777 "$KA_PRIVATE/triton" "$KA_PRIVATE/inductor"
cd "$KA_PRIVATE"
unset KA_TMPFS_SIZE KA_HIDE KA_EXPOSE KA_DEVICES
exec setpriv $KA_SETPRIV --no-new-privs --inh-caps=-all --bounding-set=-all "$@"
"""


def gpu_device_nodes() -> list[str]:
    """The GPU's nodes under /dev a CUDA worker needs (names relative to /dev)."""
    names = []
    for pattern in ("nvidia*", "nvidia-caps", "dri"):
        names += [str(p.relative_to("/dev")) for p in sorted(Path("/dev").glob(pattern))]
    return sorted(set(names))


def _needed_paths() -> list[Path]:
    import torch

    return [Path(sys.executable), Path(os.__file__), Path(__file__), Path(torch.__file__)]


def exposure_plan(paths: list[Path]) -> list[tuple[str, str]] | None:
    """(blocking directory, child to re-expose) pairs that make every path reachable by uid
    65534 inside the mount namespace; [] when none is needed, None when that cannot work
    (something below the blocking directory is itself unreadable)."""
    pairs: list[tuple[str, str]] = []
    for path in paths:
        p = path.resolve()
        chain = [*reversed(p.parents), p]
        blocked = next((i for i, d in enumerate(chain[:-1]) if not _mode_has(d, 0o001)), None)
        if blocked is None:
            if not _mode_has(p, 0o004):
                return None
            continue
        below = chain[blocked + 1:]
        if not all(_mode_has(d, 0o001) for d in below[:-1]) or not _mode_has(p, 0o004) or len(below) < 2:
            return None
        pair = (str(chain[blocked]), str(below[0]))
        if pair not in pairs:
            pairs.append(pair)
    return pairs


def _mode_has(path: Path, bits: int) -> bool:
    try:
        return bool(path.stat().st_mode & bits)
    except OSError:
        return False


def isolation_mode() -> tuple[str, str]:
    """('namespaces', how) or ('weak', why): what a worker started now will get."""
    if os.environ.get("KERNELAGENT_SANDBOX") == "weak":
        return "weak", "KERNELAGENT_SANDBOX=weak was set"
    if sys.platform != "linux":
        return "weak", f"no Linux namespaces on {sys.platform}"
    missing = [t for t in ("unshare", "setpriv", "mount") if shutil.which(t) is None]
    if missing:
        return "weak", f"missing {', '.join(missing)} (install util-linux)"
    if os.geteuid() != 0:
        return "weak", "namespaces need root here (unprivileged user namespaces are not used)"
    plan = exposure_plan(_needed_paths())
    if plan is None:
        return "weak", ("namespaces, but the Python install is not readable by uid 65534, so the worker "
                        "would run as uid 0 (no capabilities); make the install world-readable")
    user = "uid 65534" + (f" (install re-exposed read-only from {', '.join(c for _, c in plan)})" if plan else "")
    return "namespaces", (f"unshare net/pid/mount/ipc/uts, read-only root, private tmpfs, minimal read-only "
                          f"/dev with a private /dev/shm, read-only /sys and /proc/sys, {user}")


def _contains_any(directory: str, paths: list[str]) -> bool:
    d = os.path.realpath(directory) + os.sep
    return any(os.path.realpath(p).startswith(d) for p in paths)
