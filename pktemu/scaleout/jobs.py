"""One scenario run as a pure task: a `Job` in, the output's bytes out (`Done`).

A job carries the loaded topology (it pickles), the scenario, the seed and the name of its output
folder; `run_job` builds the network from those alone, runs it into a private scratch folder,
reads every file back and removes the folder. It writes nothing the caller will see, so a Dask
worker that dies half-way loses nothing and the task can run again anywhere: only the client writes
the output (`pktemu.scaleout.write`). The same function runs in-process for serial runs, which is
why a run on workers and a serial run give the same bytes.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
from dataclasses import dataclass, field

from pktemu import timeline, topo
from pktemu.api.network import Network
from pktemu.errors import PktemuError
from pktemu.io.atomic import forget, make_temp_dir, remove_leftovers, remove_path
from pktemu.network import Drop

#: What a job keeps of the output: every file, or only its top-level JSON files (the results).
KEEP_ALL = "all"
KEEP_RESULTS = "results"


@dataclass(frozen=True)
class Job:
    """A scenario to run with a seed; `name` is its output folder (`s1-clusterip`, `seed-7`)."""
    scenario: str
    seed: int | None
    name: str
    keep: str = KEEP_ALL
    #: (path, sha256) of every file the network reads while it is built (rules files): a worker whose
    #: copy differs refuses to run rather than give other bytes
    files: tuple[tuple[str, str], ...] = ()


@dataclass
class Done:
    """What a job produced: its files (relative path -> bytes, sorted), its folders, and the
    figures `pktemu run` prints."""
    name: str
    files: dict[str, bytes]
    dirs: list[str]
    counts: dict[str, int] = field(default_factory=dict)
    drops: list[Drop] = field(default_factory=list)
    virtual_ns: int = 0
    events: int = 0
    warnings: list[str] = field(default_factory=list)


_hashes: dict[tuple[str, int, int], str] = {}


def input_files(t: topo.Topology) -> tuple[tuple[str, str], ...]:
    """The files a network of `t` reads when built, with their SHA-256 (on the client)."""
    paths = sorted({n.iptables for n in t.nodes.values() if n.iptables})
    return tuple((p, _sha256(p)) for p in paths)


def _sha256(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError as e:
        raise PktemuError(f"{path}: cannot read rules file: {e.strerror or e}") from None
    key = (path, st.st_mtime_ns, st.st_size)
    if key not in _hashes:
        h = hashlib.sha256()
        try:
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        except OSError as e:
            raise PktemuError(f"{path}: cannot read rules file: {e.strerror or e}") from None
        _hashes[key] = h.hexdigest()
    return _hashes[key]


def check_files(files: tuple[tuple[str, str], ...]) -> None:
    """Each file as the client saw it, or a one-line error (a worker without the same checkout)."""
    for path, digest in files:
        if _sha256(path) != digest:
            raise PktemuError(f"{path}: differs on this worker from the client's copy "
                              "(every worker needs the same files at the same paths)")


def scratch_root() -> str:
    """Where jobs run their output before reading it back: one folder per user, in /dev/shm where it
    can be written (a tmpfs: opening files there costs half as much as in most /tmp), else in the
    temp dir."""
    shm = "/dev/shm"
    base = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else tempfile.gettempdir()
    return os.path.join(base, f"pktemu-scaleout-{os.getuid()}")


def run_chunk(t: topo.Topology, jobs: list[Job]) -> tuple[list[Done], Exception | None]:
    """Several jobs as one task (a Dask task costs milliseconds of scheduling, a small job as much):
    their results up to the first that failed, and its error, so the client writes what a serial
    run would have written before failing the same way."""
    done: list[Done] = []
    for job in jobs:
        try:
            done.append(run_job(t, job))
        except Exception as e:
            return done, e
    return done, None


def run_job(t: topo.Topology, job: Job) -> Done:
    """Run `job` and return its output as bytes; nothing is left on disk (see the module doc)."""
    check_files(job.files)
    timeline.load_builtin()     # registered as a topology is parsed; this process may have only unpickled it
    root = scratch_root()
    os.makedirs(root, exist_ok=True)
    remove_leftovers(root)                  # what killed workers left
    scratch = make_temp_dir(root, "job")
    said = io.StringIO()
    try:
        # what the run says on stderr (a python app's crash) goes back with the files: a worker's
        # stderr is its log, not the user's terminal, and the client prints it in job order
        with contextlib.redirect_stderr(said), \
                Network(t, job.scenario, job.seed, capture=scratch, keep_frames=False) as net:
            events = net.run()
            path = net.write()
        files, dirs = _read_tree(path, job.keep)
        warnings = said.getvalue().splitlines() + net.warnings()
        return Done(job.name, files, dirs, net.frames, list(net.engine.drops), net.engine.sim.now, events,
                    warnings)
    finally:
        remove_path(scratch)
        forget(scratch)


def _read_tree(top: str, keep: str) -> tuple[dict[str, bytes], list[str]]:
    files: dict[str, bytes] = {}
    dirs: list[str] = []
    for here, _subdirs, names in os.walk(top):
        rel = os.path.relpath(here, top)
        if rel != "." and keep == KEEP_ALL:
            dirs.append(rel)
        for n in names:
            if keep == KEEP_RESULTS and (rel != "." or not n.endswith(".json")):
                continue
            p = os.path.join(here, n)
            with open(p, "rb") as f:
                files[os.path.normpath(os.path.join(rel, n))] = f.read()
    return dict(sorted(files.items())), sorted(dirs)
