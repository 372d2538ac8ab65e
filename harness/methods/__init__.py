"""Method registry. Each module below registers one method kind on import."""

from harness.registry import Registry

METHODS: Registry = Registry("method kind")


def register(cls):
    """Class decorator: METHODS[cls.kind] = cls."""
    METHODS.register(cls.kind, cls)
    return cls


# One import per method file; adding a method = one file + one import + one YAML.
from harness.methods import adalora, bitfit, fullft, ia3, lora, lori, reft, vera  # noqa: E402,F401
