"""benchmarks/table1_gpu.sh --smoke end to end: every phase, the merged table, timings, the tarball."""
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "table1_gpu.sh"
METHODS = {"random", "herding", "forgetting", "dsvs", "dd", "dc", "dsvg"}


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("bash") and shutil.which("timeout")), reason="needs bash and timeout")
def test_smoke_run_renders_all_columns_and_packs_them(tmp_path):
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("BUDGET", "CACHE")}
    env.update(OUT=str(out), PYTHON=sys.executable)
    done = subprocess.run(["bash", str(SCRIPT), "--smoke"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    for name in ("run/table.md", "run/summary.csv", "run/run.json", "timings.md"):
        assert (out / name).is_file(), name
    summary = pd.read_csv(out / "run" / "summary.csv")
    results = pd.read_csv(out / "run" / "results.csv")
    assert set(summary["method"]) == METHODS and (summary["seeds"] == 2).all()
    assert results.groupby("method")["seed"].nunique().to_dict() == dict.fromkeys(METHODS, 2)
    with tarfile.open(out / "table1.tgz") as tar:
        assert "run/table.md" in tar.getnames()
