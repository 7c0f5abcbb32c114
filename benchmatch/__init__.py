"""benchmatch: measure an AI asset across hardware on Ray, learn how it behaves, recommend hardware."""

__version__ = "0.1.0"
