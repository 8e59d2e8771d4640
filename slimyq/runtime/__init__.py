"""The worker runtime: fast claim/complete paths over RQ's own data model, the queue worker
process, the supervisor, retries, retention, metrics and shutdown."""
