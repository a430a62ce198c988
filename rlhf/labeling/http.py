"""A small HTTP client for Argilla's REST API (``/api/v1``), with retries and one-line errors.

Why not only the SDK: annotators get 403 from the SDK's dataset and record calls, the SDK drops the ranks of
ranking responses when it reads them, and logging a ranking through it needs a form the SDK rejects; the raw
API has none of these problems. The SDK stays available through ``connection.sdk_client``.

Retries (``retries`` times, exponential back-off from 0.25 s, capped at 4 s):

* a request that never reached the server (connection refused, connect or pool timeout): always;
* a failure after sending (read timeout, connection reset) or a 502/503/504 answer: for idempotent
  requests only (GET, PUT, DELETE, and POSTs marked ``idempotent=True`` such as searches and bulk upserts).
  A non-idempotent POST that fails after sending raises :class:`OutcomeUnknownError` instead: the caller
  knows whether repeating it is safe (``submit_response`` does, see ``responses.py``).

Any other non-2xx answer raises :class:`ArgillaAPIError` (a ``UserError``: the CLI prints it as one line)
carrying the status code and the server's ``detail``.

On a loopback URL (the embedded service) responses are asked for uncompressed (``Accept-Encoding:
identity``): Argilla compresses every answer over 512 bytes, which costs CPU on both sides of a connection
that needs no saving. Measured on the embedded service (2 cores, load average about 10): the annotator queue page (50 records, 26 kB) took
34 ms instead of 48 ms, and an export page of 1,000 records with responses 0.54 s of server CPU instead of
0.83 s. Other URLs keep httpx's default (gzip).
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
from typing_extensions import Self

from rlhf.core.errors import UserError

__all__ = ["ArgillaAPIError", "ArgillaHTTP", "OutcomeUnknownError"]

RETRY_STATUSES = (502, 503, 504)
IDEMPOTENT_METHODS = ("GET", "HEAD", "PUT", "DELETE", "OPTIONS")


class ArgillaAPIError(UserError):
    """A non-2xx answer from Argilla."""

    def __init__(self, method: str, path: str, status: int, detail: Any):
        self.method = method
        self.path = path
        self.status = status
        self.detail = detail
        text = str(detail)
        super().__init__(f"Argilla {method} {path} answered HTTP {status}: {text[:300]}")


class OutcomeUnknownError(UserError):
    """A non-idempotent request failed after it was sent (timeout, connection reset): it may have taken effect."""


def is_loopback(url: str) -> bool:
    """Whether ``url`` points at this machine (localhost or a loopback address)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _detail(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()
    return body.get("detail", body) if isinstance(body, dict) else body


class ArgillaHTTP:
    """JSON over HTTP to one Argilla, authenticated by an API key (``X-Argilla-Api-Key``)."""

    def __init__(
        self,
        api_url: str,
        api_key: str,
        timeout_s: float = 30.0,
        retries: int = 4,
        transport: httpx.BaseTransport | None = None,
    ):
        self.api_url = api_url.rstrip("/")
        self.retries = retries
        headers = {"X-Argilla-Api-Key": api_key}
        if is_loopback(self.api_url):
            headers["Accept-Encoding"] = "identity"
        self._client = httpx.Client(
            base_url=self.api_url,
            headers=headers,
            timeout=timeout_s,
            transport=transport,
            # below the server's keep-alive (uvicorn's 5 s, 30 s in the embedded service), so a request is
            # never sent on a connection the server is closing
            limits=httpx.Limits(keepalive_expiry=2.0),
        )

    def __repr__(self) -> str:
        return f"ArgillaHTTP({self.api_url!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        idempotent: bool | None = None,
    ) -> httpx.Response:
        """Send a request with the retry policy above; the response of a 2xx answer."""
        method = method.upper()
        safe = method in IDEMPOTENT_METHODS if idempotent is None else idempotent
        attempt = 0
        while True:
            try:
                response = self._client.request(method, path, json=json, params=params, data=data)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as err:
                failure: Exception = err  # never reached the server
            except httpx.TransportError as err:
                if not safe:
                    raise OutcomeUnknownError(f"Argilla {method} {path} failed after it was sent "
                                              f"({err.__class__.__name__}); it may or may not have taken effect") from None
                failure = err
            else:
                if response.status_code in RETRY_STATUSES and safe and attempt < self.retries:
                    failure = ArgillaAPIError(method, path, response.status_code, _detail(response))
                elif response.is_success:
                    return response
                else:
                    raise ArgillaAPIError(method, path, response.status_code, _detail(response))
            if attempt >= self.retries:
                if isinstance(failure, ArgillaAPIError):
                    raise failure
                raise UserError(f"cannot reach Argilla at {self.api_url} ({failure.__class__.__name__}: {failure}); "
                                "check that the service is running ('rlhf label serve status')") from None
            time.sleep(min(4.0, 0.25 * 2**attempt))
            attempt += 1

    def _json(self, response: httpx.Response) -> Any:
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self._json(self.request("GET", path, params=params))

    def post(self, path: str, json: Any = None, params: dict[str, Any] | None = None, idempotent: bool = False) -> Any:
        return self._json(self.request("POST", path, json=json, params=params, idempotent=idempotent))

    def put(self, path: str, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        return self._json(self.request("PUT", path, json=json, params=params))

    def patch(self, path: str, json: Any = None) -> Any:
        return self._json(self.request("PATCH", path, json=json, idempotent=True))

    def delete(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self._json(self.request("DELETE", path, params=params))
