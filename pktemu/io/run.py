"""Write a scenario's output directory, atomically (`pktemu.Network.write`: `pktemu run` and `replay`).

Layout (the kernel oracle's, so `oracle_summary.py` reads it as is):
`OUT/<scenario>/pcap/<node>-<ifname>.pcap`, `all.pcapng`, `captures.tsv`, `scenario.json`,
`client-result.json`, `conntrack-<node>.txt`, `iptables-save-<node>.txt`, `drops.txt`; and ours,
`server-result.json`.
Everything is written into a hidden temporary directory next to the final one and renamed into
place at the end, so an interrupted run leaves the previous output (or nothing), never half a run;
temporary names and the removal of a killed run's leftovers are `pktemu.io.atomic`'s.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
from dataclasses import dataclass
from typing import Any

from pktemu import interrupt, topo
from pktemu.errors import PktemuError, excerpt
from pktemu.io.atomic import (entry_name_problem, forget, make_temp_dir, remove_leftovers, remove_path,
                              temp_path, write_text)
from pktemu.io.capture import CaptureSet
from pktemu.io.jsontext import dumps_indented
from pktemu.io.pcap import PcapWriter
from pktemu.io.topofile_scenarios import SERVER_RESULT, all_traffic, result_files
from pktemu.netfilter.xtables import save_rules
from pktemu.nftables.save import list_ruleset
from pktemu.net.device import NetDevice
from pktemu.network import Network
from pktemu.sim import EPOCH_NS
from pktemu.traffic import Pending
from pktemu.version import version


EXTRA_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass
class Output:
    """A run's output directory while it is being written: a hidden temporary folder in `root`
    with every capture point attached, to be renamed to `root/name` once complete."""
    tmp: str
    root: str
    name: str
    caps: CaptureSet
    captured: list[tuple[str, NetDevice]]
    #: the outermost folder of `root` this output created, removed again (if empty) on abort
    created: str | None = None

    @property
    def final(self) -> str:
        return os.path.join(self.root, self.name)


def open_output(out_root: str, name: str, net: Network) -> Output:
    """A hidden temporary directory in `out_root` with every capture point of `net` attached.

    Attach it before the first frame: the merged pcapng's comments are computed as frames pass.
    Leftovers of killed runs in `out_root` are removed first.
    """
    if (problem := entry_name_problem(name)) is not None:
        raise PktemuError(f"output name {excerpt(name)}: {problem}")
    created = _missing_ancestor(out_root)
    try:
        os.makedirs(out_root, exist_ok=True)
        remove_leftovers(out_root)
        tmp = make_temp_dir(out_root, name)
    except OSError as e:
        _remove_created(out_root, created)
        raise PktemuError(f"{out_root}: cannot write: {e.strerror or e}") from None
    caps: CaptureSet | None = None
    try:
        os.makedirs(os.path.join(tmp, "pcap"))
        caps = CaptureSet(os.path.join(tmp, "pcap"), os.path.join(tmp, "all.pcapng"),
                          section_comment(name, net), in_temp=True)
        captured = net.captures()
        for cname, dev in captured:
            caps.attach(cname, dev)
        return Output(tmp, out_root, name, caps, captured, created)
    except BaseException:
        _discard(tmp, caps)
        _remove_created(out_root, created)
        raise


def section_comment(name: str, net: Network) -> str:
    """all.pcapng's section comment: what made the file, so a capture passed around says so."""
    t = net.topology      # its name and file name, not its path: the same bytes wherever it runs
    return (f"pktemu {version()}: topology {t.name} ({os.path.basename(t.path)}), scenario {name}, "
            f"seed {net.sim.seed}; "
            "one interface per capture point (node/ifname), each frame's comment says why it looks so there")


def _missing_ancestor(path: str) -> str | None:
    """The outermost folder of `path` that does not exist yet (what `makedirs` would create)."""
    full = os.path.abspath(path)
    first = None
    while not os.path.lexists(full):
        first = full
        parent = os.path.dirname(full)
        if parent == full:
            break
        full = parent
    return first


def _remove_created(path: str, created: str | None) -> None:
    """Remove the (empty) folders made for `path` down from `created`: a failed start leaves none."""
    here = os.path.abspath(path)
    if created is None or os.path.commonpath([here, created]) != created:
        return
    while True:
        try:
            os.rmdir(here)
        except OSError:
            return
        if here == created:
            return
        here = os.path.dirname(here)


def abort_output(out: Output) -> None:
    """Remove the temporary directory and everything in it, whatever signals arrive meanwhile,
    and the output root if this output created it and it is empty."""
    _discard(out.tmp, out.caps)
    _remove_created(out.root, out.created)


def _discard(tmp: str, caps: CaptureSet | None) -> None:
    with interrupt.shielded():
        try:
            if caps is not None:
                caps.abort()
        finally:
            remove_path(tmp)
            forget(tmp)


