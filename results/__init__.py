"""The records between the stages: the result-row schema, the store, trial ids, import from other
tools and export, and row summaries.

Data flows one way, `cluster → benchmarks → results ← matcher ← serve`: measuring writes rows here,
the matcher reads them, and nothing here imports `benchmarks` or `matcher`.
"""
