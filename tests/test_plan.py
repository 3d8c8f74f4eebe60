"""The run's task list: one task per column (chunks on CPU workers), longest first."""
from dsvbench.config import BenchConfig
from dsvbench.plan import plan_tasks as plan
from dsvbench.methods import METHODS, load_methods


def test_tasks_are_ordered_longest_first_by_estimated_cost():
    load_methods()
    config = BenchConfig(methods=("random", "dsvs", "dc", "dsvg"), seeds=(0, 1, 2, 3, 4), jobs=2)
    tasks = plan(config)
    estimated = [(METHODS.get(t.method).cost + 0.5) * len(t.seeds) for t in tasks]
    assert estimated == sorted(estimated, reverse=True)
    assert tasks[0].method == "dc" and tasks[-1].method == "random"     # not simply the most seeds first
    assert sorted(s for t in tasks if t.method == "dc" for s in t.seeds) == [0, 1, 2, 3, 4]
    assert [t.seeds for t in tasks if t.method == "dsvg"] == [(0, 1, 2, 3, 4)]   # batched: one task
