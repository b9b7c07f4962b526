"""The client's side of a job: its bytes written as `OUT/<name>/`, atomically.

Only the client writes, and each output folder once: into a hidden temporary folder that is renamed
into place (`pktemu.io.run.replace_dir`), as `pktemu run` does serially, so an interrupted or
failed run leaves every folder the previous one or a whole new one.
"""
from __future__ import annotations

import os

from pktemu import interrupt
from pktemu.io.atomic import forget, make_temp_dir, remove_leftovers_once, remove_path
from pktemu.io.run import replace_dir
from pktemu.scaleout.jobs import Done


def write_done(out_root: str, done: Done) -> str:
    """Write `done`'s files as `out_root/<done.name>/` (replacing an older one); returns the path."""
    os.makedirs(out_root, exist_ok=True)
    remove_leftovers_once(out_root)
    tmp = make_temp_dir(out_root, done.name)
    try:
        for d in done.dirs:
            os.makedirs(os.path.join(tmp, d), exist_ok=True)
        for rel, data in done.files.items():
            path = os.path.join(tmp, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
        final = os.path.join(out_root, done.name)
        replace_dir(tmp, final)
    except BaseException:
        with interrupt.shielded():
            remove_path(tmp)
            forget(tmp)
        raise
    return final
