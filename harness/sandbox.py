"""One sandboxed worker process per candidate.

Isolation, strongest available first:

* ``namespaces``: ``unshare`` gives the worker its own network (no interfaces), PID (nothing
  it starts outlives it), mount, IPC and UTS namespaces. Inside, every mount is remounted
  read-only, /dev is replaced by a minimal read-only one (null, zero, full, random, urandom,
  the GPU's nodes on CUDA) with a private tmpfs /dev/shm, /sys and /proc/sys are read-only,
  a private tmpfs becomes HOME/TMPDIR/cwd and the Triton cache, and the
  process drops to uid/gid 65534 with no capabilities and ``no_new_privs`` (``setpriv``), so it
  cannot undo any of it. Needs root (or unprivileged user namespaces) and util-linux.
* ``weak``: a plain child process with the scrubbed environment and resource limits only.
  Used only when namespaces are unavailable, and always reported in the Verdict.

Both modes: a scrubbed environment (an allowlist: no API keys or tokens), rlimits on file size,
open files, core dumps, processes and (without a GPU) address space, a new session so the
whole process group is SIGKILLed on timeout or when done. Time is judged by CPU: the parent
sums the CPU time of every process in the worker's session while it waits for a reply and
stops the worker when a use (one ``verify`` or ``measure``) exceeds ``Limits.cpu_s``; wall
clocks only catch a worker that makes no progress (see ``Limits``).

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
from pathlib import Path
from typing import Any

from .isolation import (ENV_ALLOWLIST, SETUP_SCRIPT, _contains_any, _needed_paths, exposure_plan,  # noqa: F401
                        gpu_device_nodes, isolation_mode)
from .limits import Limits, Watch, session_cpu_seconds  # noqa: F401 - Limits is part of this module's API
from .verdict import scrubbed_tail
from .wire import WireError, pack_message, read_message

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
    """The worker is gone (or was killed). ``kind`` says why a timeout fired: "cpu" (the budget
    was used up), "stall" (no CPU progress), "wall" (the absolute ceiling); ``cpu_s`` is the CPU
    the worker had used in this budget when it was stopped."""

    def __init__(self, reason: str, detail: str, *, kind: str | None = None, cpu_s: float | None = None):
        super().__init__(detail)
        self.reason, self.detail, self.kind, self.cpu_s = reason, detail, kind, cpu_s


class SandboxedWorker:
    """A running worker. Use as a context manager; every exit path kills the process group."""

    def __init__(self, *, device: str = "cpu", limits: Limits | None = None):
        """``device``: "cpu" (Triton's interpreter), "cuda" (the GPU's device nodes exposed) or
        "static" (neither: Triton compiles for a target arch without running anything)."""
        self.limits = limits or Limits()
        self.device = device
        self.mode, self.mode_detail = isolation_mode()
        self.proc: subprocess.Popen | None = None
        self._stderr_file = tempfile.TemporaryFile()
        self._budget_start_cpu = 0.0
        self._deadline = time.monotonic() + self.limits.wall()
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
                             KA_DEVICES=" ".join(gpu_device_nodes()) if self.device not in ("cpu", "static") else "",
                             KA_SETPRIV="--reuid=65534 --regid=65534 --clear-groups")
            cmd = ["unshare", "--net", "--pid", "--fork", "--kill-child", "--mount", "--ipc", "--uts",
                   "--mount-proc", "sh", "-c", SETUP_SCRIPT, "kernelagent-sandbox", *cmd]
            env = env_setup
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr_file,
            env=env, start_new_session=True, close_fds=True, pass_fds=(self.shm_fd,), preexec_fn=self._apply_rlimits,
            cwd=self._private, bufsize=0,
        )
        os.set_blocking(self.proc.stdin.fileno(), False)
        self.begin_budget()
        ready = self._read()
        self._pidns = self._worker_pid_namespace() if self.mode == "namespaces" else None
        return ready

    # -- CPU-time accounting --------------------------------------------------------------------
    def cpu_seconds(self) -> float:
        """CPU the worker's session has consumed so far (0 before it started)."""
        return session_cpu_seconds(self.proc.pid) if self.proc is not None else 0.0

    def budget_used(self) -> float:
        return max(0.0, self.cpu_seconds() - self._budget_start_cpu)

    def begin_budget(self, limits: Limits | None = None) -> None:
        """Start a new use (one verify or measure on a reused worker): its CPU budget and wall
        ceiling count from now."""
        if limits is not None:
            self.limits = limits
        self._budget_start_cpu = self.cpu_seconds()
        self._deadline = time.monotonic() + self.limits.wall()

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
        resource.setrlimit(resource.RLIMIT_CPU, (lim.rlimit_cpu_s, lim.rlimit_cpu_s + 5))
        resource.setrlimit(resource.RLIMIT_FSIZE, (lim.file_bytes, lim.file_bytes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (lim.open_files, lim.open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if lim.memory_bytes and self.device in ("cpu", "static"):
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
    def request(self, header: dict[str, Any], blobs: list[bytes] = (), *, max_reply_bytes: int = 1 << 34,
                extra_wall_s: float = 0.0):
        """Send a request and wait for the reply, within the CPU budget and the wall limits
        (``extra_wall_s``: wall time the request legitimately idles, e.g. an energy window).

        A reply whose blobs add up to more than ``max_reply_bytes`` is refused before any of
        them is read (the worker is killed and ``WorkerDied("crash")`` raised)."""
        assert self.proc is not None
        watch = Watch(self, extra_wall_s)
        fd = self.proc.stdin.fileno()
        for chunk in pack_message(header, list(blobs)):
            view = memoryview(chunk)
            while view:
                self._wait(fd, "w", watch)
                try:
                    view = view[os.write(fd, view):]
                except BlockingIOError:
                    continue
                except (BrokenPipeError, OSError):
                    raise self._died()
        return self._read(max_reply_bytes, watch)

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

    def _wait(self, fd: int, mode: str, watch: "Watch") -> None:
        while True:
            watch.check()
            sets = ([fd], [], []) if mode == "r" else ([], [fd], [])
            if any(select.select(*sets, 0.25)):
                return
            if self.proc.poll() is not None and mode == "w":
                raise self._died()

    def _read(self, max_bytes: int = 1 << 34, watch: "Watch | None" = None):
        watch = watch or Watch(self)
        worker = self

        class _LimitedReader:
            def read(self, n: int) -> bytes:
                fd = worker.proc.stdout.fileno()
                worker._wait(fd, "r", watch)
                return os.read(fd, min(n, 1 << 24))

        try:
            return read_message(_LimitedReader(), max_bytes=max_bytes)
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
            self._stderr_file.seek(max(0, size - 4 * n))
            return scrubbed_tail(self._stderr_file.read().decode(errors="replace"), n)
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
