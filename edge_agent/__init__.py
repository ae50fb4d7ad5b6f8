"""edge-agent: the district node of a provincial Intelligent Operations Centre."""

__version__ = "0.1.0"
