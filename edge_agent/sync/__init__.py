"""The MQTT link to the provincial IOC, the outbox publisher and remote commands."""
