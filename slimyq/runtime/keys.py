"""Redis key names. RQ's own (``rq:``) so `rq info` and rq-dashboard see the same jobs, plus a few
``slimyq:`` keys for what RQ has no notion of (per-queue pause, metrics, claim lists)."""

from __future__ import annotations

RQ = "rq"
QUEUES = f"{RQ}:queues"


def queue(name: str) -> str:
    return f"{RQ}:queue:{name}"


def job(job_id: str) -> str:
    return f"{RQ}:job:{job_id}"


def results(job_id: str) -> str:
    return f"{RQ}:results:{job_id}"


def started(name: str) -> str:
    return f"{RQ}:wip:{name}"


def finished(name: str) -> str:
    return f"{RQ}:finished:{name}"


def failed(name: str) -> str:
    return f"{RQ}:failed:{name}"


def scheduled(name: str) -> str:
    return f"{RQ}:scheduled:{name}"


def deferred(name: str) -> str:
    return f"{RQ}:deferred:{name}"


def canceled(name: str) -> str:
    return f"{RQ}:canceled:{name}"


def worker(name: str) -> str:
    return f"{RQ}:worker:{name}"


def worker_executions(name: str) -> str:
    return f"{RQ}:worker:{name}:executions"


def workers(queue_name: str | None = None) -> str:
    return f"{RQ}:workers:{queue_name}" if queue_name else f"{RQ}:workers"


def paused(name: str) -> str:
    return f"slimyq:paused:{name}"


def claim_list(worker_name: str) -> str:
    return f"slimyq:claim:{worker_name}"


def claim_lists(queue_name: str) -> str:
    return f"slimyq:claims:{queue_name}"


def counts(queue_name: str) -> str:
    return f"slimyq:counts:{queue_name}"


def histogram(queue_name: str) -> str:
    return f"slimyq:hist:{queue_name}"


def throughput(queue_name: str) -> str:
    return f"slimyq:tp:{queue_name}"


HISTORY_DROPPED = "slimyq:history:dropped"  # hash: worker name -> job_runs rows dropped (buffer full)


def ops(queue_name: str) -> str:
    """Database and OpenAI metrics (:mod:`slimyq.obs.ops`)."""
    return f"slimyq:ops:{queue_name}"
