"""OpenTelemetry tracing for funboost. Installing the distribution is enough: the plugin is found through
the ``funboost.plugins`` entry point and uses the application's global tracer provider (no provider set:
OpenTelemetry's no-op tracer, nothing recorded). See README.md."""
from funboost_otel.plugin import CARRIER_KEY, TRACER_NAME

__all__ = ["CARRIER_KEY", "TRACER_NAME"]
