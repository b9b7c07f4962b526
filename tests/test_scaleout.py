"""`pktemu run` and `pktemu sweep` on Dask: a LocalCluster (`--workers 2`) and a `dask scheduler` with
two `dask worker` processes on localhost (`--scheduler`) give the same bytes as the serial run, also
when a worker is killed mid-run; an interrupted run stops its cluster and leaves no temporary."""
from __future__ import annotations

import json
import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

import datapaths
from conftest import pktemu
from pktemu.errors import PktemuError
from pktemu.io.topofile import load_topology
from pktemu.scaleout.executor import dask_client, run_jobs
from pktemu.scaleout.jobs import KEEP_RESULTS, Job, input_files
from test_signals import handlers_installed
from test_sweep import tree

SWEEP = ("sweep", "topologies/service-test.yaml", "--scenario", "s2-noendpoints", "--seeds", "1-200")
RUN = ("run", "topologies/service-test.yaml")
#: Kubernetes objects and a timeline (kube-proxy syncs, `apply`): registries a worker must fill itself
K8S = ("sweep", "topologies/generated-cluster.yaml", "--seeds", "1-16")


def normalized(stdout: str, out: Path) -> str:
    return stdout.replace(str(out), "OUT")


@pytest.fixture(scope="module")
def serial(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict[str, bytes], str]]:
    """The 4-scenario run and the 200-seed sweep, serially: every file's bytes and stdout."""
    top = tmp_path_factory.mktemp("serial")
    runs = {}
    for name, args in (("run", RUN), ("sweep", SWEEP), ("k8s", K8S)):
        out = top / name
        p = pktemu(*args, "--out", str(out), "-o", "json")
        runs[name] = (tree(out), normalized(p.stdout, out))
    return runs


def test_topologies_pickle_to_equal_objects() -> None:
    """What a Dask task receives: the loaded topology, pickled."""
    for name in sorted(os.listdir("topologies")):
        if name.endswith(".yaml"):
            t = load_topology(f"topologies/{name}")
            assert pickle.loads(pickle.dumps(t)) == t, name


def test_local_cluster_gives_the_serial_bytes(tmp_path: Path,
                                              serial: dict[str, tuple[dict[str, bytes], str]]) -> None:
    for name, args in (("run", RUN), ("sweep", SWEEP), ("k8s", K8S)):
        out = tmp_path / name
        p = pktemu(*args, "--out", str(out), "-o", "json", "--workers", "2", timeout=120)
        assert p.stderr == ""
        files, stdout = serial[name]
        assert sorted(tree(out)) == sorted(files)
        assert tree(out) == files, name
        assert normalized(p.stdout, out) == stdout
    assert len(serial["sweep"][0]) == 1 + 200 + 200 * 3      # sweep.json, seed-N/, its 3 JSON files


