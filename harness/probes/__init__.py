"""Retention probes: what fine-tuning cost the model outside its task (forgetting).

`eval.retention=[...]` names probes; each runs on the base model before training and on the
adapted model after it (harness/probes/runner.py). Every module of this package is imported here
(discovered, never listed) and each probe module registers its class: adding a probe = one file
here. The run asks this registry and never names a probe.
"""

import importlib
import pkgutil

from harness.registry import Registry

PROBES: Registry = Registry("retention probe")


def register(cls):
    """Class decorator: PROBES[cls.name] = cls."""
    PROBES.register(cls.name, cls)
    return cls


for _module in sorted(info.name for info in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")  # after `register` exists: probe modules import it
