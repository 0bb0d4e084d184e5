"""Keep OpenVINO's and NNCF's usage telemetry off for everything the appliance runs.

Both libraries treat library use as consent and write under the home folder; an appliance that
promises no outbound connections must opt out before either is imported.
"""

from __future__ import annotations

import os

_OPT_OUT = {
    # nncf/telemetry/wrapper.py replaces its telemetry object by a no-op when NNCF_CI is set.
    "NNCF_CI": "1",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}


def disable_usage_telemetry() -> None:
    """Set the opt-out variables unless the operator set them explicitly."""
    for key, value in _OPT_OUT.items():
        os.environ.setdefault(key, value)
