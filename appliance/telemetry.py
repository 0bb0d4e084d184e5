"""The server's entry to the shared telemetry opt-out (see ``modelrepo.telemetry``)."""

from modelrepo.telemetry import disable_usage_telemetry

__all__ = ["disable_usage_telemetry"]
