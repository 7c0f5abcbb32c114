"""Any OpenAI-compatible streaming server as a system under test (vLLM, TGI, SGLang, Ray Serve LLM).

One request is one streamed `POST {base_url}/completions` (or `/chat/completions`). Every chunk
that carries text is one arrival of output; the number of output tokens is the server's own
`usage.completion_tokens` (asked for with `stream_options.include_usage`), else the count of
text chunks (one token per chunk, as these servers stream by default). `ignore_eos` (a vLLM and
SGLang extension, ignored by others) keeps the output length the one asked for.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import httpx

from benchmarks.llm.workload import LLMRequest

OnChunk = Callable[[int], None]


class EndpointError(RuntimeError):
    """A request the server refused or cut off; the message holds the status and the body's start."""


@dataclass
class OpenAIEndpoint:
    base_url: str  # e.g. http://127.0.0.1:8000/v1
    model: str
    api: str = "completions"  # or "chat"
    prompt_format: str = "tokens"  # token ids (exact input lengths) or "text" (one word per token)
    api_key_env: str | None = "OPENAI_API_KEY"  # read from the environment, never stored or printed
    timeout_s: float = 600.0
    extra_body: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        url = urlparse(self.base_url)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise ValueError(f"endpoint {self.base_url!r} must be an http(s) URL such as http://127.0.0.1:8000/v1")
        if self.api not in ("completions", "chat"):
            raise ValueError(f"api must be 'completions' or 'chat', got {self.api!r}")
        if self.prompt_format not in ("tokens", "text"):
            raise ValueError(f"prompt_format must be 'tokens' or 'text', got {self.prompt_format!r}")
        if self.api == "chat" and self.prompt_format == "tokens":
            self.prompt_format = "text"  # chat messages are text
        self._client: httpx.AsyncClient | None = None

    @property
    def name(self) -> str:
        return self.model

    def describe(self) -> dict[str, Any]:
        return {"engine": "openai-http", "api": self.api}

    async def __aenter__(self) -> OpenAIEndpoint:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        # No connection cap: the offered rate, not the client, decides how many requests are open.
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        self._client = httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(self.timeout_s), limits=limits)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _body(self, request: LLMRequest) -> dict[str, Any]:
        prompt: Any = list(request.prompt_tokens)
        if self.prompt_format == "text":
            prompt = " ".join("token" for _ in request.prompt_tokens)
        body: dict[str, Any] = {"model": self.model, "max_tokens": request.max_tokens, "stream": True,
                                "temperature": 0.0, "ignore_eos": True,
                                "stream_options": {"include_usage": True}}
        if self.api == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        body.update(self.extra_body)
        return body

    async def run(self, request: LLMRequest, on_chunk: OnChunk) -> int | None:
        """Stream one request, calling `on_chunk(1)` as each text chunk arrives; returns the output
        token count the server reported (None: it did not)."""
        if self._client is None:
            raise RuntimeError("use `async with OpenAIEndpoint(...)` before run()")
        path = "/chat/completions" if self.api == "chat" else "/completions"
        url = self.base_url.rstrip("/") + path
        usage: int | None = None
        async with self._client.stream("POST", url, json=self._body(request)) as resp:
            if resp.status_code != 200:
                text = (await resp.aread()).decode(errors="replace")[:300]
                raise EndpointError(f"HTTP {resp.status_code} from {url}: {text}")
            done = False
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    done = True
                    break
                try:
                    chunk = json.loads(data)
                except json.JSONDecodeError as exc:
                    raise EndpointError(f"{url} streamed a line that is not JSON: {data[:120]!r}") from exc
                if "error" in chunk:
                    raise EndpointError(f"{url} streamed an error: {str(chunk['error'])[:200]}")
                if _chunk_text(chunk, self.api):
                    on_chunk(1)
                if isinstance(chunk.get("usage"), dict) and chunk["usage"].get("completion_tokens") is not None:
                    usage = int(chunk["usage"]["completion_tokens"])
            if not done:
                raise EndpointError(f"{url} closed the stream before [DONE]")
        return usage


def _chunk_text(chunk: dict[str, Any], api: str) -> str:
    choices = chunk.get("choices") or []
    if not choices:
        return ""
    first = choices[0]
    if api == "chat":
        return (first.get("delta") or {}).get("content") or ""
    return first.get("text") or ""
