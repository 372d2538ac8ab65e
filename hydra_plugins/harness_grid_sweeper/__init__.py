"""Hydra only instantiates plugins from the hydra_plugins namespace; the sweeper lives in harness.sweeper."""
