"""`python`: a user's Python function as a pod application, on the virtual clock.

The app is a generator function `app(api, **args)`: it yields the operations of its sockets
(pktemu.apps.pysock) and `api.sleep()`, and is resumed with each one's outcome, so the code
reads like blocking socket code while everything runs in one thread, deterministically. A
plain function works too (it just runs once). The app fills `api.result`, which ends up in
client-result.json. An exception the app does not catch ends it as a process ends: it is
recorded in the result (`error`, `errno` for an OSError, `error_at`), reported as one line on
stderr, and the run goes on. Like a process's exit, the end of the app closes its sockets and
stops the tasks it spawned.
"""
from __future__ import annotations

import importlib
import inspect
import os
import sys
import traceback
from typing import TYPE_CHECKING, Any, Callable, Generator

from pktemu.apps.http import check_fields
from pktemu.apps.pysock import Address, Op, Socket, errno_name
from pktemu.apps.registry import AppKind, register
from pktemu.errors import PktemuError, excerpt
from pktemu.sim import SECOND

if TYPE_CHECKING:
    from pktemu.net.node import Node

_FIELDS = {"entry", "args", "path"}
Gen = Generator[Any, Any, Any]
_HERE = os.path.dirname(os.path.abspath(__file__))


# ---------------------------------------------------------------------------- the entry point
def topology_dir(where: str) -> str:
    """The directory of the topology file a message prefix `FILE: object` names (else the cwd)."""
    cut = where.find(": ")
    while cut != -1:
        if os.path.isfile(where[:cut]):
            return os.path.dirname(os.path.abspath(where[:cut]))
        cut = where.find(": ", cut + 1)
    return os.getcwd()


def load_entry(entry: Any, path: str, where: str) -> Callable[..., Any]:
    """`module:function`, the module looked up in `path` first, then on sys.path."""
    at = f"{where}.entry"
    if not isinstance(entry, str) or entry.count(":") != 1:
        raise PktemuError(f"{at}: expected 'module:function', got {excerpt(entry)}")
    modname, fname = entry.split(":")
    if not all(p.isidentifier() for p in modname.split(".")) or not fname.isidentifier():
        raise PktemuError(f"{at}: expected 'module:function' (Python names), got {excerpt(entry)}")
    top = modname.split(".")[0]
    local = os.path.exists(os.path.join(path, top + ".py")) or os.path.isdir(os.path.join(path, top))
    cached = sys.modules.get(modname)
    if local and cached is not None and not _under(getattr(cached, "__file__", None), path):
        for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
            del sys.modules[name]           # a module of that name from elsewhere: use the local one
    sys.path.insert(0, path)
    try:
        module = importlib.import_module(modname)
    except Exception as e:                  # the user's module: any error is an import failure
        raise PktemuError(f"{at}: cannot import {modname}: {type(e).__name__}: {e}") from None
    finally:
        sys.path.remove(path)
    fn = getattr(module, fname, None)
    if not callable(fn):
        raise PktemuError(f"{at}: module {modname} has no function {fname}")
    return fn


def _under(file: str | None, path: str) -> bool:
    return file is not None and os.path.abspath(file).startswith(os.path.join(path, ""))


def _check_args(fn: Callable[..., Any], args: Any, where: str) -> dict[str, Any]:
    if args is None:
        args = {}
    if not isinstance(args, dict) or not all(isinstance(k, str) and k.isidentifier() for k in args):
        raise PktemuError(f"{where}.args: expected a mapping of argument names to values, "
                          f"got {excerpt(args)}")
    try:
        inspect.signature(fn).bind(None, **args)
    except TypeError as e:
        raise PktemuError(f"{where}.args: {getattr(fn, '__name__', 'the function')}(api, ...) {e}") from None
    except ValueError:
        pass                                # no signature to check (a builtin): it will tell at start
    return dict(args)


def validate(params: dict[str, Any], where: str) -> dict[str, Any]:
    """Import the entry now, so a bad one is a load-time error; `path` comes back absolute."""
    check_fields(params, _FIELDS, "python", where)
    if "entry" not in params:
        raise PktemuError(f"{where}.entry: missing (the app's function, as 'module:function')")
    path = params.get("path", ".")
    if not isinstance(path, str) or not path or "\0" in path:
        raise PktemuError(f"{where}.path: expected a directory name, got {excerpt(path)}")
    path = os.path.abspath(os.path.join(topology_dir(where), path))
    fn = load_entry(params["entry"], path, where)
    return {"entry": params["entry"], "args": _check_args(fn, params.get("args"), where), "path": path}


