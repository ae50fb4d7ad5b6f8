"""The local status page, JSON API, /healthz and /metrics."""
