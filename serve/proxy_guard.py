"""Serve's HTTP proxy, guarded: slow clients cannot starve the service, and a request whose
replica died is answered by another.

Serve's proxy hands a request to a replica as soon as its headers are in, and the replica then
pulls the body from the proxy as the client sends it. A client that sends its body a byte at a
time therefore holds one of the replica's `max_ongoing_requests` slots for as long as it likes:
a few dozen such connections fill every slot, legitimate requests queue behind them and, past
`max_queued_requests`, get 503. Headers sent slowly hold a connection (a file descriptor) forever,
since uvicorn only times out idle connections between requests. And when a replica dies, the
requests it had accepted fail with a bare 500, although another replica could answer them.

Here, in the proxy process:

* `ProxyGuard`, an ASGI middleware in front of the proxy, reads the whole body (at most
  `max_body_bytes`, else 413) before the proxy sees the request, within `body_timeout_s` of the
  headers (else 408 and the connection closed). A slow body then costs a coroutine in the proxy,
  never a replica slot. It then holds the answer until it is complete, and sends a request that
  got no answer at all (its replica died) to the proxy again, up to `retries` times.
* `GuardedHTTPProtocol`, the proxy's uvicorn protocol, closes a connection (408) that has not
  completed a request's headers within `header_timeout_s` of connecting, or of the first byte of
  its next request on a kept-alive connection.
* At most `max_slow` connections may be slow at once in each of the two phases. Beyond that, the
  deadline for a new one is `grace_s`: legitimate clients send headers and a requirements
  document within milliseconds, so they never notice, while a crowd of slow connections is shed
  every `grace_s` seconds.

Serve builds its proxy itself; its supported hook is the environment variable
`RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`, naming a function that returns the proxy's Starlette
middlewares and runs in the proxy process before the HTTP server starts: `proxy_middlewares`
below, which also puts the guarded protocol in place of uvicorn's default one. The variable must
be in the environment of the Ray nodes that run proxies (`enable()` sets it for a Ray this process
starts; k8s/rayservice.yaml sets it on the pods). Limits come from `BENCHMATCH_PROXY_*` variables
(`settings()`). Nothing here imports more than the standard library and Starlette: the proxy stays
light.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from typing import Any

CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
CALLBACK = "serve.proxy_guard:proxy_middlewares"
PREFIX = "BENCHMATCH_PROXY_"


@dataclass(frozen=True)
class GuardSettings:
    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    max_body_bytes: int = 1 << 20  # the service's own default limit (serve.core.MAX_BODY_BYTES)
    max_slow: int = 256  # per phase; well under a proxy's usual 1024 file descriptors
    grace_s: float = 1.0
    # Of a request Serve could not answer (its replica died). One: a request that itself kills
    # replicas (a query of death) then takes two of them, not three.
    retries: int = 1


def settings(environ: dict[str, str] | None = None) -> GuardSettings:
    """GuardSettings from BENCHMATCH_PROXY_HEADER_TIMEOUT_S, _BODY_TIMEOUT_S, _MAX_BODY_BYTES,
    _MAX_SLOW, _GRACE_S; a value that is not a positive number is an error naming the variable."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name, default in GuardSettings().__dict__.items():
        raw = env.get(PREFIX + name.upper())
        if raw is None:
            continue
        try:
            value = type(default)(raw)
        except ValueError:
            value = None
        if value is None or value < 0 or (value == 0 and name != "retries"):
            what = "a whole number >= 0" if name == "retries" else f"a positive {type(default).__name__}"
            raise ValueError(f"{PREFIX + name.upper()}={raw!r}: expected {what}")
        values[name] = value
    return GuardSettings(**values)


def enable(environ: dict[str, str] | None = None) -> None:
    """Have the proxies of a Ray started from this process (after this call) use the guard."""
    env = os.environ if environ is None else environ
    env.setdefault(CALLBACK_ENV, CALLBACK)


