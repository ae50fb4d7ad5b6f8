"""Derived streams from committed readings: VN_AQI, limit alerts."""
