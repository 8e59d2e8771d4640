"""Reading and operating queues: pure functions over Redis returning dataclasses.

``stats`` (queue depth and speed), ``jobs`` (listings and one job), ``workers``, ``health`` (the
check), ``ops`` (requeue, cancel, delete, pause, resume, empty, prune) and ``prom`` (Prometheus).
Reads cost a fixed number of pipelined round trips, never one per job.
"""
