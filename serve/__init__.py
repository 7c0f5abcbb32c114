"""The benchmatch HTTP service: Ray Serve + FastAPI around the matcher (docs/service.md).

serve.app      routes, middleware, the Serve deployment and `build_app` (serve.app:build_app)
serve.core     data snapshot, reload, caching and error mapping (no HTTP, no Ray)
serve.schemas  OpenAPI models; serve.metrics request metrics; serve.runner `run_service`
serve.testing  synthetic data for the service's tests and perf script

Nothing is imported here: `import serve.core` must not pull in Ray.
"""
