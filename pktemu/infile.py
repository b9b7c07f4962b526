"""Reading users' input files: every failure is the one-line PktemuError (`file[:line]: ...`)."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import yaml

from pktemu.errors import PktemuError


@contextmanager
def yaml_errors(path: str) -> Iterator[None]:
    try:
        yield
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = " ".join(str(x) for x in (e.context, e.problem) if x)
        raise PktemuError(f"{path}{line}: YAML syntax error: {problem}") from None
    except yaml.YAMLError as e:
        raise PktemuError(f"{path}: YAML error: {str(e).splitlines()[0]}") from None


def read_text(path: str, what: str = "") -> str:
    """A UTF-8 text file; `what` names it in the message (`cannot read manifest: ...`)."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise PktemuError(f"{path}: cannot read{' ' + what if what else ''}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise PktemuError(f"{path}: not UTF-8 text: {e.reason} at byte {e.start}") from None
