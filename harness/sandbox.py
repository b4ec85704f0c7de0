"""One sandboxed worker process per candidate.

Isolation, strongest available first:

* ``namespaces``: ``unshare`` gives the worker its own network (no interfaces), PID (nothing
  it starts outlives it), mount, IPC and UTS namespaces. Inside, every mount except /dev is
  remounted read-only, a private tmpfs becomes HOME/TMPDIR/cwd and the Triton cache, and the
  process drops to uid/gid 65534 with no capabilities and ``no_new_privs`` (``setpriv``), so it
  cannot undo any of it. Needs root (or unprivileged user namespaces) and util-linux.
* ``weak``: a plain child process with the scrubbed environment and resource limits only.
  Used only when namespaces are unavailable, and always reported in the Verdict.

Both modes: a scrubbed environment (an allowlist: no API keys or tokens), rlimits on CPU time,
file size, open files, core dumps and (without a GPU) address space, a new session so the
whole process group is SIGKILLed on timeout or when done, and a deadline on every reply.

Each worker also inherits one shared-memory file (a sealed-against-shrinking ``memfd`` on
Linux), the only fd it gets besides stdin/stdout/stderr: ``call`` inputs and outputs travel
through it (see ``wire.pack_shared``). The parent only ever ``pread``s and ``pwrite``s it, never
maps it, so nothing the worker does to it can change the parent's memory.
"""

from __future__ import annotations

import fcntl
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .wire import WireError, pack_message, read_message

# Environment variables a worker may inherit. Everything else, API keys first, is dropped.
ENV_ALLOWLIST = ("PATH", "LANG", "LC_ALL", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES",
                 "NVIDIA_DRIVER_CAPABILITIES", "LD_LIBRARY_PATH", "CUDA_HOME", "TRITON_PTXAS_PATH")

_SETUP_SCRIPT = r"""
set -e
mount --make-rprivate /
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
# A private /dev/shm (nothing a candidate writes there outlives it); /sys and /proc/sys read-only.
mount -t tmpfs -o size=64m,mode=1777,nosuid,nodev tmpfs /dev/shm 2>/dev/null || true
mount -o remount,bind,ro /sys 2>/dev/null || true
mount --bind /proc/sys /proc/sys 2>/dev/null && mount -o remount,bind,ro /proc/sys 2>/dev/null || true
mount -t tmpfs -o size="$KA_TMPFS_SIZE",mode=1777 tmpfs "$KA_PRIVATE"
for d in $KA_HIDE; do mount -t tmpfs -o size=1m,mode=0755 tmpfs "$d" 2>/dev/null || true; done
mkdir -p "$KA_PRIVATE/triton" "$KA_PRIVATE/inductor"
chmod 1777 "$KA_PRIVATE/triton" "$KA_PRIVATE/inductor"
cd "$KA_PRIVATE"
unset KA_TMPFS_SIZE KA_HIDE KA_EXPOSE
exec setpriv $KA_SETPRIV --no-new-privs --inh-caps=-all --bounding-set=-all "$@"
"""


@dataclass
class Limits:
    wall_s: float = 120.0           # whole-worker deadline
    reply_s: float = 60.0           # per request
    cpu_s: int = 600
    memory_bytes: int | None = 16 << 30   # RLIMIT_AS; None on CUDA machines (the driver reserves huge ranges)
    file_bytes: int = 256 << 20
    open_files: int = 1024
    processes: int = 1024           # RLIMIT_NPROC for uid 65534 (threads count too)
    tmpfs_size: str = "1g"


SHM_FD_ENV = "KERNELAGENT_SHM_FD"


def _shared_file() -> int:
    """An anonymous file for the worker's tensor bytes: a memfd (sealed so the worker cannot
    shrink it under the parent, nor change the seals), or an unlinked temporary file."""
    if hasattr(os, "memfd_create"):
        flags = os.MFD_CLOEXEC | getattr(os, "MFD_ALLOW_SEALING", 0)
        fd = os.memfd_create("kernelagent-io", flags)
        try:
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL)
        except (AttributeError, OSError):  # pragma: no cover - old kernel or Python
            pass
        return fd
    fd, path = tempfile.mkstemp(prefix="kernelagent-io-")  # pragma: no cover - not Linux
    os.unlink(path)
    return fd