def _error(status: int, kind: str, detail: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The service's error shape (serve.core.ServiceError.body), without importing serve.core."""
    body = json.dumps({"detail": detail, "kind": kind, "status": status}).encode()
    return body, [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                  (b"connection", b"close")]


class _Slow:
    """How many connections are slow in one phase right now."""

    def __init__(self) -> None:
        self.count = 0


# ----------------------------------------------------------------------------------------------
# The body: read it all before the request goes to a replica; the answer: retried when none came
# ----------------------------------------------------------------------------------------------


class ProxyGuard:
    """ASGI middleware in front of Serve's proxy.

    It hands the proxy a request whose body is complete, and holds the answer until it is
    complete. Serve's proxy answers nothing at all (uvicorn then sends a bare 500) when the
    replica it chose dies with the request, or cannot be reached: then, while the client is still
    connected, the request goes to the proxy again, at most `retries` times, and Serve's router,
    which has meanwhile struck the dead replica off, picks a live one. Every route of this service
    is a pure function of its request (no route changes anything), so a request that may have
    run on the dead replica runs again safely. Answers that did come, any status included (a 503
    for back-pressure, a 408 timeout, the app's own 500), are passed on unchanged."""

    def __init__(self, app: Any, guard: GuardSettings | None = None) -> None:
        self.app = app
        self.guard = guard or settings()
        self.slow = _Slow()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.guard.max_body_bytes:
            await self._reply(send, 413, "RequestTooLarge", self._too_large())
            return
        outcome = await self._read(receive)
        if isinstance(outcome, tuple):
            if outcome[0]:
                await self._reply(send, *outcome)
            return
        await self._dispatch(scope, outcome, receive, send)

    async def _dispatch(self, scope: dict[str, Any], body: bytes, receive: Any, send: Any) -> None:
        client_left = False

        async def receive_after_body() -> dict[str, Any]:
            nonlocal client_left
            message = await receive()  # after the body: only the client's disconnect
            client_left = client_left or message["type"] == "http.disconnect"
            return message

        def replaying() -> Any:
            replay = [{"type": "http.request", "body": body, "more_body": False}]

            async def receive_buffered() -> dict[str, Any]:
                return replay.pop() if replay else await receive_after_body()

            return receive_buffered

        for attempt in range(self.guard.retries + 1):
            answer = _Answer(send)
            try:
                # A copy per attempt: the proxy's own middleware adds headers to the scope.
                await self.app({**scope, "headers": list(scope.get("headers") or [])}, replaying(), answer.send)
            except Exception:
                if answer.passed_on:
                    raise
            if answer.passed_on:
                return
            if client_left:
                return
            if attempt < self.guard.retries:
                await asyncio.sleep(0.05 * (attempt + 1))  # the router learns of the death meanwhile
        await self._reply(send, 503, "ServiceUnavailable",
                          f"no replica could answer ({self.guard.retries + 1} attempts); retry shortly",
                          retry_after=True)

    async def _read(self, receive: Any) -> bytes | tuple[int, str, str]:
        """The body, or (status, kind, detail) to answer instead; (0, ...) when the client left."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        chunks: list[bytes] = []
        size = 0
        slow = False
        try:
            while True:
                if slow:
                    wait = start + self.guard.body_timeout_s - loop.time()
                else:
                    wait = min(self.guard.grace_s, self.guard.body_timeout_s) - (loop.time() - start)
                try:
                    async with asyncio.timeout(max(wait, 0.0)):  # no extra task, unlike wait_for
                        message = await receive()
                except TimeoutError:
                    if slow or self.guard.grace_s >= self.guard.body_timeout_s:
                        return self._timed_out()
                    if self.slow.count >= self.guard.max_slow:
                        return self._timed_out(crowded=True)
                    slow = True
                    self.slow.count += 1
                    continue
                if message["type"] == "http.disconnect":
                    return (0, "", "")
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                if size > self.guard.max_body_bytes:
                    return (413, "RequestTooLarge", self._too_large())
                if not message.get("more_body", False):
                    return b"".join(chunks)
        finally:
            if slow:
                self.slow.count -= 1

    def _timed_out(self, crowded: bool = False) -> tuple[int, str, str]:
        limit = self.guard.grace_s if crowded else self.guard.body_timeout_s
        why = f" ({self.guard.max_slow} slow requests are being read already)" if crowded else ""
        return (408, "RequestTimeout", f"the request body did not arrive within {limit:g} s{why}; "
                                       "send the whole body at once")

    def _too_large(self) -> str:
        return (f"request body is larger than {self.guard.max_body_bytes} bytes; "
                "a requirements document is a few hundred bytes")

    @staticmethod
    async def _reply(send: Any, status: int, kind: str, detail: str, retry_after: bool = False) -> None:
        body, headers = _error(status, kind, detail)
        if retry_after:
            headers.append((b"retry-after", b"1"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _Answer:
    """Holds an answer's messages until its last body message, then passes them all on; one larger
    than MAX_HELD_BYTES is passed on as it comes (and can then no longer be retried)."""

    MAX_HELD_BYTES = 8 << 20

    def __init__(self, send: Any) -> None:
        self._send = send
        self._held: list[dict[str, Any]] = []
        self._size = 0
        self.passed_on = False

    async def send(self, message: dict[str, Any]) -> None:
        if self.passed_on:
            await self._send(message)
            return
        self._held.append(message)
        if message["type"] != "http.response.body":
            return
        self._size += len(message.get("body", b""))
        if not message.get("more_body", False) or self._size > self.MAX_HELD_BYTES:
            self.passed_on = True
            held, self._held = self._held, []
            for m in held:
                await self._send(m)


# ----------------------------------------------------------------------------------------------
# The headers: a deadline per request, in uvicorn's protocol
# ----------------------------------------------------------------------------------------------


class _HeaderDeadline:
    """Mixin for uvicorn's HTTP protocols. Both start a new `cycle` when a request's headers are
    complete: httptools in `on_headers_complete`, h11 in `handle_events`."""

    guard: GuardSettings = GuardSettings()
    slow = _Slow()
    _bm_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._bm_arm()

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle  # type: ignore[attr-defined]
        if self._bm_timer is None and (cycle is None or cycle.response_complete):
            self._bm_arm()  # the first bytes of the next request on a kept-alive connection
        super().data_received(data)  # type: ignore[misc]

    def on_headers_complete(self) -> None:  # httptools
        self._bm_disarm()
        super().on_headers_complete()  # type: ignore[misc]

    def handle_events(self) -> None:  # h11
        before = self.cycle  # type: ignore[attr-defined]
        super().handle_events()  # type: ignore[misc]
        if self.cycle is not before:  # type: ignore[attr-defined]
            self._bm_disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._bm_disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def _bm_arm(self) -> None:
        crowded = self.slow.count >= self.guard.max_slow
        wait = min(self.guard.grace_s, self.guard.header_timeout_s) if crowded else self.guard.header_timeout_s
        self.slow.count += 1
        self._bm_timer = self.loop.call_later(wait, self._bm_expired)  # type: ignore[attr-defined]

    def _bm_disarm(self) -> None:
        if self._bm_timer is not None:
            self._bm_timer.cancel()
            self._bm_timer = None
            self.slow.count -= 1

    def _bm_expired(self) -> None:
        self._bm_timer = None
        self.slow.count -= 1
        transport = self.transport  # type: ignore[attr-defined]
        if transport is None or transport.is_closing():
            return
        body, headers = _error(408, "RequestTimeout", "the request headers did not arrive in time")
        head = b"HTTP/1.1 408 Request Timeout\r\n" + b"".join(k + b": " + v + b"\r\n" for k, v in headers)
        transport.write(head + b"\r\n" + body)
        transport.close()


def guarded_protocol(guard: GuardSettings | None = None, base: type | None = None) -> type:
    """uvicorn's default HTTP protocol (httptools when installed, else h11) with header deadlines,
    counting its own slow connections."""
    if base is None:
        from uvicorn.protocols.http.auto import AutoHTTPProtocol

        base = AutoHTTPProtocol
    return type(f"Guarded{base.__name__}", (_HeaderDeadline, base),
                {"guard": guard or settings(), "slow": _Slow()})


GuardedHTTPProtocol: type | None = None


def install_protocol(guard: GuardSettings | None = None) -> type:
    """Make uvicorn servers configured with the default protocol (`http="auto"`, as Serve's proxy
    is) use the guarded one. Call before the server starts: uvicorn resolves it in Config.load()."""
    global GuardedHTTPProtocol
    from uvicorn import config as uvicorn_config

    GuardedHTTPProtocol = guarded_protocol(guard)
    uvicorn_config.HTTP_PROTOCOLS["auto"] = f"{__name__}:GuardedHTTPProtocol"
    return GuardedHTTPProtocol


def proxy_middlewares() -> list[Any]:
    """Serve's HTTP proxy callback (RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH): runs in the proxy
    process before its HTTP server starts."""
    from starlette.middleware import Middleware

    guard = settings()
    install_protocol(guard)
    return [Middleware(ProxyGuard, guard=guard)]