def test_a_taken_dashboard_port_is_no_warning(tmp_path: Path,
                                              serial: dict[str, tuple[dict[str, bytes], str]]) -> None:
    """Dask's scheduler serves HTTP on 8787 by default and warns on stderr when that is taken (by a
    dashboard of the user's, another run): `--workers` must say nothing of it."""
    with socket.socket() as held:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            held.bind(("127.0.0.1", 8787))
            held.listen()
        except OSError:
            pass                    # taken already: the case itself
        out = tmp_path / "run"
        p = pktemu(*RUN, "--out", str(out), "-o", "json", "--workers", "2", timeout=120)
    assert p.returncode == 0 and p.stderr == ""
    assert tree(out) == serial["run"][0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def this_checkout() -> dict[str, str]:
    """The environment for a `dask` process: it imports this checkout's pktemu, not an installed one."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(datapaths.ROOT),
                                                                      os.environ.get("PYTHONPATH"))))}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[str, list[subprocess.Popen[bytes]], Path]]:
    """`dask scheduler` and two `dask worker --nthreads 1 --no-nanny` on localhost, stopped at the end."""
    import distributed

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = [sys.executable, "-m", "dask"]
    log = open(tmp_path / "dask.log", "wb")  # noqa: SIM115 (closed below)
    env = this_checkout()
    procs = [subprocess.Popen([*dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], stdout=log, stderr=log, env=env)]
    try:
        for k in range(2):
            procs.append(subprocess.Popen([*dask, "worker", address, "--nthreads", "1", "--no-nanny",
                                           "--host", "127.0.0.1", "--no-dashboard", "--name", f"w{k}"],
                                          stdout=log, stderr=log, cwd=tmp_path, env=env))
        with distributed.Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
        yield address, procs[1:], tmp_path / "dask.log"
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=30)
        log.close()


def _is_job(key: object) -> bool:
    return str(key).startswith("pktemu-") and not str(key).startswith("pktemu-topology-")


def wait_until_worker_has_work(address: str, name: str, proc: subprocess.Popen[bytes]) -> str | None:
    """Until worker `name` runs a pktemu task or holds a finished one the client has not fetched yet
    (the scheduler's processing and has_what): killing it then loses work that must be rerun
    elsewhere. Returns the worker's address (None if the sweep ended first)."""
    import distributed

    with distributed.Client(address, timeout=60) as client:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            addr = [a for a, w in client.scheduler_info()["workers"].items() if w.get("name") == name]
            if addr:
                busy = [*client.processing(addr).values(), *client.has_what(addr).values()]
                if any(_is_job(k) for keys in busy for k in keys):
                    return addr[0]
            time.sleep(0.005)
    return None


def lost_work(address: str, worker: str) -> set[str]:
    """The pktemu tasks the scheduler had to run again when it removed `worker`: those it was running
    and those it held finished (the scheduler's own remove-worker event)."""
    import distributed

    with distributed.Client(address, timeout=60) as client:
        events = [msg for _, msg in client.get_events(worker)
                  if isinstance(msg, dict) and msg.get("action") == "remove-worker"]
    return {str(k) for msg in events for k in (*msg["processing-tasks"], *msg["lost-computed-tasks"])
            if _is_job(k)}


def test_dask_scheduler_and_workers_survive_a_killed_worker(
        tmp_path: Path, cluster: tuple[str, list[subprocess.Popen[bytes]], Path],
        serial: dict[str, tuple[dict[str, bytes], str]]) -> None:
    address, workers, log = cluster
    out = tmp_path / "run"
    p = pktemu(*RUN, "--out", str(out), "-o", "json", "--scheduler", address, timeout=120)
    assert p.stderr == "" and tree(out) == serial["run"][0]
    assert normalized(p.stdout, out) == serial["run"][1]

    out = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, "-m", "pktemu.cli", *SWEEP, "--out", str(out), "-o", "json",
                             "--scheduler", address], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    w0 = wait_until_worker_has_work(address, "w0", proc)
    still_running = proc.poll() is None
    workers[0].send_signal(signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=120)
    assert still_running and w0 is not None, "the sweep ended before w0 had work: nothing was tested"
    assert workers[0].wait(timeout=10) == -signal.SIGKILL
    assert proc.returncode == 0, stderr
    assert re.search(r"Remove worker.*name: w0", log.read_text()), log.read_text()[-3000:]
    # w0 died with work the sweep still needed; the sweep finished with every byte the serial run
    # wrote, so that work was done again on w1, and nothing was written twice or half
    rerun = lost_work(address, w0)
    assert rerun, "the scheduler removed w0 with no pktemu task running or held: nothing was rerun"
    assert tree(out) == serial["sweep"][0]
    assert normalized(stdout.decode(), out) == serial["sweep"][1]


@contextmanager
def one_worker(tmp_path: Path, scheduler_prelude: str = "pass",
               worker_prelude: str = "pass") -> Iterator[str]:
    """A `dask scheduler` with one `dask worker`, each started after its prelude (Python: what
    breaks its pktemu); yields the scheduler's address. The log is tmp_path/dask.log."""
    import distributed

    def dask(prelude: str, *args: str) -> list[str]:
        start = f"import sys; {prelude}; sys.argv[0] = 'dask'; from dask.__main__ import main; main()"
        return [sys.executable, "-c", start, *args, "--host", "127.0.0.1", "--no-dashboard"]

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    log = open(tmp_path / "dask.log", "wb")  # noqa: SIM115 (closed below)
    # this checkout's pktemu, not whichever one is installed
    env = this_checkout()
    procs = [subprocess.Popen(dask(scheduler_prelude, "scheduler", "--port", str(port)),
                              stdout=log, stderr=log, cwd=tmp_path, env=env)]
    try:
        procs.append(subprocess.Popen(dask(worker_prelude, "worker", address, "--nthreads", "1",
                                           "--no-nanny"), stdout=log, stderr=log, cwd=tmp_path, env=env))
        with distributed.Client(address, timeout=60) as client:
            client.wait_for_workers(1, timeout=60)
        yield address
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=30)
        log.close()


