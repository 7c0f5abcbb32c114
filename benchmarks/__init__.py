"""Measure: assets, the measurement core (runs without Ray), the Ray Tune sweep, the results store."""
