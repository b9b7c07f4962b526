"""Where jobs run: in this process one after another, or on a Dask cluster (local or remote).

`run_jobs` yields each job's `Done` in the order of the jobs, never in the order they finish, so
whatever writes them writes the same thing in the same order either way. On Dask, each job is a
task whose only input is the topology (itself a task, so a worker that dies and takes it along can
compute it again) and the job; the scheduler reruns the tasks of a worker that dies.
"""
from __future__ import annotations

import asyncio
import logging
import pickle
import secrets
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from pktemu import interrupt, topo
from pktemu.errors import PktemuError, excerpt, shorten
from pktemu.scaleout.jobs import Done, Job, run_chunk, run_job
from pktemu.version import version

#: How long a `--scheduler` may take to answer before the command gives up (seconds).
CONNECT_TIMEOUT = 5
MAX_WORKERS = 256
CHUNK_MAX = 8
INSTALL_HINT = "pip install 'pktemu[dask]'"


def check_options(workers: int | None, scheduler: str | None) -> None:
    """One-line errors for `--workers`/`--scheduler` before anything runs."""
    if workers is not None and scheduler is not None:
        raise PktemuError("--workers and --scheduler: give one (--scheduler uses the cluster's workers)")
    if workers is not None and not 1 <= workers <= MAX_WORKERS:
        raise PktemuError(f"--workers {workers}: expected 1 to {MAX_WORKERS}")
    if scheduler is not None and not scheduler.strip():
        raise PktemuError("--scheduler: an empty address (expected tcp://HOST:PORT)")
    if workers is not None or scheduler is not None:
        _distributed()


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise PktemuError(f"--workers/--scheduler need Dask, which is not installed: {INSTALL_HINT}") \
            from None
    return distributed


@contextmanager
def dask_client(workers: int | None, scheduler: str | None) -> Iterator[Any]:
    """A Dask client on a new local cluster of `workers` processes (one thread each), or on the
    cluster at `scheduler`; closed (and the local cluster shut down) however the block ends."""
    distributed = _distributed()
    _quiet_logs()
    if scheduler is not None:
        _probe_scheduler(scheduler)         # outside any shield: Ctrl-C stops a probe that waits
    cluster = None
    client = None
    try:
        # a signal while Dask starts is held until it has (a half-started cluster cannot be closed)
        with interrupt.shielded():
            if scheduler is not None:
                try:
                    client = distributed.Client(scheduler, timeout=CONNECT_TIMEOUT, set_as_default=False)
                except (OSError, ValueError, TypeError) as e:
                    raise PktemuError(f"--scheduler {excerpt(scheduler)}: cannot connect: {e}") from None
            else:
                cluster = _local_cluster(distributed, workers)
                client = distributed.Client(cluster, set_as_default=False)
        if scheduler is not None:
            _check_workers(client)          # outside the shield: Ctrl-C stops a worker that never answers
        yield client
    finally:
        if client is not None:
            _quietly(client.close)
        if cluster is not None:
            _quietly(cluster.close)


def _quiet_logs() -> None:
    """Dask's and tornado's loggers at CRITICAL: workers dying or the scheduler going away are
    handled (one line), not news. Dask's logging config gives some children their own level
    (`distributed.client` at WARNING logged a lost scheduler's traceback), so each is set."""
    roots = ("distributed", "tornado", "asyncio", "bokeh")
    names = [n for n in logging.root.manager.loggerDict if n.split(".", 1)[0] in roots]
    for name in (*roots, *names):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _probe_scheduler(scheduler: str) -> None:
    """One-line error unless a Dask scheduler answers at `scheduler` within CONNECT_TIMEOUT.

    Dask's Client waits for ever for the handshake of a server that accepts and never answers (an
    HTTP server), holding Ctrl-C off; reads a server's other bytes as a frame length (MemoryError);
    and, given an address it cannot parse, leaves a half-made Client whose `__del__` prints a
    traceback 10 s later. So the address is tried first, in a thread this process need not wait for.
    """
    from distributed.comm import connect
    from distributed.security import Security

    where = f"--scheduler {excerpt(scheduler)}: cannot connect"
    outcome: list[BaseException | None] = []

    async def hello() -> None:
        # the TLS settings of Dask's config, as the Client uses them (a tls:// scheduler)
        args = Security().get_connection_args("client")
        comm = await connect(scheduler, timeout=CONNECT_TIMEOUT, **args)
        await comm.close()

    def attempt() -> None:
        try:
            asyncio.run(asyncio.wait_for(hello(), CONNECT_TIMEOUT + 1))
            outcome.append(None)
        except BaseException as e:          # handed to the main thread, which words it
            outcome.append(e)

    probe = threading.Thread(target=attempt, name="pktemu-scheduler-probe", daemon=True)
    probe.start()
    probe.join(CONNECT_TIMEOUT + 2)
    if not outcome:
        raise PktemuError(f"{where}: no Dask scheduler answered within {CONNECT_TIMEOUT} s")
    e = outcome[0]
    if e is None:
        return
    if isinstance(e, (asyncio.TimeoutError, TimeoutError)):
        raise PktemuError(f"{where}: no Dask scheduler answered within {CONNECT_TIMEOUT} s")
    if isinstance(e, (OSError, ValueError, TypeError)):
        raise PktemuError(f"{where}: {shorten(str(e) or type(e).__name__, 200)}")
    raise PktemuError(f"{where}: what answered there is not a Dask scheduler")


