"""The fan-out of a run's tasks: one after the other in this process, through joblib (loky
worker processes, or any joblib backend by name) or on a dask cluster (:mod:`.cluster`).  Workers
reload the cached dataset and θ*, write their records themselves, and end with the run."""
from __future__ import annotations

import os
import socket
import sys
import threading
import time
from typing import Any

import torch
from joblib import Parallel, delayed

from .config import BenchConfig
from .data import ImageDataset
from .plan import Task, plan_tasks, task_cost
from .pretrain import Pretrained
from .process import configure, worker_threads
from .tasks import announce, prepare, run_task_safely


def run_all(config: BenchConfig, progress: bool = True,
        loaded: tuple[ImageDataset, Pretrained | None] | None = None) -> list[dict[str, Any]]:
    """Run every pending task; returns one outcome per task ({task, records, error})."""
    loaded = loaded or prepare(config, progress)
    tasks = plan_tasks(config)
    tally = Tally(tasks, progress)
    if config.jobs == 1 and config.backend != "dask":
        outcomes = []
        for task in tasks:
            outcomes.append(run_task_safely(config, task, progress, loaded))
            announce(outcomes[-1])
            tally.finished(task)
        return outcomes
    if config.backend == "dask":   # an existing scheduler, or a LocalCluster of --jobs processes
        from .cluster import run_tasks
        finished = run_tasks(config, tasks)
    else:
        threads = worker_threads(torch.get_num_threads(), config.jobs)
        run = (socket.gethostname(), os.getpid())
        # workers draw their bars only into a log (a terminal would interleave them; the tally says enough)
        bars = progress and not sys.stderr.isatty()
        finished = _parallel(config)(delayed(_worker)(config, task, threads, run, bars) for task in tasks)
    outcomes = []
    for outcome in finished:
        outcomes.append(outcome)
        announce(outcome)
        tally.finished(outcome["task"])
    return outcomes


class Tally:
    """``[tasks i/N]`` after each finished task, with the time so far and an estimate of the rest
    (from the methods' registered ``cost`` per seed: what is left, scaled by how long what is done took)."""

    def __init__(self, tasks: list[Task], enabled: bool):
        self.enabled, self.total, self.done = enabled, len(tasks), 0
        self.cost = {task: task_cost(task) for task in tasks}
        self.left, self.spent, self.start = sum(self.cost.values()), 0.0, time.perf_counter()

    def finished(self, task: Task) -> None:
        self.done += 1
        self.spent += self.cost.get(task, 0.0)
        self.left -= self.cost.get(task, 0.0)
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        rest = f", about {_duration(elapsed * self.left / self.spent)} left" if self.spent > 0 and self.left > 0 else ""
        print(f"[tasks {self.done}/{self.total}] {_duration(elapsed)} so far{rest}", file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def _parallel(config: BenchConfig) -> Parallel:
    """Outcomes as each task finishes; a backend that cannot yield them (ray's, multiprocessing) gives
    them all at the end — its workers still write every record as soon as it exists."""
    try:
        return Parallel(n_jobs=config.jobs, backend=config.backend, return_as="generator_unordered")
    except ValueError as error:
        if "does not support return_as" not in str(error):
            raise
        return Parallel(n_jobs=config.jobs, backend=config.backend, return_as="list")


def _worker(config: BenchConfig, task: Task, threads: int, run: tuple[str, int], bars: bool = False) -> dict[str, Any]:
    _exit_with_run(*run)
    configure(threads)
    return run_task_safely(config, task, progress=bars)


_WATCHING: list[int] = []


def _exit_with_run(host: str, run_pid: int) -> None:
    """A worker whose run (process ``run_pid`` on ``host``) died — ``kill -9`` — ends within a
    second instead of going on as an orphan (its finished records are already on disk; a rerun
    resumes).  A worker started as the run's child watches its parent id; one started otherwise
    (a ray worker, or a loky worker whose run died while it was still importing torch, already
    re-parented) watches the run's pid.  Nothing to watch inside the run itself (joblib's threading
    backend) or on another host."""
    if os.getpid() == run_pid or socket.gethostname() != host or _WATCHING:
        return
    child = os.getppid() == run_pid

    def gone() -> bool:
        if child:
            return os.getppid() != run_pid
        try:
            os.kill(run_pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:   # a live process of another user
            return False
        return False
    if gone():
        os._exit(1)
    _WATCHING.append(run_pid)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if gone():
                os._exit(1)
    threading.Thread(target=watch, name="dsvbench-parent-watch", daemon=True).start()
