"""`hydra/sweeper=grid` (see harness.sweeper for what it does)."""

from harness.sweeper import GridSweeper as _GridSweeper


class GridSweeper(_GridSweeper):
    pass
