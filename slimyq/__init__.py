"""slimyq: run and inspect job queues (RQ workers, enqueue, stats, audit maintenance)."""

__version__ = "0.1.0"

QUEUE_NAMES: tuple[str, ...] = ("chat", "database", "audit")
