"""User modules: a KernelBench problem plus its verified ``ModelNew``, kept under a name.

``kernelagent library add NAME PROBLEM CANDIDATE`` re-verifies the candidate against the problem
in the sandbox and, only if it is verified, stores both files with an ``entry.json`` under
``<user library>/modules/NAME/`` (``_configs.user_library_dir``). ``load_module(NAME)`` gives the
stored ``ModelNew`` class back; users construct and call it like the problem's ``Model``::

    from kernelagent.kernels import load_module
    ModelNew = load_module("relu_scale")
    y = ModelNew(96)(x)

A module whose stored files no longer match the hashes recorded when they were verified is
refused with the reason (re-add it). A candidate may declare a tuning space and read its
config: module-level ``TUNING_SPACE = {"BLOCK": [256, 512, 1024]}`` and ``CONFIG = {...}``
(its defaults); the harness sets ``CONFIG`` to the config under test before constructing
``ModelNew``, and ``load_module`` sets it to the config recorded in the entry.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._configs import user_library_dir

MODULE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")
ENTRY_FILE, PROBLEM_FILE, CANDIDATE_FILE = "entry.json", "problem.py", "candidate.py"
ENTRY_VERSION = 1


class UnknownModuleError(LookupError):
    """No user module of that name (or it is unusable); the message says why and what to do."""


def modules_dir(library: Path | str | None = None) -> Path:
    return (Path(library).expanduser() if library is not None else user_library_dir()) / "modules"


def check_name(name: str) -> str:
    if not isinstance(name, str) or not MODULE_NAME.match(name):
        raise ValueError(f"bad module name {name!r}: a letter, then up to 63 letters, digits, '_' or '-'")
    return name


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ModuleEntry:
    """What ``entry.json`` records: the files' hashes and the verification that let them in."""

    name: str
    problem_sha256: str
    candidate_sha256: str
    config: dict | None
    tuning_space: dict | None
    verified: dict                 # verdict summary: device, trials, worst error ratio, seed, sandbox
    provenance: dict               # added (date), kernelagent/torch/triton versions, source file names
    folder: Path

    @classmethod
    def read(cls, folder: Path) -> "ModuleEntry":
        path = folder / ENTRY_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise UnknownModuleError(f"user module {folder.name!r} is unusable: cannot read {path} ({e}); "
                                     f"re-add it with `kernelagent library add {folder.name} PROBLEM CANDIDATE`") from None
        problems = []
        if not isinstance(data, dict) or data.get("version") != ENTRY_VERSION:
            problems.append(f"version is not {ENTRY_VERSION}")
            data = data if isinstance(data, dict) else {}
        for key in ("problem_sha256", "candidate_sha256"):
            if not (isinstance(data.get(key), str) and re.fullmatch(r"[0-9a-f]{64}", data[key])):
                problems.append(f"{key} is not a sha256")
        for key in ("config", "tuning_space"):
            if data.get(key) is not None and not isinstance(data[key], dict):
                problems.append(f"{key} is not an object")
        for key in ("verified", "provenance"):
            if not isinstance(data.get(key), dict):
                problems.append(f"{key} is missing")
        if problems:
            raise UnknownModuleError(f"user module {folder.name!r} is unusable: {path}: {'; '.join(problems)}")
        return cls(folder.name, data["problem_sha256"], data["candidate_sha256"], data.get("config"),
                   data.get("tuning_space"), data["verified"], data["provenance"], folder)

    def to_json(self) -> dict[str, Any]:
        return {"version": ENTRY_VERSION, "name": self.name, "problem_sha256": self.problem_sha256,
                "candidate_sha256": self.candidate_sha256, "config": self.config, "tuning_space": self.tuning_space,
                "verified": self.verified, "provenance": self.provenance}

    def tampered(self) -> list[str]:
        """Stored files whose bytes no longer hash to what was verified."""
        bad = []
        for fname, sha in ((PROBLEM_FILE, self.problem_sha256), (CANDIDATE_FILE, self.candidate_sha256)):
            try:
                ok = sha256_text((self.folder / fname).read_text(encoding="utf-8")) == sha
            except (OSError, UnicodeDecodeError):
                ok = False
            if not ok:
                bad.append(fname)
        return bad


def module_names(library: Path | str | None = None) -> list[str]:
    root = modules_dir(library)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and MODULE_NAME.match(p.name)
                  and (p / ENTRY_FILE).is_file())


def module_entry(name: str, library: Path | str | None = None) -> ModuleEntry:
    folder = modules_dir(library) / check_name(name)
    if not (folder / ENTRY_FILE).is_file():
        known = module_names(library)
        raise UnknownModuleError(f"no user module {name!r} in {modules_dir(library)}"
                                 + (f" (known: {', '.join(known)})" if known else " (none added yet)")
                                 + f"; add one with `kernelagent library add {name} PROBLEM CANDIDATE`")
    return ModuleEntry.read(folder)


_LOADED: dict[tuple[str, str], Any] = {}


def load_module(name: str, library: Path | str | None = None) -> type:
    """The verified ``ModelNew`` class stored under ``name`` (see the module docstring)."""
    entry = module_entry(name, library)
    bad = entry.tampered()
    if bad:
        raise UnknownModuleError(f"user module {name!r}: {', '.join(bad)} changed since it was verified "
                                 f"(in {entry.folder}); refusing to load it — re-add it with "
                                 f"`kernelagent library add {name} PROBLEM CANDIDATE --force`")
    key = (str(entry.folder), entry.candidate_sha256)
    if key not in _LOADED:
        mod_name = f"kernelagent_user_module_{re.sub(r'[^A-Za-z0-9_]', '_', name)}_{entry.candidate_sha256[:12]}"
        from ._variants import import_file

        module = import_file(mod_name, entry.folder / CANDIDATE_FILE)
        if entry.config is not None:
            module.CONFIG = dict(entry.config)
        cls = getattr(module, "ModelNew", None)
        if not isinstance(cls, type):
            raise UnknownModuleError(f"user module {name!r}: {CANDIDATE_FILE} defines no class ModelNew")
        _LOADED[key] = cls
    return _LOADED[key]
