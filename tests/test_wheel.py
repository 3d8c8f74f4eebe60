"""A plain (non-editable) wheel install works: built from a copy of the sources, installed into a fresh
venv (``--system-site-packages`` and the running environment's site-packages for torch & co.), then ``dsvbench --list-methods`` and a tiny digits run.

Nothing may come from the checkout: the commands run from a temporary folder without PYTHONPATH, and every
dsvbench module (``dsvbench.baselines`` included, mapped from the top-level ``baselines/`` folder) must
resolve inside the venv — the editable install of the base environment must not stand in for the wheel.
"""
import json
import os
import shutil
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*argv, cwd, env):
    done = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(map(str, argv))} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done.stdout


@pytest.mark.slow
def test_plain_wheel_install_lists_methods_and_runs_digits(tmp_path):
    source = tmp_path / "source"   # a copy: building writes build/ and *.egg-info, not into the checkout
    for folder in ("dsvbench", "baselines"):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    work = tmp_path / "work"
    work.mkdir()
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
        "-w", tmp_path / "wheels", source, cwd=work, env=env)
    wheel, = (tmp_path / "wheels").glob("dsvbench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"dsvbench/cli.py", "dsvbench/baselines/random.py", "dsvbench/methods/dsvg.py"} <= names
    assert not any(name.startswith("baselines/") for name in names)   # never the top-level name `baselines`

    environment = tmp_path / "venv"
    venv.create(environment, system_site_packages=True, with_pip=False)
    # --system-site-packages reaches the *base* interpreter's packages only; when these tests run in a
    # virtualenv (where torch & co. live), its site-packages are added as plain path lines (a path line
    # does not run that folder's .pth files, so the editable dsvbench there never stands in for the wheel)
    inner, = (environment / "lib").glob("python*/site-packages")
    (inner / "outer-environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    python, script = environment / "bin" / "python", environment / "bin" / "dsvbench"
    run(python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", wheel, cwd=work, env=env)
    files = json.loads(run(python, "-c", "import json, dsvbench, dsvbench.cli, dsvbench.baselines, "
                           "dsvbench.baselines.random, dsvbench.methods; print(json.dumps([m.__file__ for m in "
                           "(dsvbench, dsvbench.cli, dsvbench.baselines, dsvbench.baselines.random, "
                           "dsvbench.methods)]))", cwd=work, env=env))
    assert all(Path(f).resolve().is_relative_to(environment.resolve()) for f in files), files

    listing = run(script, "--list-methods", cwd=work, env=env)
    assert all(method in listing for method in ("random", "herding", "forgetting", "dsvs", "dd", "dc", "dsvg"))
    run(script, "--dataset", "digits", "--methods", "random", "--seeds", "1", "--eval-epochs", "1", "--quiet",
        "--out", work / "out", "--cache-dir", work / "cache", cwd=work, env=env)
    assert "digits IPC=1: ours" in (work / "out" / "table.md").read_text()
    record, = (work / "out" / "records").glob("random-seed0-*.json")
    assert json.loads(record.read_text())["git_commit"] is None   # provenance: not a git checkout of dsvbench
