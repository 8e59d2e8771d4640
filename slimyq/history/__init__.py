"""Job history in the database (``job_runs``): the workers' write-behind recorder, the queries
behind ``slimyq history``/``jobs --history``/``stats --since``, and pruning.

Modules: :mod:`~slimyq.history.recorder` (``HistoryRecorder``; ``RunRow`` from :mod:`~slimyq.history.rows`),
:mod:`~slimyq.history.queries` (``list_runs``, ``run_stats``, ``job_runs_for``),
:mod:`~slimyq.history.prune` (``prune``, ``preview``). Import them directly; this package
imports nothing, so the CLI stays fast to start.
"""
