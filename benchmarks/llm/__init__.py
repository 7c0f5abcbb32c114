"""LLM serving benchmarks: a generative model measured as a server is (TTFT, TPOT, ITL, tokens/s,
goodput, the highest arrival rate within a TTFT/TPOT SLO).

workload.py: request lengths and arrival times; endpoint.py: any OpenAI-compatible streaming
HTTP server; local.py: a generative asset run in-process; harness.py: drives either at offered
rates and summarises; rows.py: result rows for the results store. docs/llm-serving.md explains.
"""
