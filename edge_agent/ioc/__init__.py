"""The provincial side: reference receiver and fleet view."""
