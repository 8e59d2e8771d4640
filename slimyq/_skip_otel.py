"""redis-py's unused import of OpenTelemetry's metrics SDK skipped, in a ``slimyq`` process only
(the console entry point installs it; a library user or a test's CliRunner does not).

``import redis`` (8.x) runs ``redis.observability.providers``, which tries
``from opentelemetry.sdk.metrics import MeterProvider`` at module level when the SDK is installed
(``slimyq[otel]``): a third of a read command's start-up (``slimyq stats``, ~40 ms here). What
that import binds is used for nothing: ``MeterProvider`` only annotates, ``OTEL_AVAILABLE`` is read
nowhere, and redis-py imports OpenTelemetry again, lazily, when an application turns its metrics
on (``redis.observability...init(OTelConfig(enable_metrics=True))``, after setting a global
``MeterProvider`` it imported itself). So, for that one importer and that one module, the finder
below answers "not installed", which the module expects (``except ImportError``); the SDK stays
importable by everybody else, then and later (slimyq's own tracing, ``SLIMYQ_TRACING``, a job, the
same redis-py module's lazy imports). It removes itself once it has answered.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import FrameType, ModuleType

IMPORTER = "redis.observability.providers"
SKIPPED = "opentelemetry.sdk.metrics"


class SkipRedisOtelSdk:
    """A :data:`sys.meta_path` finder refusing :data:`SKIPPED` to :data:`IMPORTER` alone."""

    def find_spec(self, name: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if name != SKIPPED or _importer() != IMPORTER:
            return None  # the next finders decide, as if this one were not there
        uninstall()
        raise ModuleNotFoundError(f"{SKIPPED} is not imported for {IMPORTER} in a slimyq command", name=name)


def _importer() -> str | None:
    """The module whose code runs the import being looked up (the first frame outside importlib)."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        name = frame.f_globals.get("__name__")
        if name != __name__ and not str(name).startswith("importlib"):
            return name if isinstance(name, str) else None
        frame = frame.f_back
    return None


_finder = SkipRedisOtelSdk()


def install() -> None:
    """Before redis-py is imported (if it already is, there is nothing left to skip)."""
    if IMPORTER not in sys.modules and _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)


def uninstall() -> None:
    if _finder in sys.meta_path:
        sys.meta_path.remove(_finder)