#: what a worker evaluates to say which pktemu it has (`eval`, pickled by name, needs nothing of
#: pktemu to reach the worker)
_PROBE = "__import__('pktemu.version').version.version()"


def _check_workers(client: Any) -> None:
    """Every worker of the cluster imports pktemu, the version this one is. A worker that cannot
    unpickle a task drops it without a word, and the run would wait for it for ever."""
    ours = version()
    try:
        answers = client.run(eval, _PROBE, on_error="return")
    except OSError as e:                    # CommClosedError: the scheduler went while they answered
        raise PktemuError(f"lost the Dask scheduler while asking its workers which pktemu they have "
                          f"({type(e).__name__})") from None
    for worker, theirs in sorted(answers.items()):
        if isinstance(theirs, BaseException):
            raise PktemuError(f"Dask worker {worker} cannot import pktemu ({type(theirs).__name__}: "
                              f"{shorten(str(theirs), 100)}): install it there, the same version as here")
        if theirs != ours:
            raise PktemuError(f"Dask worker {worker} has pktemu {excerpt(theirs)}, this is {ours}: "
                              "install the same version on every machine")


def _local_cluster(distributed: Any, workers: int | None) -> Any:
    """A LocalCluster of `workers` processes on the loopback, each of which ignores the terminal's
    Ctrl-C and hangup once started (`pktemu.scaleout.workerinit`): this process acts on them and
    shuts the cluster down, instead of every worker printing its traceback."""
    return distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                    host="127.0.0.1", dashboard_address=None, scheduler_port=0,
                                    # its health/metrics server on a free loopback port: the default,
                                    # 8787, taken, made the scheduler warn on stderr
                                    scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                                    silence_logs=logging.CRITICAL, preload=["pktemu.scaleout.workerinit"])


def _quietly(close: Any) -> None:
    try:
        close()
    except Exception:
        pass


def _load_topology(blob: bytes) -> topo.Topology:
    t = pickle.loads(blob)
    assert isinstance(t, topo.Topology)
    return t


def chunk_size(jobs: int, workers: int) -> int:
    """Jobs per task: about eight tasks per worker (so a slow or dead worker holds little back),
    at most CHUNK_MAX jobs each."""
    return max(1, min(CHUNK_MAX, jobs // max(1, workers * 8)))


def run_jobs(t: topo.Topology, jobs: Sequence[Job], client: Any = None) -> Iterator[Done]:
    """Each job's result in the order of `jobs`: run here, or as tasks of Dask `client`."""
    if client is None:
        for job in jobs:
            yield run_job(t, job)
        return
    distributed = _distributed()
    token = secrets.token_hex(6)             # keys of this run only, on a scheduler shared by others
    blob = pickle.dumps(t, protocol=pickle.HIGHEST_PROTOCOL)
    tfut = client.submit(_load_topology, blob, key=f"pktemu-topology-{token}", pure=False)
    size = chunk_size(len(jobs), len(client.scheduler_info().get("workers", {})))
    chunks = [list(jobs[k:k + size]) for k in range(0, len(jobs), size)]
    futures = [client.submit(run_chunk, tfut, chunk, key=f"pktemu-{token}-{k}-{chunk[0].name}", pure=False)
               for k, chunk in enumerate(chunks)]
    done = 0
    try:
        for chunk, fut in zip(chunks, futures, strict=True):
            try:
                results, error = fut.result()
            except distributed.KilledWorker:
                raise PktemuError(f"{chunk[0].name}: the Dask workers running it died "
                                  "(each try killed its worker; see the workers' logs)") from None
            except (distributed.client.FutureCancelledError, distributed.CancelledError):
                raise PktemuError(f"{chunk[0].name}: the Dask scheduler cancelled the task "
                                  "(did it stop or restart?)") from None
            except OSError as e:            # CommClosedError: the scheduler went while results came
                raise PktemuError(f"{chunk[0].name}: lost the Dask scheduler while fetching the "
                                  f"results ({type(e).__name__})") from None
            except RuntimeError as e:
                if "deserialization of the task graph" not in str(e):
                    raise
                # Dask's scheduler unpickles the tasks (since 2024.x): it imports pktemu as well
                raise PktemuError("the Dask scheduler cannot read pktemu's tasks: install pktemu on "
                                  "the scheduler's machine too, the same version as here and on the "
                                  "workers (see its log)") from None
            fut.release()
            done += 1
            yield from results
            if error is not None:
                raise error
    finally:
        if done < len(futures):
            _quietly(lambda: client.cancel(futures[done:] + [tfut]))
        _quietly(tfut.release)