def run_on_one_worker(tmp_path: Path, scheduler_prelude: str = "pass", worker_prelude: str = "pass") -> \
        subprocess.CompletedProcess[str]:
    """`pktemu run --scheduler` on `one_worker`."""
    with one_worker(tmp_path, scheduler_prelude, worker_prelude) as address:
        return pktemu(*RUN, "--out", str(tmp_path / "run"), "--scheduler", address, check=False, timeout=120)


def test_ctrl_c_stops_a_run_whose_worker_never_answers(tmp_path: Path) -> None:
    """The check of the workers is outside the start-up's shield: a worker that never answers it
    (here it sleeps) does not make `pktemu` deaf to Ctrl-C."""
    stuck = "import pktemu.version, time; pktemu.version.version = lambda: time.sleep(3600)"
    with one_worker(tmp_path, worker_prelude=stuck) as address:
        proc = subprocess.Popen([sys.executable, "-m", "pktemu.cli", *RUN, "--out", str(tmp_path / "run"),
                                 "--scheduler", address], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        try:
            # until pktemu's Client is connected (the scheduler logs it, after one_worker's own), not
            # a fixed 2 s: a loaded machine may take longer to import pktemu and Dask, and the
            # Ctrl-C then came before the question to the worker, which never answers
            log = tmp_path / "dask.log"
            deadline = time.monotonic() + 60
            while log.read_text().count("Receive client connection") < 2 and time.monotonic() < deadline:
                assert proc.poll() is None
                time.sleep(0.05)
            assert handlers_installed(proc.pid)
            time.sleep(1)
            assert proc.poll() is None
            proc.send_signal(signal.SIGINT)
            _out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == 130, err
    assert err.splitlines()[-1] == "pktemu: interrupted (SIGINT)"
    assert not (tmp_path / "run").exists()


def test_a_scheduler_without_pktemu_is_one_line(tmp_path: Path) -> None:
    """Dask's scheduler unpickles the tasks, so it needs pktemu too: without it, one line and exit 2."""
    p = run_on_one_worker(tmp_path, scheduler_prelude="sys.modules['pktemu'] = None")
    assert p.returncode == 2, p.stderr
    assert p.stderr == ("pktemu: error: the Dask scheduler cannot read pktemu's tasks: install pktemu on "
                        "the scheduler's machine too, the same version as here and on the workers "
                        "(see its log)\n")
    assert "ModuleNotFoundError: No module named 'pktemu" in (tmp_path / "dask.log").read_text()
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("worker, said", [
    ("sys.modules['pktemu'] = None",
     r"Dask worker tcp://127\.0\.0\.1:\d+ cannot import pktemu \(ModuleNotFoundError: No module named "
     r"'pktemu\.version'; 'pktemu' is not a package\): install it there, the same version as here"),
    ("import pktemu.version; pktemu.version.version = lambda: '0.0.1-other'",
     r"Dask worker tcp://127\.0\.0\.1:\d+ has pktemu '0\.0\.1-other', this is \S+: install the same "
     r"version on every machine"),
])
def test_a_worker_without_this_pktemu_is_one_line(tmp_path: Path, worker: str, said: str) -> None:
    """A worker that cannot unpickle a task drops it without a word: `--scheduler` asks every worker
    which pktemu it has first, and a missing or other one is one line, exit 2, not a run that waits."""
    p = run_on_one_worker(tmp_path, worker_prelude=worker)
    assert p.returncode == 2, p.stderr
    assert re.fullmatch(f"pktemu: error: {said}\\n", p.stderr), p.stderr
    assert not (tmp_path / "run").exists()


def test_an_error_in_a_worker_comes_back_as_its_one_line(tmp_path: Path) -> None:
    t = load_topology("topologies/service-test.yaml")
    (path, _digest), = input_files(t)
    bad = Job("s1-clusterip", 1, "seed-1", KEEP_RESULTS, ((path, "0" * 64),))
    good = Job("s1-clusterip", 1, "seed-1", KEEP_RESULTS, input_files(t))
    with dask_client(1, None) as client:
        assert [d.name for d in run_jobs(t, [good], client)] == ["seed-1"]
        with pytest.raises(PktemuError) as e:
            list(run_jobs(t, [good, bad], client))
    assert str(e.value) == f"{path}: differs on this worker from the client's copy (every worker needs the " \
        "same files at the same paths)"


def test_sigint_stops_the_cluster_and_leaves_no_temporary(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, "-m", "pktemu.cli", "sweep", "topologies/service-test.yaml",
                             "--scenario", "s1-clusterip", "--seeds", "1-5000", "--out", str(out),
                             "--captures", "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not (out / "seed-2").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    children = psutil.Process(proc.pid).children(recursive=True)
    assert children, "no worker processes"
    proc.send_signal(signal.SIGINT)
    _stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert stderr.decode().splitlines()[-1] == "pktemu: interrupted (SIGINT)"
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert alive == []
    names = os.listdir(out)
    assert names and all(n.startswith("seed-") for n in names), names   # no hidden temporaries
    assert "sweep.json" not in names
    for n in names:
        assert json.loads((out / n / "server-result.json").read_bytes())   # whole folders only


def test_a_scheduler_that_goes_away_mid_sweep_is_one_line(tmp_path: Path) -> None:
    """Dask's `distributed.client` logger (its own level, WARNING) printed the lost connection's
    traceback before pktemu's line."""
    import distributed

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = [sys.executable, "-m", "dask"]
    log = open(tmp_path / "dask.log", "wb")  # noqa: SIM115 (closed below)
    scheduler = subprocess.Popen([*dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                  "--no-dashboard"], stdout=log, stderr=log, env=this_checkout())
    worker = subprocess.Popen([*dask, "worker", address, "--nthreads", "1", "--no-nanny", "--host",
                               "127.0.0.1", "--no-dashboard"], stdout=log, stderr=log, cwd=tmp_path,
                              env=this_checkout())
    out = tmp_path / "sweep"
    try:
        with distributed.Client(address, timeout=60) as client:
            client.wait_for_workers(1, timeout=60)
        proc = subprocess.Popen([sys.executable, "-m", "pktemu.cli", *SWEEP, "--out", str(out), "-o", "json",
                                 "--scheduler", address], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        deadline = time.monotonic() + 60
        while not (out / "seed-1").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, "the sweep ended before the scheduler went: nothing was tested"
        scheduler.kill()
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        for p in (scheduler, worker):
            p.kill()
            p.wait(timeout=30)
        log.close()
    assert (proc.returncode, stdout) == (2, ""), stderr
    assert re.fullmatch(r"pktemu: error: seed-\d+: [^\n]*\n", stderr), stderr
    names = os.listdir(out)
    assert names and all(n.startswith("seed-") for n in names), names   # no temporaries, no sweep.json


def test_a_python_apps_warnings_come_back_from_the_workers(tmp_path: Path) -> None:
    """A crashing python app's one-line warning went to the remote worker's log: the user saw it
    serially and not with --scheduler. Now every seed's lines come back, in seed order."""
    (tmp_path / "crashapp.py").write_text(
        "def crash(api):\n    s = yield api.connect(('10.0.2.2', 8080))\n"
        "    raise ValueError('port %s' % s.getsockname()[1])\n")     # an ephemeral port: the seed's
    (tmp_path / "apps.yaml").write_text(
        f"extends: {datapaths.ROOT / 'topologies/service-test.yaml'}\nname: apps\nscenarios:\n"
        "  crash:\n    traffic:\n"
        "      - {at: 0ms, pod: client, app: {kind: python, entry: 'crashapp:crash'}}\n")
    args = ("sweep", str(tmp_path / "apps.yaml"), "--scenario", "crash", "--seeds", "1-6", "-o", "json")
    serial = pktemu(*args)
    lines = serial.stderr.splitlines()
    assert len(lines) == 6 and len(set(lines)) > 1, lines       # one per seed, seed-dependent
    assert all(ln.startswith("pktemu: warning: client: python app crashapp:crash: ValueError: port ")
               for ln in lines), lines
    with one_worker(tmp_path) as address:
        remote = pktemu(*args, "--scheduler", address, timeout=120)
    assert (remote.stdout, remote.stderr) == (serial.stdout, serial.stderr)


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A key and a self-signed certificate for 127.0.0.1 (PEM files)."""
    crypto = pytest.importorskip("cryptography")
    del crypto
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_pem, cert_pem = tmp_path / "key.pem", tmp_path / "cert.pem"
    key_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_pem, cert_pem


def test_a_tls_scheduler_is_reached_with_dasks_tls_settings(tmp_path: Path) -> None:
    """The check that a scheduler answers uses the TLS settings of Dask's config, as Dask's Client
    does: without them a tls:// scheduler was refused ("TLS expects a `ssl_context`")."""
    key, cert = self_signed(tmp_path)
    tls = ["--tls-ca-file", str(cert), "--tls-cert", str(cert), "--tls-key", str(key)]
    env = {**os.environ, "PYTHONPATH": str(datapaths.ROOT),
           "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": str(cert),
           "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": str(cert),
           "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": str(key)}
    port = free_port()
    address = f"tls://127.0.0.1:{port}"
    dask = [sys.executable, "-m", "dask"]
    log = open(tmp_path / "dask.log", "wb")  # noqa: SIM115 (closed below)
    procs = [subprocess.Popen([*dask, "scheduler", "--protocol", "tls", "--host", "127.0.0.1",
                               "--port", str(port), "--no-dashboard", *tls], stdout=log, stderr=log, env=env)]
    args = [sys.executable, "-m", "pktemu.cli", "sweep", "topologies/service-test.yaml", "--scenario",
            "s1-clusterip", "--seeds", "1-3", "-o", "json"]
    try:
        procs.append(subprocess.Popen([*dask, "worker", address, "--nthreads", "1", "--no-nanny", "--host",
                                       "127.0.0.1", "--no-dashboard", *tls], stdout=log, stderr=log, env=env,
                                      cwd=tmp_path))
        remote = subprocess.run([*args, "--scheduler", address], capture_output=True, text=True, timeout=120,
                                env=env, cwd=datapaths.ROOT)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=30)
        log.close()
    assert (remote.returncode, remote.stderr) == (0, "")
    assert remote.stdout == pktemu(*args[3:]).stdout


def test_a_scheduler_that_goes_away_while_the_workers_are_asked_is_one_line(tmp_path: Path) -> None:
    """The worker, asked which pktemu it has, kills its scheduler first: an internal CommClosedError
    (exit 70) before."""
    kills = ("import pktemu.version, psutil, time; port = sys.argv[2].rsplit(':', 1)[1]; "
             "pktemu.version.version = lambda: ([p.kill() for p in psutil.process_iter(['cmdline']) "
             "if 'scheduler' in (p.info['cmdline'] or []) and port in (p.info['cmdline'] or [])], "
             "time.sleep(1), 'x')[2]")
    p = run_on_one_worker(tmp_path, worker_prelude=kills)
    assert (p.returncode, p.stderr) == (2, "pktemu: error: lost the Dask scheduler while asking its workers "
                                           "which pktemu they have (CommClosedError)\n")
    assert not (tmp_path / "run").exists()