class WorkerDied(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


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
    return "namespaces", (f"unshare net/pid/mount/ipc/uts, read-only root, private tmpfs and /dev/shm, "
                          f"read-only /sys, {user}")


class SandboxedWorker:
    """A running worker. Use as a context manager; every exit path kills the process group."""

    def __init__(self, *, device: str = "cpu", limits: Limits | None = None):
        self.limits = limits or Limits()
        self.device = device
        self.mode, self.mode_detail = isolation_mode()
        self.proc: subprocess.Popen | None = None
        self._stderr_file = tempfile.TemporaryFile()
        self._deadline = time.monotonic() + self.limits.wall_s
        self._private = tempfile.mkdtemp(prefix="kernelagent-sbx-")
        self._drop_to_nobody = False
        self._pidns: str | None = None
        self.shm_fd = _shared_file()
        self.shm_size = 0

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> dict:
        env = {k: os.environ[k] for k in ENV_ALLOWLIST if k in os.environ}
        env.update(HOME=self._private, TMPDIR=self._private, PYTHONDONTWRITEBYTECODE="1",
                   TRITON_CACHE_DIR=os.path.join(self._private, "triton"),
                   TORCHINDUCTOR_CACHE_DIR=os.path.join(self._private, "inductor"),
                   OMP_NUM_THREADS=os.environ.get("KERNELAGENT_WORKER_THREADS", "1"))
        env[SHM_FD_ENV] = str(self.shm_fd)
        if self.device == "cpu":
            env["TRITON_INTERPRET"] = "1"
        cmd = [sys.executable, "-I", "-m", "kernelagent.harness.worker"]
        if self.mode == "namespaces":
            needed = _needed_paths()
            plan = exposure_plan(needed) or []
            self._drop_to_nobody = True   # isolation_mode() said weak otherwise
            covered = {a for a, _ in plan}
            hide = [h for h in {os.path.expanduser("~"), "/root"} if h and os.path.isdir(h) and h not in covered
                    and not _contains_any(h, [sys.prefix, *map(str, needed), self._private])]
            env_setup = dict(env, KA_PRIVATE=self._private, KA_TMPFS_SIZE=self.limits.tmpfs_size,
                             KA_HIDE=" ".join(hide), KA_EXPOSE=" ".join(f"{a}|{c}" for a, c in plan),
                             KA_SETPRIV="--reuid=65534 --regid=65534 --clear-groups")
            cmd = ["unshare", "--net", "--pid", "--fork", "--kill-child", "--mount", "--ipc", "--uts",
                   "--mount-proc", "sh", "-c", _SETUP_SCRIPT, "kernelagent-sandbox", *cmd]
            env = env_setup
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr_file,
            env=env, start_new_session=True, close_fds=True, pass_fds=(self.shm_fd,), preexec_fn=self._apply_rlimits,
            cwd=self._private, bufsize=0,
        )
        os.set_blocking(self.proc.stdin.fileno(), False)
        ready = self._read(self.limits.reply_s)
        self._pidns = self._worker_pid_namespace() if self.mode == "namespaces" else None
        return ready

    def _worker_pid_namespace(self) -> str | None:
        """The PID namespace of unshare's child, so close() can wait until it is empty."""
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
            return os.readlink(f"/proc/{children[0]}/ns/pid") if children else None
        except OSError:
            return None

    def _reap_namespace(self, wait_s: float = 5.0) -> None:
        """SIGKILL anything left in the worker's PID namespace and wait until it is gone."""
        if not self._pidns:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            left = []
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    try:
                        if os.readlink(f"/proc/{entry}/ns/pid") == self._pidns:
                            left.append(int(entry))
                    except OSError:
                        pass
            if not left:
                return
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.02)

    def _apply_rlimits(self) -> None:  # runs in the child before exec
        lim = self.limits
        if self._drop_to_nobody:
            # Counted per uid: only safe for the dedicated uid 65534 (root is exempt until setpriv).
            resource.setrlimit(resource.RLIMIT_NPROC, (lim.processes, lim.processes))
        resource.setrlimit(resource.RLIMIT_CPU, (lim.cpu_s, lim.cpu_s + 5))
        resource.setrlimit(resource.RLIMIT_FSIZE, (lim.file_bytes, lim.file_bytes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (lim.open_files, lim.open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if lim.memory_bytes and self.device == "cpu":
            resource.setrlimit(resource.RLIMIT_AS, (lim.memory_bytes, lim.memory_bytes))

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - a D-state child
                pass
            self._reap_namespace()
            for f in (self.proc.stdin, self.proc.stdout):
                try:
                    f.close()
                except OSError:  # a pipe the dead worker left half-written
                    pass
        self._stderr_file.close()
        if self.shm_fd is not None:
            os.close(self.shm_fd)
            self.shm_fd = None
        shutil.rmtree(self._private, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- requests -------------------------------------------------------------------------------
    def request(self, header: dict[str, Any], blobs: list[bytes] = (), *, timeout: float | None = None,
                max_reply_bytes: int = 1 << 34):
        """Send a request and wait for the reply, within both the request and worker deadlines.

        A reply whose blobs add up to more than ``max_reply_bytes`` is refused before any of
        them is read (the worker is killed and ``WorkerDied("crash")`` raised)."""
        assert self.proc is not None
        timeout = timeout or self.limits.reply_s
        deadline = min(time.monotonic() + timeout, self._deadline)
        fd = self.proc.stdin.fileno()
        for chunk in pack_message(header, list(blobs)):
            view = memoryview(chunk)
            while view:
                self._wait(fd, "w", deadline, timeout)
                try:
                    view = view[os.write(fd, view):]
                except BlockingIOError:
                    continue
                except (BrokenPipeError, OSError):
                    raise self._died()
        return self._read(timeout, max_reply_bytes)

    # -- the shared file ----------------------------------------------------------------------
    def shm_write(self, data: bytes, offset: int = 0, *, size: int | None = None) -> None:
        """Write ``data`` at ``offset``; grow the file to ``size`` (or the data's end) first.
        The file never shrinks, so the worker's older mappings stay valid."""
        need = max(offset + len(data), size or 0)
        try:
            if need > self.shm_size:
                os.ftruncate(self.shm_fd, need)
                self.shm_size = need
            view, pos = memoryview(data), offset
            while view:
                n = os.pwrite(self.shm_fd, view, pos)
                view, pos = view[n:], pos + n
        except OSError as e:
            raise WorkerDied("crash", f"could not write the shared inputs (did the worker tamper with the "
                             f"shared file?): {e}") from None

    def shm_read(self, offset: int, n: int) -> bytes:
        """Exactly ``n`` bytes from ``offset``: a private copy, read once."""
        chunks, got = [], 0
        try:
            while got < n:
                b = os.pread(self.shm_fd, min(n - got, 1 << 26), offset + got)
                if not b:
                    break
                chunks.append(b)
                got += len(b)
        except OSError as e:
            raise WorkerDied("crash", f"could not read the shared file: {e}") from None
        if got != n:
            raise WorkerDied("crash", f"the shared file ends after {got} of {n} bytes at offset {offset} "
                             "(tampered with by the worker)")
        return b"".join(chunks)

    def _wait(self, fd: int, mode: str, deadline: float, timeout: float) -> None:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.close_quietly()
                raise WorkerDied("timeout", f"no reply within {timeout:.0f}s (worker killed)")
            sets = ([fd], [], []) if mode == "r" else ([], [fd], [])
            if any(select.select(*sets, min(remaining, 0.5))):
                return
            if self.proc.poll() is not None and mode == "w":
                raise self._died()

    def _read(self, timeout: float, max_bytes: int = 1 << 34):
        deadline = min(time.monotonic() + timeout, self._deadline)
        worker = self

        class _DeadlineReader:
            def read(self, n: int) -> bytes:
                fd = worker.proc.stdout.fileno()
                worker._wait(fd, "r", deadline, timeout)
                return os.read(fd, min(n, 1 << 24))

        try:
            return read_message(_DeadlineReader(), max_bytes=max_bytes)
        except EOFError:
            raise self._died()
        except WireError as e:
            self.close_quietly()
            raise WorkerDied("crash", f"protocol violation from the worker: {e}")

    def close_quietly(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def stderr_tail(self, n: int = 2000) -> str:
        try:
            self._stderr_file.seek(0, os.SEEK_END)
            size = self._stderr_file.tell()
            self._stderr_file.seek(max(0, size - n))
            return self._stderr_file.read().decode(errors="replace")
        except (ValueError, OSError):
            return ""

    def _died(self) -> WorkerDied:
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.close_quietly()
            code = self.proc.wait(timeout=5)
        tail = self.stderr_tail()
        if code is not None and code < 0:
            what = f"killed by signal {signal.Signals(-code).name}"
        elif code == 137 or "MemoryError" in tail or "Cannot allocate memory" in tail:
            what = f"exited with status {code} (out of memory?)"
        else:
            what = f"exited with status {code} before replying"
        return WorkerDied("crash", f"worker {what}" + (f"; stderr tail:\n{tail}" if tail.strip() else ""))


def _contains_any(directory: str, paths: list[str]) -> bool:
    d = os.path.realpath(directory) + os.sep
    return any(os.path.realpath(p).startswith(d) for p in paths)