# ---------------------------------------------------------------------------- the process
class Api:
    """What the app's function gets: sockets, the clock, its result dict (docs/python-api.md)."""

    def __init__(self, proc: "Process") -> None:
        self._proc = proc
        #: the app's result (client-result.json); bytes are kept as latin-1 text
        self.result: dict[str, Any] = proc.result
        self.node: str = proc.node.name

    @property
    def now(self) -> float:
        """Virtual seconds since the start."""
        return self._proc.node.sim.now / SECOND

    def sleep(self, seconds: float) -> Op:
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < 1e9:
            raise ValueError(f"sleep: expected a number of seconds, got {seconds!r}")
        op = Op()
        self._proc.node.sim.schedule(round(seconds * SECOND), op.resolve, None)
        return op

    def socket(self, kind: str = "tcp") -> Socket:
        return Socket(self._proc.node, kind, self._proc.sockets)

    def connect(self, addr: Address, timeout: float | None = None, source: Address | None = None) -> Op:
        """socket.create_connection(): an op giving the connected TCP socket."""
        s = self.socket("tcp")
        if source is not None:
            s.bind(source)
        op = Op()
        inner = s.connect(addr, timeout)
        if inner.done:
            return Op.completed(s if inner.error is None else None, inner.error)
        inner.waiter = lambda o: op.fail(o.error) if o.error is not None else op.resolve(s)
        return op

    def listen(self, addr: Address, backlog: int = 128) -> Socket:
        """A TCP socket bound to `addr` (("0.0.0.0", port) for every address) and listening."""
        s = self.socket("tcp")
        s.bind(addr)
        s.listen(backlog)
        return s

    def udp(self, addr: Address = ("0.0.0.0", 0)) -> Socket:
        """A UDP socket bound to `addr` (port 0: an ephemeral port)."""
        s = self.socket("udp")
        s.bind(addr)
        return s

    def spawn(self, gen: Gen) -> None:
        """Run another generator (a connection's handler) alongside; it ends with the app."""
        if not inspect.isgenerator(gen):
            raise TypeError(f"spawn: expected a generator (call the generator function), got {gen!r}")
        self._proc.run(gen, main=False)


class Process:
    """One run of a `python` app: its tasks, its sockets, its result."""

    def __init__(self, node: "Node", label: str, result: dict[str, Any], done: Callable[[], None]) -> None:
        self.node = node
        self.label = label
        self.result = result
        self.sockets: list[Socket] = []
        self.tasks: list[Gen] = []
        self.ended = False
        self._done = done

    def start(self, fn: Callable[..., Any], args: dict[str, Any]) -> None:
        try:
            out = fn(Api(self), **args)
        except (Exception, SystemExit) as e:    # sys.exit() ends the app (a process), not pktemu
            self._crash(e)
            self._end()
            return
        if inspect.isgenerator(out):
            self.run(out, main=True)
        else:
            if isinstance(out, dict):
                self.result.update(out)
            self._end()

    def run(self, gen: Gen, main: bool) -> None:
        if self.ended:
            gen.close()
            return
        self.tasks.append(gen)
        self._step(gen, main, None, None)

    def _step(self, gen: Gen, main: bool, value: Any, error: BaseException | None) -> None:
        while not self.ended:
            try:
                op = gen.throw(error) if error is not None else gen.send(value)
            except StopIteration as stop:
                self._task_over(gen, main, stop.value, None)
                return
            except (Exception, SystemExit) as e:
                self._task_over(gen, main, None, e)
                return
            finally:
                jsonable(self.result)
            if not isinstance(op, Op):
                value, error = None, TypeError(f"yield an operation of the api (connect, recv, sleep, ...), "
                                               f"not {type(op).__name__}")
                continue
            if op.done:
                value, error = op.value, op.error
                continue
            op.waiter = lambda o: self._step(gen, main, o.value, o.error)
            return

    def _task_over(self, gen: Gen, main: bool, value: Any, error: BaseException | None) -> None:
        if gen in self.tasks:
            self.tasks.remove(gen)
        if error is not None:
            self._crash(error)
        elif main and isinstance(value, dict):
            self.result.update(value)
            jsonable(self.result)
        if main:
            self._end()

    def _crash(self, e: BaseException) -> None:
        """Record the first uncaught exception and say so in one line."""
        text = f"{type(e).__name__}: {e}".replace("\n", " ")
        frames = [f for f in traceback.extract_tb(e.__traceback__) if not f.filename.startswith(_HERE)]
        last = frames[-1] if frames else None
        at = f"{os.path.basename(last.filename)}:{last.lineno} in {last.name}" if last else None
        if "error" not in self.result:
            self.result["error"] = text
            name = errno_name(e)
            if name is not None:
                self.result["errno"] = name
            if at is not None:
                self.result["error_at"] = at
        where = f" (at {at})" if at else ""
        print(f"pktemu: warning: {self.node.name}: python app {self.label}: {text}{where}; "
              "recorded in its result", file=sys.stderr)

    def _end(self) -> None:
        """The process exits: its sockets close, the tasks it spawned stop."""
        if self.ended:
            return
        self.ended = True
        for gen in list(self.tasks):
            try:
                gen.close()
            except (Exception, SystemExit) as e:
                self._crash(e)
        self.tasks.clear()
        for s in self.sockets:
            s.close()
        jsonable(self.result)
        self._done()


