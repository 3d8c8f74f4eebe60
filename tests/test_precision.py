"""--eval-precision: bf16 autocast / TF32 for retraining and test evaluation, stored and keyed."""
import json
from dataclasses import replace

import pytest
import torch

import dsvbench
from dsvbench.cli import main
from dsvbench.config import eval_recipe
from dsvbench.models import InputShape, create_model
from dsvbench.training import numeric_precision, retrain_population

FAST = ["--dataset", "digits", "--pretrain-epochs", "2", "--eval-epochs", "5", "--quiet", "--methods", "random",
        "--seeds", "1"]


def _population(precision: str, steps: int = 15):
    torch.manual_seed(0)
    images, labels = torch.randn(10, 1, 8, 8), torch.arange(10)
    test_images, test_labels = torch.randn(50, 1, 8, 8), torch.randint(0, 10, (50,))
    recipe = replace(eval_recipe("dc", "digits"), epochs=steps, precision=precision)
    generators = [torch.Generator().manual_seed(i) for i in range(2)]
    models = [create_model("convnet", InputShape(1, 8, 10), g) for g in generators]
    retrain_population(models, generators, [(images, labels)] * 2, test_images, test_labels, recipe)
    return torch.cat([p.detach().flatten() for m in models for p in m.parameters()]), models


def test_bf16_autocast_changes_the_arithmetic_not_the_weights_dtype():
    exact, _ = _population("fp32")
    again, _ = _population("fp32")
    low, models = _population("bf16")
    assert torch.equal(exact, again)                                   # fp32 is deterministic
    assert all(p.dtype == torch.float32 for m in models for p in m.parameters())
    gap = (low - exact).norm() / exact.norm()
    assert 0 < gap < 0.05                                              # bf16 ran, and stayed close


def test_precision_scope_restores_the_global_flags():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.benchmark)
    with numeric_precision("bf16", torch.device("cpu")):
        assert torch.is_autocast_enabled("cpu")
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.benchmark) == before
    with pytest.raises(ValueError, match="precision"):
        with numeric_precision("fp8", torch.device("cpu")):
            pass


def test_tf32_off_cuda_is_refused_before_any_work(capsys, tmp_path):
    code = main([*FAST, "--eval-precision", "tf32", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "needs a CUDA device" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_precision_is_stored_and_keys_its_own_records(capsys, tmp_path):
    flags = dict(dataset="digits", pretrain_epochs=2, eval_epochs=5, methods=["random"], seeds=1,
                 cache_dir=str(tmp_path / "cache"))
    assert dsvbench.run(**flags, out=str(tmp_path / "a")).ok
    assert dsvbench.run(**flags, out=str(tmp_path / "b"), eval_precision="bf16").ok
    a, = [json.loads(p.read_text()) for p in (tmp_path / "a" / "records").glob("*.json")]
    b, = [json.loads(p.read_text()) for p in (tmp_path / "b" / "records").glob("*.json")]
    assert a["eval.precision"] == "fp32" and b["eval.precision"] == "bf16"
    assert a["set_key"] == b["set_key"] and a["eval_key"] != b["eval_key"]
