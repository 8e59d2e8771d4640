"""In-process audit log maintenance: batched cleanup, SQL reports and listings.

Pure functions over a database whose models are bound (``slimyq.db.open_database`` binds them),
returning dataclasses. Used by both the ``audit`` queue's handlers and ``slimyq audit``.
"""
