"""Job handlers: plain functions of a validated payload and a :class:`JobContext`.

One module per queue. They know nothing of the CLI or of Redis; ``registry`` maps job type names
to (queue, handler, payload model) and is the worker's allowlist.
"""
