"""Sensor drivers, the async poller and camera capture."""
