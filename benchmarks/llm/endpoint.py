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
# Short, common English words: one token each in the usual BPE vocabularies (with a leading space).
WORDS = tuple("""the of and to in is that it for was on are as with his they at be this from have or by one had
not but what all were when we there can an your which their said if do will each about how up out them then she
many some so these would other into has more her two like him see time could no make than first been its who now
people my made over did down only way find use may water long little very after words called just where most know
get through back much go good new write our me man too any day same right look think also around another came come
work three word must because does part even place well such here take why things help put years different away
again off went old number great tell men say small every found still between name should home big give air line set
own under read last never us left end along while might next sound below saw something thought both few those
always looked show large often together asked house world going want school important until form food keep children
feet land side without boy once animals life enough took sometimes four head above kind began almost live page got
earth need far hand high year mother light parts country father let night following picture being study second eyes
soon times story boys since white days ever paper hard near sentence better best across during today others sure
means knew its try told young miles sun ways thing whole hear example heard several change answer room sea against
top turned learn point city play toward five using himself usually""".split())


class EndpointError(RuntimeError):
    """A request the server refused or cut off; the message holds the status and the body's start."""


@dataclass
class OpenAIEndpoint:
    base_url: str  # e.g. http://127.0.0.1:8000/v1
    model: str
    api: str = "completions"  # or "chat"
    prompt_format: str = "tokens"  # token ids (exact input lengths) or "text" (one word per token)
    # The environment variable holding the API key (opt-in: a key exported for another service must
    # not travel to whatever endpoint is benchmarked); never stored or printed.
    api_key_env: str | None = None
    timeout_s: float = 600.0
    extra_body: dict[str, Any] = field(default_factory=dict)
    transport: Any = None  # an httpx transport (tests); None: the network

    def __post_init__(self) -> None:
        url = urlparse(self.base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"endpoint {self.base_url!r} must be an http(s) URL such as http://127.0.0.1:8000/v1")
        if url.username or url.password:
            # it would be stored in the rows (asset_ref) and printed in errors
            raise ValueError("the endpoint URL must not hold credentials; put the key in an environment variable "
                             "and name it with --api-key-env")
        if self.api_key_env:
            if not os.environ.get(self.api_key_env):
                raise ValueError(f"--api-key-env {self.api_key_env}: that environment variable is not set")
            if url.scheme == "http" and url.hostname not in ("127.0.0.1", "localhost", "::1"):
                raise ValueError(f"an API key would travel in clear text to {url.hostname}; use https, or a "
                                 "loopback endpoint")
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
        self._client = httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(self.timeout_s), limits=limits,
                                         transport=self.transport)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _body(self, request: LLMRequest) -> dict[str, Any]:
        prompt: Any = list(request.prompt_tokens)
        if self.prompt_format == "text":
            # one common word per intended token, picked by the request's own random ids, so that
            # prompts differ from the first word on (a prefix cache cannot answer them)
            prompt = " ".join(WORDS[t % len(WORDS)] for t in request.prompt_tokens)
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
                body = b""
                async for part in resp.aiter_bytes():  # at most the start of an error body
                    body += part
                    if len(body) >= 2048:
                        break
                raise EndpointError(f"HTTP {resp.status_code} from {url}: {body.decode(errors='replace')[:300]}")
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
                if not isinstance(chunk, dict):
                    raise EndpointError(f"{url} streamed {type(chunk).__name__} where a JSON object belongs: "
                                        f"{data[:120]!r}")
                if chunk.get("error") is not None:
                    raise EndpointError(f"{url} streamed an error: {str(chunk['error'])[:200]}")
                if _chunk_text(chunk, self.api):
                    on_chunk(1)
                reported = chunk.get("usage", {}).get("completion_tokens") if isinstance(chunk.get("usage"), dict) \
                    else None
                if isinstance(reported, int) and not isinstance(reported, bool):
                    usage = reported
            if not done:
                raise EndpointError(f"{url} closed the stream before [DONE]")
        # A count no request can have (0 or negative, or beyond what was asked) is not believed:
        # the chunks are counted instead.
        return usage if usage is not None and 0 < usage <= request.max_tokens else None


def _chunk_text(chunk: dict[str, Any], api: str) -> str:
    choices = chunk.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return ""
    first = choices[0]
    if api == "chat":
        delta = first.get("delta")
        text = delta.get("content") if isinstance(delta, dict) else None
    else:
        text = first.get("text")
    return text if isinstance(text, str) else ""
