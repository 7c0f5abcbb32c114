"""The benchmatch HTTP service: Ray Serve + FastAPI around the matcher (docs/service.md).

serve.app      routes, middleware, the Serve deployment and `build_app` (serve.app:build_app)
serve.core     handlers and the mapping of errors to HTTP statuses (no HTTP, no Ray)
serve.snapshot the data (one matcher Workspace), its fingerprint and single-flight reload
serve.jsonable JSON-safe answers (NaN -> null, numpy -> builtins)
serve.schemas  OpenAPI models; serve.metrics request metrics; serve.runner `run_service`

Nothing is imported here: `import serve.core` must not pull in Ray.
"""
