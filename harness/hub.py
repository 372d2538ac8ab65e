"""Hub vs local mirror, decided once per process before huggingface_hub/datasets are imported.

- HARNESS_DATA_DIR set: data comes from that mirror, and the HF offline flags are set (unless the
  user set HF_HUB_OFFLINE themselves), so nothing waits on the network.
- otherwise: a 2-second TCP probe of huggingface.co; unreachable -> offline flags, so a missing
  dataset fails in about a second instead of stalling ~24 s.
Where data comes from (data_source): HARNESS_DATA_DIR if set; else the hub if it is reachable; else
the copy of the offline mirror bundled with the package (GLUE CoLA, SST-2, MRPC, STS-B, RTE and the
BoolQ substitute; provenance and licences in harness/bundled_data/MANIFEST.md). The decision and its
reason are printed and recorded in every run.
"""

import os
import socket
from pathlib import Path

DATA_DIR_ENV = "HARNESS_DATA_DIR"
_decision = {}


def _hub_reachable(host: str = "huggingface.co", timeout: float = 2.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _set_offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def configure_hub() -> dict:
    """Set the offline flags if needed; return {'hub': online|offline, 'reason': ...}."""
    if _decision:
        return _decision
    user_flag = os.environ.get("HF_HUB_OFFLINE")
    if user_flag is not None:
        mode = "offline" if user_flag.strip().lower() in ("1", "true", "yes", "on") else "online"
        if mode == "offline":
            _set_offline()
        _decision.update(hub=mode, reason=f"HF_HUB_OFFLINE={user_flag} set by the user")
    elif os.environ.get(DATA_DIR_ENV):
        _set_offline()
        _decision.update(hub="offline", reason=f"{DATA_DIR_ENV} is set (local mirror)")
    elif not _hub_reachable():
        _set_offline()
        _decision.update(hub="offline", reason="huggingface.co unreachable (2 s probe)")
    else:
        _decision.update(hub="online", reason="huggingface.co reachable")
    return _decision


BUNDLED_DATA = Path(__file__).resolve().parent / "bundled_data"


def data_source() -> tuple:
    """(mirror directory or None for the hub, why)."""
    value = os.environ.get(DATA_DIR_ENV)
    if value:
        return value, f"{DATA_DIR_ENV} is set"
    decision = configure_hub()
    if decision["hub"] == "offline":
        return str(BUNDLED_DATA), f"the copy bundled with the package (hub offline: {decision['reason']})"
    return None, f"{DATA_DIR_ENV} not set and the hub is reachable"


def data_dir():
    return data_source()[0]
