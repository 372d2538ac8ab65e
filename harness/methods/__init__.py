"""Method registry. Every module of this package is imported here (discovered, never listed), and
each method module registers its kind on import: adding a method = one file here + one YAML."""

import importlib
import pkgutil
import sys
from typing import List

from harness.registry import Registry

METHODS: Registry = Registry("method kind")


def register(cls):
    """Class decorator: METHODS[cls.kind] = cls."""
    METHODS.register(cls.kind, cls)
    return cls


def discover(package) -> List[str]:
    """Import every module of `package` (an imported package) and return their names, in name order
    (the registry does not depend on it: it sorts its names)."""
    names = sorted(info.name for info in pkgutil.iter_modules(package.__path__))
    for name in names:
        importlib.import_module(f"{package.__name__}.{name}")
    return names


discover(sys.modules[__name__])  # after `register` exists: the method modules import it