def jsonable(obj: Any) -> Any:
    """Make the result writable as JSON, in place: bytes as latin-1 text, tuples as lists,
    keys as strings, anything else JSON cannot hold as its repr."""
    if isinstance(obj, dict):
        for k in list(obj):
            v = jsonable(obj[k])
            if not isinstance(k, str):
                del obj[k]
                k = str(k) if isinstance(k, (int, float, bool)) or k is None else repr(k)
            obj[k] = v
        return obj
    if isinstance(obj, list):
        obj[:] = [jsonable(v) for v in obj]
        return obj
    if isinstance(obj, tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj).decode("latin-1")
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return repr(obj)


# ---------------------------------------------------------------------------- the app kind
def start_function(node: "Node", fn: Callable[..., Any], args: dict[str, Any], result: dict[str, Any],
                   done: Callable[[], None], label: str | None = None) -> Process:
    proc = Process(node, label or str(getattr(fn, "__qualname__", repr(fn))), result, done)
    proc.start(fn, args)
    return proc


def start(node: "Node", params: dict[str, Any], result: dict[str, Any], done: Callable[[], None]) -> None:
    entry = params["entry"]
    if callable(entry):                     # pktemu.Network.start_app with a function
        start_function(node, entry, dict(params.get("args") or {}), result, done)
        return
    fn = load_entry(entry, params.get("path") or os.getcwd(), f"{node.name}: python")
    start_function(node, fn, dict(params.get("args") or {}), result, done, label=entry)


register(AppKind("python", start, validate,
                 "a Python generator function `module:function(api, **args)` on emulated sockets"))


# ---------------------------------------------------------------------------- from pktemu.Network
class AppHandle:
    """A started `python` app: `.result` is its result dict, `.done` whether it has ended."""

    def __init__(self, proc: Process) -> None:
        self._proc = proc
        self.result = proc.result

    @property
    def done(self) -> bool:
        return self._proc.ended

    def __repr__(self) -> str:
        state = "done" if self.done else "running"
        return f"<python app {self._proc.label} in {self._proc.node.name}: {state}>"


def start_app(node: "Node", fn: Callable[..., Any] | str, args: dict[str, Any], where: str) -> AppHandle:
    """Start `fn` (a function, or 'module:function' looked up next to the topology file) now."""
    if isinstance(fn, str):
        params = validate({"entry": fn, "args": args}, where)
        fn = load_entry(fn, params["path"], where)
    elif not callable(fn):
        raise PktemuError(f"{where}: expected a function or 'module:function', got {excerpt(fn)}")
    else:
        args = _check_args(fn, args, where)
    proc = Process(node, str(getattr(fn, "__qualname__", repr(fn))), {}, lambda: None)
    proc.start(fn, args)
    return AppHandle(proc)
