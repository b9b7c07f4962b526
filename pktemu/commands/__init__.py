"""`pktemu` subcommands: each module here defines `NAME`, `HELP`, `add_arguments(parser)` and
`run(args, console) -> int`; the CLI finds them by listing this package, so a new command is a
new module and nothing else changes."""
from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def load_all() -> list[ModuleType]:
    mods = [importlib.import_module(f"{__name__}.{m.name}") for m in pkgutil.iter_modules(__path__)
            if not m.name.startswith("_")]
    return sorted(mods, key=lambda m: getattr(m, "ORDER", 50))
