"""``--backend dask``: the run's tasks on a ``dask.distributed`` cluster.

With ``--scheduler ADDRESS`` the tasks go to the workers of an existing scheduler; without it
the run starts a ``LocalCluster`` of ``--jobs`` worker processes (one thread each) and closes it
at the end.  Workers read the same cache and write their records to the same ``--out`` — a
filesystem every worker sees at the same path — atomically, one file per record, exactly as the
loky workers do; a rerun skips every record on disk.  A worker that dies mid-task (killed, out of
memory, its node lost) loses only that unfinished task: the scheduler runs it again on another
worker (up to ``distributed.scheduler.allowed-failures`` times), then reports it failed.

GPU workers: one worker per GPU, one thread each (``dask cuda worker ADDRESS``, or
``CUDA_VISIBLE_DEVICES=i dask worker ADDRESS --nworkers 1 --nthreads 1`` per GPU);
:func:`check_scheduler` refuses a cluster that would put two tasks on one GPU.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from .process import usable_cores, worker_threads
from .registry import UserError, first_line

if TYPE_CHECKING:
    from .config import BenchConfig
    from .plan import Task

CONNECT_TIMEOUT = 3   # seconds: an unreachable --scheduler is one line and exit 2, not a 30 s wait


def check_scheduler(address: str, device: str) -> int:
    """Connect to the scheduler at ``address`` and check its workers before any work starts;
    returns their total thread count (the default ``--jobs`` on CPU)."""
    from distributed import Client
    try:
        _probe_dask(address, CONNECT_TIMEOUT)
        client = _within(lambda: Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False),
                         CONNECT_TIMEOUT + 2, "no answer in the dask protocol")
    except Exception as error:  # noqa: BLE001 - OSError (refused, timed out), ValueError (bad address), ...
        reason = first_line(error)
        raise UserError(f"--scheduler {address}: no dask scheduler reachable there ({reason}); start one with "
                        "`dask scheduler` and give the address it prints (tcp://HOST:8786)") from None
    try:
        workers = _within(lambda: client.scheduler_info()["workers"], CONNECT_TIMEOUT + 2,
                          "the scheduler did not answer")
        if not workers:
            raise UserError(f"--scheduler {address}: the scheduler has no workers yet; start them with "
                            f"`dask worker {address} --nworkers 1 --nthreads 1` on each node, then run again")
        if device.startswith("cuda"):
            _check_one_task_per_gpu(address, workers, client.run(_visible_gpu))
        return sum(worker["nthreads"] for worker in workers.values())
    finally:
        client.close()


def _probe_dask(address: str, seconds: float) -> None:
    """For ``tcp://HOST:PORT``: connect and read the first bytes the server sends.  A dask scheduler
    sends its handshake at once (a frame count, a small little-endian integer); a server of another
    protocol (an HTTP server, say) sends nothing until asked, or something else.  Raises OSError
    naming which, before a dask client is made (a client to such a server hangs, and so does its exit)."""
    import socket
    import struct
    if not address.startswith("tcp://"):
        return
    host, _, port = address[len("tcp://"):].rpartition(":")
    with socket.create_connection((host.strip("[]"), int(port)), timeout=seconds) as sock:
        sock.settimeout(seconds)
        try:
            head = sock.recv(8)
        except socket.timeout:
            raise OSError(f"the server at {address} accepted the connection but sent no dask handshake "
                          f"within {seconds:g} s (another protocol?)") from None
    if len(head) < 8 or not 1 <= struct.unpack("<Q", head)[0] <= 64:
        raise OSError(f"the server at {address} does not speak dask's protocol (first bytes {head[:8]!r})")


def _within(call: Any, seconds: float, what: str) -> Any:
    """``call()`` on a daemon thread, or TimeoutError after ``seconds``: a server that accepts the
    connection but never speaks dask's protocol (an HTTP server, say) must not hang the run (the
    stuck thread is a daemon, so it does not hold the exit either)."""
    import threading
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
            outcome["error"] = error
    thread = threading.Thread(target=target, daemon=True, name="dsvbench-connect")
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(f"{what} within {seconds:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _check_one_task_per_gpu(address: str, workers: dict[str, Any], gpus: dict[str, str]) -> None:
    """Two tasks on one GPU slow each other more than they gain: one worker per GPU, one thread each."""
    crowded = [addr for addr, worker in workers.items() if worker["nthreads"] > 1]
    if crowded:
        raise UserError(f"--scheduler {address} --device cuda: worker {crowded[0]} runs "
                        f"{workers[crowded[0]]['nthreads']} tasks at once on its GPU; start GPU workers with "
                        "--nthreads 1 (one worker per GPU: `dask cuda worker` or CUDA_VISIBLE_DEVICES=i)")
    seen: dict[tuple[str, str], str] = {}
    for addr, worker in workers.items():
        where = (worker["host"], gpus.get(addr, "0"))
        if where in seen:
            raise UserError(f"--scheduler {address} --device cuda: workers {seen[where]} and {addr} share GPU "
                            f"{where[1]} of {where[0]}; give each worker its own GPU (`dask cuda worker`, or "
                            "CUDA_VISIBLE_DEVICES=i per worker)")
        seen[where] = addr


def _visible_gpu() -> str:
    """The GPU a worker's ``cuda`` device is: the first of its CUDA_VISIBLE_DEVICES (0 when unset)."""
    return (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0].strip()


