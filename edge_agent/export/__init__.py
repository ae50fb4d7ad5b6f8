"""Regulated outputs beside MQTT: the monitoring-station files of Circular 10/2021."""
