"""What code made a record: dsvbench's version and, in a git checkout of dsvbench, its commit and
whether the code had uncommitted changes; asked once per process and pinned."""
from __future__ import annotations

from pathlib import Path
from typing import Any


_PROVENANCE: dict[str, Any] = {}


def provenance() -> dict[str, Any]:
    """What code made a record: ``dsvbench_version``, ``git_commit`` and ``git_dirty`` (uncommitted
    changes to the code: ``dsvbench/``, ``baselines/``, ``run_bench.py``, ``pyproject.toml``).

    Git is asked once per process; both git fields are None outside a git checkout of dsvbench
    (a wheel install, no git, or a package that lies in some other repository).
    """
    if not _PROVENANCE:
        from .version import __version__
        _PROVENANCE.update(dsvbench_version=__version__, **_git_state(Path(__file__).resolve().parent))
    return dict(_PROVENANCE)


def _git(folder: Path, *args: str) -> str | None:
    """``git ARGS`` run in ``folder``: its output, or None when git fails there."""
    import subprocess
    done = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=10)
    return done.stdout.strip() if done.returncode == 0 else None


def _git_state(package: Path) -> dict[str, Any]:
    import subprocess

    def git(*args: str) -> str | None:
        return _git(package.parent, *args)
    try:
        top = git("rev-parse", "--show-toplevel")
        if top is None or Path(top).resolve() != package.parent:
            return {"git_commit": None, "git_dirty": None}
        status = git("status", "--porcelain", "--", "dsvbench", "baselines", "run_bench.py", "pyproject.toml")
        return {"git_commit": git("rev-parse", "HEAD"), "git_dirty": None if status is None else bool(status)}
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}


_SOURCES: dict[str, Any] = {}


def method_source(build: Any) -> dict[str, Any] | None:
    """Where a plug-in method's code comes from (None for dsvbench's own): its module and file, the
    distribution that installed it and its version, and the git commit and uncommitted changes of the
    checkout holding the file, when there is one.  Asked once per module and process."""
    import importlib.metadata
    import inspect
    import subprocess
    module = getattr(build, "__module__", "") or ""
    if module.split(".")[0] == "dsvbench":
        return None
    if module not in _SOURCES:
        top = module.split(".")[0]
        distributions = importlib.metadata.packages_distributions().get(top) or []
        package = distributions[0] if distributions else None
        try:
            version = importlib.metadata.version(package) if package else None
        except importlib.metadata.PackageNotFoundError:
            version = None
        try:
            file = inspect.getsourcefile(build)
        except TypeError:
            file = None
        commit = dirty = None
        if file:
            try:
                commit = _git(Path(file).parent, "rev-parse", "HEAD")
                status = _git(Path(file).parent, "status", "--porcelain", "--", Path(file).name) if commit else None
                dirty = None if status is None else bool(status)
            except (OSError, subprocess.SubprocessError):
                commit = dirty = None
        _SOURCES[module] = {"module": module, "file": file, "package": package, "version": version,
                            "git_commit": commit, "git_dirty": dirty}
    return dict(_SOURCES[module])
