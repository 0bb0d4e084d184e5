"""Keep OpenVINO's and NNCF's usage telemetry off for everything the appliance runs.

Both libraries treat library use as consent and write under the home folder; an appliance that
promises no outbound connections must opt out before either is imported. It lives here, in the
one package the optimizer and the server share, so both stages run the same opt-out.
"""

from __future__ import annotations

import os
import sys
import types

_OPT_OUT = {
    # nncf/telemetry/wrapper.py replaces its telemetry object by a no-op when NNCF_CI is set.
    "NNCF_CI": "1",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}


def disable_usage_telemetry() -> None:
    """Set the opt-out variables unless the operator set them explicitly, and make
    ``openvino_telemetry`` unimportable.

    ``import openvino`` (2026.x) imports ``openvino.tools.ovc``, which sends a Google Analytics
    "import" event from a forked process unless ``~/intel/openvino_telemetry`` holds ``0`` or
    ``CI=true``; no variable above stops it (seen with strace: a DNS query for
    www.google-analytics.com from ``appliance serve``). Every user of the package (ovc, NNCF)
    falls back to a no-op when it cannot be imported, so this process gets no such module.
    Call it before anything imports openvino.
    """
    for key, value in _OPT_OUT.items():
        os.environ.setdefault(key, value)
    if not isinstance(sys.modules.get("openvino_telemetry"), types.ModuleType):
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]