def finish_output(out: Output, net: Network, sc: topo.Scenario, runs: list[Any],
                  out_root: str | None = None, files: dict[str, str] | None = None) -> str:
    """Close the captures, write the state files (and `files`, name -> text) and rename the directory
    into place, in `out_root` if given (moved there first); on any failure nothing is left. Returns
    the path."""
    try:
        out.caps.close(net.drops, net.sim.now)
        write_state(out.tmp, net, sc, out.captured, runs)
        check_files(files)
        for fname, text in (files or {}).items():
            path = os.path.join(out.tmp, fname)
            if os.path.lexists(path):
                raise PktemuError(f"write: files: {excerpt(fname)} is a file the output already has")
            write_text(path, text)
        if out_root is not None and os.path.abspath(out_root) != os.path.abspath(out.root):
            _move(out, out_root)
        replace_dir(out.tmp, out.final)
    except BaseException:
        abort_output(out)
        raise
    return out.final


def check_files(files: dict[str, str] | None, taken: set[str] | frozenset[str] = frozenset()) -> None:
    """Extra files for `finish_output` must be a dict of plain names (no folders, no hidden names,
    none of `taken`) to text that UTF-8 can hold."""
    if files is None:
        return
    if not isinstance(files, dict):
        raise PktemuError(f"write: files: expected a dict of file name -> text, got {excerpt(files)}")
    for fname, text in files.items():
        if not isinstance(fname, str) or not EXTRA_FILE.fullmatch(fname) or not isinstance(text, str):
            raise PktemuError(f"write: files: {excerpt(fname)}: expected a plain file name (letters, digits, "
                              "'_', '.', '-') and its text")
        if fname in taken:
            raise PktemuError(f"write: files: {excerpt(fname)} is a file the output already has")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise PktemuError(f"write: files: {excerpt(fname)}: its text cannot be written as UTF-8 "
                              f"({excerpt(text[e.start:e.end])} at {e.start})") from None


def state_names(net: Network, sc: topo.Scenario) -> set[str]:
    """The names `write_state` (and the captures) may give files of the output's top folder, for
    `check_files` before anything is closed (`nflog-<node>-<group>.pcap` is left to the final check)."""
    names = {"pcap", "all.pcapng", "captures.tsv", "scenario.json", SERVER_RESULT, "steps.json",
             "timeline.txt", "drops.txt", *result_files(all_traffic(sc))}
    for node in net.nodes.values():
        names.update(f"{what}-{node.name}.txt" for what in
                     ("conntrack", "ipset", "nft-ruleset", "iptables-save", "log", "trace"))
    return names


def _move(out: Output, out_root: str) -> None:
    """Carry the finished temporary directory into `out_root` (a rename, or a copy across filesystems)."""
    try:
        os.makedirs(out_root, exist_ok=True)
        remove_leftovers(out_root)
    except OSError as e:
        raise PktemuError(f"{out_root}: cannot write: {e.strerror or e}") from None
    with interrupt.shielded():
        dest = temp_path(out_root, out.name)
        try:
            try:
                os.rename(out.tmp, dest)
            except OSError as e:
                if e.errno != errno.EXDEV:
                    raise
                shutil.copytree(out.tmp, dest)
                remove_path(out.tmp)
        except OSError as e:
            remove_path(dest)
            forget(dest)
            raise PktemuError(f"{out_root}: cannot write: {e.strerror or e}") from None
        forget(out.tmp)
        out.tmp, out.root, out.created = dest, out_root, None


def write_state(tmp: str, net: Network, sc: topo.Scenario, captured: list[Any], runs: list[Any]) -> None:
    write_text(os.path.join(tmp, "captures.tsv"),
               "".join(f"{name}\t{dev.node.name}\t{dev.name}\tpcap/{name}.pcap\n" for name, dev in captured))
    _write_json(os.path.join(tmp, "scenario.json"), {"scenario": sc.name, "description": sc.description})
    _write_json(os.path.join(tmp, SERVER_RESULT), server_results(net, runs))
    results = [r.result for r in runs]
    if sc.steps:
        _write_json(os.path.join(tmp, "steps.json"), [
            {"step": r.step.name, "description": r.step.description,
             "start_s": None if r.start is None else r.start / 1e9,
             "end_s": None if r.end is None else r.end / 1e9, "ended_by": r.ended_by or "not reached",
             "results": sorted(result_files(r.step.traffic))} for r in net.steps])
    if net.actions:
        write_text(os.path.join(tmp, "timeline.txt"), "".join(rec.line() + "\n" for rec in net.actions))
    for fname, items in result_files(all_traffic(sc)).items():
        picked = [results[i] for i in items]
        _write_json(os.path.join(tmp, fname), picked[0] if len(picked) == 1 else picked)
    for node in net.nodes.values():
        if node.kind != "pod":
            write_text(os.path.join(tmp, f"conntrack-{node.name}.txt"), node.nf.conntrack_dump())
        if node.ipsets is not None and node.ipsets.names():
            write_text(os.path.join(tmp, f"ipset-{node.name}.txt"), node.ipsets.save())
        nft = getattr(node.nf, "nft", None)
        if nft is not None:
            write_text(os.path.join(tmp, f"nft-ruleset-{node.name}.txt"), list_ruleset(nft, node.now()))
        if node.nf.ruleset is not None and (nft is None or node.nf.ruleset.tables()):
            write_text(os.path.join(tmp, f"iptables-save-{node.name}.txt"),
                       save_rules(node.nf.ruleset, counters=True))
            for group, recs in sorted(node.nf.ruleset.ext.get("nflog", {}).items()):
                w = PcapWriter(os.path.join(tmp, f"nflog-{node.name}-{group}.pcap"), in_temp=True)
                for t_ns, data, _prefix in recs:
                    w.write(EPOCH_NS + t_ns, data)
                w.close()
            _write_lines(os.path.join(tmp, f"log-{node.name}.txt"),
                         [f"[{t // 10**9:5d}.{t % 10**9 // 1000:06d}] {ln}" for t, ln in node.nf.ruleset.log])
            _write_lines(os.path.join(tmp, f"trace-{node.name}.txt"),
                         [line for _t, line in node.nf.ruleset.ext.get("trace", ())])
    write_text(os.path.join(tmp, "drops.txt"),
               "".join(f"{d.t / 1e9:.6f} {d.node} {d.where}: {d.reason} [{d.summary}]\n" for d in net.drops))


