"""harness: fair comparisons of parameter-efficient fine-tuning methods.

`python -m harness` is the Hydra entry point (see __main__.py). This module stays import-light
(no torch) so that bad input is rejected in about a second.
"""

__version__ = "0.1.0"
