"""The library entry point: the README's three-line example runs as written, and ``dsvbench.run`` /
``dsvbench.rerender`` give what the command line gives."""
import json
import re
from pathlib import Path

import pytest

import dsvbench
from dsvbench.cli import main
from dsvbench.registry import UserError

ROOT = Path(__file__).resolve().parents[1]
FAST = dict(dataset="digits", methods=["random"], seeds=2, eval_epochs=2, quiet=True)


def readme_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    example = next(block for block in blocks if "dsvbench.run(" in block)
    assert len(example.strip().splitlines()) == 3
    return example


@pytest.mark.slow
def test_the_readme_example_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)   # its out= and the default cache land here, not in the checkout
    exec(compile(readme_example(), "README.md", "exec"), {})
    printed = capsys.readouterr().out
    table = (tmp_path / "results" / "api-demo" / "table.md").read_text()
    assert "random" in printed and "herding" in printed and "digits IPC=1" in printed
    assert "random" in table and "herding" in table
    assert len(list((tmp_path / "results" / "api-demo" / "records").glob("*.json"))) == 4


def test_run_gives_the_records_the_command_line_gives(tmp_path):
    cache = str(tmp_path / "cache")
    results = dsvbench.run(out=str(tmp_path / "api"), cache_dir=cache, **FAST)
    argv = ["--dataset", "digits", "--methods", "random", "--seeds", "2", "--eval-epochs", "2", "--quiet",
            "--out", str(tmp_path / "cli"), "--cache-dir", cache]
    assert main(argv) == 0
    by_cli = sorted(json.loads(p.read_text())["test_accuracy"] for p in (tmp_path / "cli" / "records").glob("*.json"))
    assert sorted(r["test_accuracy"] for r in results.records) == by_cli and len(by_cli) == 2
    assert results.ok and results.failures == [] and list(results.summary["method"]) == ["random"]
    assert "REDUCED/CHANGED BUDGET" in results.table()   # --eval-epochs 2 is said, as in every output
    assert json.loads((tmp_path / "api" / "run.json").read_text())["command"][0] == "dsvbench.run"


def test_run_takes_a_config_and_rerender_merges(tmp_path):
    cache = str(tmp_path / "cache")
    config = dsvbench.config_from_flags(out=str(tmp_path / "a"), cache_dir=cache, **{**FAST, "seeds": 1})
    first = dsvbench.run(config)
    second = dsvbench.run(out=str(tmp_path / "b"), cache_dir=cache, seed_list=[1], **FAST)
    merged = dsvbench.rerender([first.out, second.out], out=tmp_path / "merged")
    assert sorted(r["seed"] for r in merged.records) == [0, 1]
    assert (tmp_path / "merged" / "table.md").exists() and merged.ok
    with pytest.raises(UserError, match="would be overwritten"):
        dsvbench.rerender([first.out])   # would overwrite its own inputs


def test_bad_input_is_a_user_error_before_any_work(tmp_path):
    with pytest.raises(UserError, match="unknown option"):
        dsvbench.run(datset="digits", out=str(tmp_path / "x"))
    with pytest.raises(UserError, match="unknown method"):
        dsvbench.run(dataset="digits", methods=["nope"], out=str(tmp_path / "y"))
    config = dsvbench.config_from_flags(dataset="digits", methods=["random"], out=str(tmp_path / "z"))
    with pytest.raises(UserError, match="not both"):
        dsvbench.run(config, seeds=2)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


PLUGIN = """
from dataclasses import dataclass
import torch
from dsvbench.methods import CondensedSet, register_method, take_per_class

@dataclass(frozen=True)
class Recipe:
    pass

@register_method("plugged-for-test", table_name="plugged", group="selection", recipe=Recipe, eval_recipe="dc",
                 needs_data=True)
def build(ctx, recipe):
    chosen = take_per_class(torch.rand(len(ctx.train_labels), generator=ctx.generator), ctx.train_labels,
                            ctx.num_classes, ctx.ipc)
    return CondensedSet(ctx.train_images[chosen], ctx.train_labels[chosen])
"""


def test_a_plug_ins_source_is_recorded_like_dsvbenchs_own(tmp_path, monkeypatch):
    import importlib

    from dsvbench.methods import METHODS
    (tmp_path / "plugged_for_test.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("plugged_for_test")
    try:
        results = dsvbench.run(out=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"),
                               **{**FAST, "methods": ["plugged-for-test", "random"], "seeds": 1})
    finally:
        METHODS.discard("plugged-for-test")
    plugged = [r for r in results.records if r["method"] == "plugged-for-test"]
    assert plugged and plugged[0]["method_source"]["module"] == "plugged_for_test"
    assert plugged[0]["method_source"]["file"].endswith("plugged_for_test.py")
    assert all("method_source" not in r for r in results.records if r["method"] == "random")   # dsvbench's own
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert list(info["method_sources"]) == ["plugged-for-test"]


@pytest.mark.slow
def test_the_readme_evaluate_section_runs_as_written(tmp_path, monkeypatch, capsys):
    """Its three shell lines (the script path made absolute: the test runs in a scratch folder) and its
    three lines of Python; both score the class-mean set beside random, the same accuracies."""
    import shlex
    import subprocess
    import sys
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Evaluate your own set"):text.index("## Examples")]
    shell = re.search(r"```bash\n(.*?)```", section, re.S).group(1).strip().splitlines()
    python = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(shell) == 3 and len(python.strip().splitlines()) == 3
    monkeypatch.chdir(tmp_path)
    for line in shell:
        argv = shlex.split(line.split("#")[0].replace("benchmarks/", f"{ROOT}/benchmarks/"))
        argv = [sys.executable, "-m", "dsvbench.cli", *argv[1:]] if argv[0] == "dsvbench" else argv
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
    assert "class-mean" in done.stdout and "random" in done.stdout          # cat table.md
    exec(compile(python, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "class-mean" in printed and "IOR" in printed
    cli = sorted(json.loads(p.read_text())["test_accuracy"] for p in (tmp_path / "results" / "evaluate-demo" / "records").glob("class-mean-*.json"))
    api = sorted(json.loads(p.read_text())["test_accuracy"] for p in (tmp_path / "results" / "evaluate-py" / "records").glob("class-mean-*.json"))
    assert cli == api and len(cli) == 2
