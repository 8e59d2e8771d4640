"""Observability beyond the job counters: database and OpenAI metrics (:mod:`.ops`) and the
optional OpenTelemetry traces (:mod:`.trace`)."""
