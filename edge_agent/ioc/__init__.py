"""The provincial side: the receiver, its stores, holes, the fleet table and view, commands."""