def _write_lines(path: str, lines: list[str]) -> None:
    """LOG lines as dmesg prints them, TRACE lines as `xtables-monitor --trace`: only when there are some."""
    if lines:
        write_text(path, "".join(line + "\n" for line in lines))


def server_results(net: Network, runs: list[Any]) -> dict[str, list[dict[str, Any]]]:
    """What each app that is not a scenario's traffic saw (server-result.json): pod or node name ->
    its apps in the topology's order, each `{"app": kind, "result": ...}` (entries in time order)."""
    clients = {id(r.slot.get("run")) for r in runs if isinstance(r, Pending)}
    out: dict[str, list[dict[str, Any]]] = {}
    for app in net.apps:
        if id(app) not in clients:
            out.setdefault(app.node, []).append({"app": app.kind, "result": app.result})
    return dict(sorted(out.items()))


def _write_json(path: str, obj: Any) -> None:
    write_text(path, dumps_indented(obj) + "\n")


def replace_dir(tmp: str, final: str) -> None:
    """Swap the finished temporary directory into place (rename is atomic on one filesystem).

    The two renames run shielded from signals; a process killed between them leaves the previous
    output under an `.old` name that the next run puts back (`pktemu.io.atomic.remove_leftovers`).
    """
    old = None
    with interrupt.shielded():
        if os.path.lexists(final):
            old = temp_path(os.path.dirname(final), os.path.basename(final), "old")
            os.rename(final, old)
        try:
            os.rename(tmp, final)
        except OSError:
            if old is not None:
                os.rename(old, final)
                forget(old)
            raise
        forget(tmp)
        if old is not None:
            remove_path(old)
            forget(old)


def check_out_dir(path: str, option: str = "--out") -> None:
    """Refuse an output root that cannot become a writable folder, before any work is done.

    The nearest existing ancestor must be a folder in which a (removed at once) temporary folder
    can be made: this catches files on the path, read-only or special filesystems (/proc) and
    permissions, and leaves nothing behind. A folder this process may write to on a writable
    filesystem with storage of its own (not /proc, /sys) is taken without the trial: removing a
    folder costs milliseconds where the filesystem discards freed blocks at once (`-o discard`,
    common on cloud VMs), more than a small run's whole emulation.
    """
    where = f"{option} {path!r}" if not path or path != path.strip() else f"{option} {path}"
    if not path:
        raise PktemuError(f"{where}: an empty path")
    if "\0" in path:
        raise PktemuError(f"{where}: a path cannot contain a NUL character")
    full = os.path.abspath(path)
    here = full
    while not os.path.lexists(here):
        here = os.path.dirname(here)
    if not os.path.isdir(here):
        what = "is" if here == full else f"is under {here}, which is"
        raise PktemuError(f"{where}: {what} not a directory")
    if _plainly_writable(here):
        return
    try:
        probe = make_temp_dir(here, os.path.basename(full) or "out")
    except OSError as e:
        raise PktemuError(f"{where}: cannot create a directory in {here}: {e.strerror or e}") from None
    with interrupt.shielded():
        try:
            os.rmdir(probe)
        except OSError:
            remove_path(probe)
        forget(probe)


def _plainly_writable(folder: str) -> bool:
    try:
        fs = os.statvfs(folder)
    except OSError:
        return False
    return fs.f_blocks > 0 and not fs.f_flag & os.ST_RDONLY and os.access(folder, os.W_OK | os.X_OK)


def check_out_file(where: str, path: str, suffixes: tuple[str, ...], what: str = "file name") -> None:
    """Refuse an output file that cannot be written as named, before any work is done: `where`
    names the option in messages ("--out X"), `suffixes` the endings it must have."""
    if not path.endswith(suffixes):
        raise PktemuError(f"{where}: the {what} must end in {' or '.join(suffixes)}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise PktemuError(f"{where}: cannot write to folder {folder}")
    if os.path.isdir(path):
        raise PktemuError(f"{where}: is a folder")