@contextmanager
def dask_client(config: BenchConfig) -> Iterator[Any]:
    """A client of ``config.scheduler``, or of a LocalCluster of ``config.jobs`` processes made for the run."""
    from distributed import Client, LocalCluster
    if config.scheduler:
        client = _started(lambda: Client(config.scheduler, timeout=CONNECT_TIMEOUT, set_as_default=False),
                          f"--scheduler {config.scheduler}: lost the scheduler")
        with client:
            yield client
        return
    # no dashboard (no fixed port to collide on), no memory cap: a worker is a plain process, as with loky
    cluster = _started(lambda: LocalCluster(n_workers=config.jobs, threads_per_worker=1, processes=True,
                                            dashboard_address=None, memory_limit=0),
                       f"--backend dask: the LocalCluster of {config.jobs} worker processes did not start")
    with cluster, Client(cluster, set_as_default=False) as client:
        yield client


def _started(start: Any, what: str) -> Any:
    """``start()``, or one line saying what did not start and why (finished records stay; rerun resumes)."""
    try:
        return start()
    except Exception as error:  # noqa: BLE001 - whatever dask raised, said in one line
        reason = first_line(error)
        raise UserError(f"{what} ({reason}); run the same command again to resume") from None


def run_tasks(config: BenchConfig, tasks: list[Task]) -> Iterator[dict[str, Any]]:
    """One outcome per task ({task, records, error}) as each finishes on the cluster."""
    from distributed import as_completed
    import torch
    with dask_client(config) as client:
        if config.scheduler:
            threads: int | dict[str, int] = _threads_per_worker(client)
        else:   # the loky rule, so a LocalCluster's records are bit-for-bit a loky run's
            threads = worker_threads(torch.get_num_threads(), config.jobs)
        shared = _absolute_paths(config)
        futures = {client.submit(_run_on_worker, shared, task, threads, pure=False): task for task in tasks}
        for future in as_completed(futures, loop=client.loop):
            try:
                yield future.result()
            except Exception as error:  # noqa: BLE001 - the task's worker died too often (KilledWorker), ...
                yield _lost(config, futures[future], error)


def _threads_per_worker(client: Any) -> dict[str, int]:
    """Torch threads per worker of an existing cluster: its host's usable cores shared among the worker
    threads on that host (dask's nanny sets OMP_NUM_THREADS=1, which would leave cores idle)."""
    workers = client.scheduler_info()["workers"]
    cores = client.run(usable_cores)
    on_host: dict[str, int] = {}
    for worker in workers.values():
        on_host[worker["host"]] = on_host.get(worker["host"], 0) + worker["nthreads"]
    return {addr: max(1, cores.get(addr, 1) // on_host[worker["host"]]) for addr, worker in workers.items()}


def _absolute_paths(config: BenchConfig) -> BenchConfig:
    """``--out``, ``--cache-dir`` and ``--data-root`` as absolute paths: a remote worker's working
    directory is not the command's (keys do not change: they never hold these paths)."""
    def absolute(path: str) -> str:
        return str(Path(path).expanduser().absolute())
    return replace(config, out=absolute(config.out), cache_dir=absolute(config.cache_dir),
                   data=replace(config.data, root=absolute(config.data.root)))


def _run_on_worker(config: BenchConfig, task: Task, threads: int | dict[str, int]) -> dict[str, Any]:
    """A task on a dask worker.  No parent watch here (:func:`.dispatch._exit_with_run`): a dask
    worker's parent is its nanny, which already ends the worker when it dies, and a worker started
    with ``--no-nanny`` from a shell that later exits must not end with it."""
    from distributed import get_worker

    from .process import configure
    from .tasks import run_task_safely
    if isinstance(threads, dict):
        worker = get_worker()
        threads = threads.get(worker.address, max(1, usable_cores() // worker.state.nthreads))
    configure(threads)
    return run_task_safely(config, task, progress=False)


def _lost(config: BenchConfig, task: Task, error: BaseException) -> dict[str, Any]:
    """The outcome of a task the cluster could not finish: a failure record per seed, as for a task
    that raised, so the rerun redoes exactly it."""
    from .tasks import write_failures
    message = first_line(error, with_type=True)
    return {"task": task, "records": [], "error": write_failures(Path(config.out), task, message, "")}
