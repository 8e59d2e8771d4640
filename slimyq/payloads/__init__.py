"""Pydantic payload models: the job contracts, validated before anything reaches Redis.

Field names are snake_case in Python and camelCase on the wire (the original BullMQ shapes).
"""
