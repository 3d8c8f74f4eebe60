"""A run killed midway loses nothing finished; the rerun redoes only what is missing."""
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]

# A method module loaded into the CLI process: it logs each build, and kills the whole
# process (SIGKILL, no cleanup) when it reaches the seed named in $KILL_AT_SEED.
PLUGIN = '''
import os, signal
from dataclasses import dataclass
import torch
from dsvbench.methods import CondensedSet, register_method, take_per_class

@dataclass(frozen=True)
class Recipe:
    pass

@register_method("killable", table_name="killable", group="selection", recipe=Recipe,
                 eval_recipe="dc", needs_data=True)
def build(ctx, recipe):
    seed = ctx.generator.initial_seed()
    with open(os.environ["BUILD_LOG"], "a") as log:
        log.write(f"{seed}\\n")
    if str(seed) == os.environ.get("KILL_AT_SEED"):
        os.kill(os.getpid(), signal.SIGKILL)
    chosen = take_per_class(torch.rand(len(ctx.train_labels), generator=ctx.generator),
                            ctx.train_labels, ctx.num_classes, ctx.ipc)
    return CondensedSet(ctx.train_images[chosen], ctx.train_labels[chosen])
'''


def run_cli(tmp_path, kill_at, seeds=4):
    (tmp_path / "killable_plugin.py").write_text(PLUGIN)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}", "BUILD_LOG": str(tmp_path / "builds.log"),
           "KILL_AT_SEED": str(kill_at)}
    code = ("import killable_plugin, sys; from dsvbench.cli import main; sys.exit(main(sys.argv[1:]))")
    return subprocess.run(
        [sys.executable, "-c", code, "--dataset", "digits", "--methods", "killable", "--seeds", str(seeds),
         "--eval-epochs", "3", "--quiet", "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache")],
        env=env, capture_output=True, text=True, timeout=300)


def stamps(folder):
    """Each record's file identity (inode, ns mtime) and content: a record rewritten atomically gets a new one."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_text()) for p in (folder / "records").glob("*.json")}


@pytest.mark.slow
def test_killed_run_resumes_without_recomputing(tmp_path):
    first = run_cli(tmp_path, kill_at=-1, seeds=2)                  # seeds 0 and 1 finished
    assert first.returncode == 0, first.stderr
    before = stamps(tmp_path / "run")
    assert len(before) == 2

    killed = run_cli(tmp_path, kill_at=3)
    assert killed.returncode != 0                                   # died by SIGKILL at seed 3
    # The column's missing sets are built first (seed 2 cached as it finished), then retrained
    # together: no new record yet, the finished ones untouched, nothing built is lost.
    assert len(list((tmp_path / "cache" / "sets").glob("killable-*.pt"))) == 3
    assert stamps(tmp_path / "run") == before

    finished = run_cli(tmp_path, kill_at=-1)
    assert finished.returncode == 0, finished.stderr
    builds = (tmp_path / "builds.log").read_text().split()
    assert builds == ["0", "1", "2", "3", "3"]                     # 0, 1 and 2 were not rebuilt
    after = stamps(tmp_path / "run")
    assert len(after) == 4 and {name: after[name] for name in before} == before   # finished records kept as they were
    assert sorted(pd.read_csv(tmp_path / "run" / "results.csv")["seed"]) == [0, 1, 2, 3]

    assert "2/4 records present; 2 to make" in finished.stdout
    third = run_cli(tmp_path, kill_at=-1)                           # nothing left to do, and it says so
    assert third.returncode == 0 and (tmp_path / "builds.log").read_text().split() == builds
    assert "4/4 records present: nothing to build or retrain" in third.stdout
    assert stamps(tmp_path / "run") == after


def test_table_holds_only_the_current_recipes(tmp_path, capsys):
    """Records an earlier command left in --out with another recipe stay out of the new table."""
    from dsvbench.cli import main
    common = ["--dataset", "digits", "--methods", "random", "--seeds", "2", "--quiet",
              "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache")]
    assert main(common + ["--eval-epochs", "2"]) == 0
    assert main(common + ["--eval-epochs", "3"]) == 0
    capsys.readouterr()
    assert len(list((tmp_path / "run" / "records").glob("*.json"))) == 4     # both kept on disk
    results = pd.read_csv(tmp_path / "run" / "results.csv")
    assert len(results) == 2 and set(results["eval.epochs"]) == {3}            # only the current one
