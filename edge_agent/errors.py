"""The error hierarchy. Only `cli.py` turns these into messages and exit codes."""

from __future__ import annotations


class EdgeAgentError(Exception):
    """Base of every error the agent raises on purpose."""

    exit_code = 1


class ConfigError(EdgeAgentError):
    """The configuration is invalid; `problems` holds one line per wrong key."""

    exit_code = 78

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class DependencyMissingError(EdgeAgentError):
    """A configured feature needs an optional library that is not installed."""

    exit_code = 78


class SensorError(EdgeAgentError):
    """A sensor read failed (transient: the poller retries)."""


class CameraError(EdgeAgentError):
    """A camera could not be opened or read (transient: capture reconnects)."""


class UnknownCameraError(CameraError, LookupError):
    """No camera of that name is configured (a LookupError, so command handlers map it)."""


class InferenceError(EdgeAgentError):
    """The detector could not load or run its model."""


class StorageError(EdgeAgentError):
    """The outbox could not read or write its database."""


class SyncError(EdgeAgentError):
    """The link to the provincial broker failed."""
