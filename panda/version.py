"""panda's version, written into every factor file (the bottom layer: imports nothing)."""

__version__ = "0.1.0"
