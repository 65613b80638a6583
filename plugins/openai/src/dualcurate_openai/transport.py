"""Two ways to POST a chat request and read the JSON back, with one error vocabulary.

* :class:`AiohttpTransport` (default): one ``aiohttp.ClientSession`` with a connection pool
  sized to the concurrency, JSON in and out. Measured on the 2-core benchmark machine at
  C=256: about 0.3 ms of CPU per request.
* :class:`OpenAISDKTransport`: ``AsyncOpenAI`` on the SDK's aiohttp transport
  (``DefaultAioHttpClient``), posting the same body. About 0.9 ms per request (the SDK's
  request and response machinery), which on a busy machine leaves fewer requests in flight.

Both raise :class:`HTTPStatusError`, :class:`RequestTimeout` or :class:`ConnectError`, so
the retry policy is written once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


class TransportError(Exception):
    """A failed request; ``retryable`` says whether sending it again may help."""


class HTTPStatusError(TransportError):
    """The server answered with an error status."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


class RequestTimeout(TransportError):
    """No complete answer within the timeout."""


class ConnectError(TransportError):
    """The connection failed or broke."""


def error_message(body: str) -> str:
    """The human part of an error body (OpenAI-style ``{"error": {"message": ...}}``)."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()[:500]
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:500]
        if isinstance(err, str):
            return err[:500]
        if data.get("detail"):
            return str(data["detail"])[:500]
    return body.strip()[:500]


def env_proxy(url: str) -> str | None:
    """The proxy the environment (HTTP(S)_PROXY, NO_PROXY) sets for ``url``, if any."""
    import urllib.request
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.hostname and urllib.request.proxy_bypass(parts.hostname):
        return None
    return urllib.request.getproxies().get(parts.scheme)


class AiohttpTransport:
    """POSTs JSON with aiohttp; create and use it inside one event loop."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float, max_connections: int):
        import aiohttp

        self.url = f"{base_url.rstrip('/')}/chat/completions"
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        # trust_env would look up netrc and proxies in a thread for every request: read the
        # proxy settings once instead.
        self.proxy = env_proxy(self.url)
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max_connections, keepalive_timeout=60),
            timeout=aiohttp.ClientTimeout(total=timeout))

    async def post(self, body: dict[str, Any]) -> Any:
        import aiohttp

        try:
            async with self.session.post(self.url, data=json.dumps(body).encode(),
                                         headers=self.headers, proxy=self.proxy) as response:
                if response.status >= 400:
                    text = await response.text(errors="replace")
                    raise HTTPStatusError(response.status, error_message(text),
                                          response.headers)
                return await response.json(content_type=None)
        except TimeoutError as exc:
            raise RequestTimeout(str(exc) or "timed out") from exc
        except aiohttp.ClientError as exc:
            raise ConnectError(str(exc) or type(exc).__name__) from exc

    async def close(self) -> None:
        await self.session.close()


def _connection_error(exc: BaseException) -> BaseException | None:
    """The aiohttp connection error (not a timeout) behind ``exc``, if there is one."""
    import aiohttp

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, aiohttp.ServerTimeoutError | TimeoutError):
            return None
        if isinstance(current, aiohttp.ClientConnectionError):
            return current
        current = current.__cause__ or current.__context__
    return None


class OpenAISDKTransport:
    """POSTs through ``AsyncOpenAI`` (SDK retries off: the engine retries)."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float, max_connections: int):
        import httpx2
        from openai import AsyncOpenAI, DefaultAioHttpClient

        http = DefaultAioHttpClient(timeout=timeout, limits=httpx2.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections))
        # Local servers need no key, but the SDK insists on one: send a placeholder.
        self.client = AsyncOpenAI(base_url=base_url, api_key=api_key or "EMPTY", max_retries=0,
                                  timeout=timeout, http_client=http)

    async def post(self, body: dict[str, Any]) -> Any:
        import openai

        try:
            # create() would walk every message through the SDK's TypedDict transform (over
            # 1 ms per request); the body is plain JSON already, so post it as it is.
            return await self.client.post("/chat/completions", body=body, cast_to=object)
        except openai.APIStatusError as exc:
            raise HTTPStatusError(exc.status_code, exc.message, exc.response.headers) from exc
        except openai.APITimeoutError as exc:
            # The SDK's aiohttp transport maps every aiohttp connection error (a dropped
            # connection included) to a connect timeout: report what really happened.
            dropped = _connection_error(exc)
            if dropped is not None:
                raise ConnectError(str(dropped) or type(dropped).__name__) from exc
            raise RequestTimeout("timed out") from exc
        except openai.APIConnectionError as exc:
            raise ConnectError(str(exc.__cause__ or exc)) from exc

    async def close(self) -> None:
        await self.client.close()


TRANSPORTS = {"aiohttp": AiohttpTransport, "openai-sdk": OpenAISDKTransport}
