"""The CLI's HTTP client of the API: where it is and which key to use, and its answers as one-line failures.

Base URL: ``--api-url``, else ``IMAGEJOBS_API_URL``, else ``http://127.0.0.1:$IMAGEJOBS_API_PORT`` (8000) as
``make run`` serves it. Key: ``--api-key``, else ``IMAGEJOBS_API_KEY``, else the first of ``IMAGEJOBS_API_KEYS``
(the environment, or ``var/local.env`` written by ``make run``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import httpx

from producer.cli.failures import CliError
from producer.cli.local_env import read_local_env

DEFAULT_API_PORT = "8000"


@dataclass(frozen=True)
class Target:
    base_url: str
    api_key: str


def resolve_target(api_url: str | None, api_key: str | None, environ: Mapping[str, str] = os.environ) -> Target:
    local = read_local_env()

    def setting(name: str) -> str | None:
        return environ.get(name) or local.get(name) or None

    url = api_url or setting("IMAGEJOBS_API_URL") or f"http://127.0.0.1:{setting('IMAGEJOBS_API_PORT') or 8000}"
    if not url.startswith(("http://", "https://")):
        raise CliError(f"--api-url / IMAGEJOBS_API_URL must be an http(s) URL, not {url!r}", exit_code=2)
    key = api_key or setting("IMAGEJOBS_API_KEY") or (setting("IMAGEJOBS_API_KEYS") or "").split(",")[0].strip()
    if not key:
        raise CliError(
            "no API key: pass --api-key, set IMAGEJOBS_API_KEY, or start the local stack (make run)", exit_code=2
        )
    return Target(base_url=url.rstrip("/"), api_key=key)


class ApiClient:
    """One ``httpx.Client`` to the API; every failure (unreachable, 4xx/5xx) is a ``CliError`` naming it."""

    def __init__(self, target: Target, *, timeout_s: float = 30.0, transport: httpx.BaseTransport | None = None):
        self.base_url = target.base_url
        self._http = httpx.Client(
            base_url=target.base_url,
            headers={"Authorization": f"Bearer {target.api_key}"},
            timeout=timeout_s,
            transport=transport,
        )

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self._http.close()

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self._json(self._send("GET", path, params=params))

    def post(self, path: str, body: Mapping[str, Any] | None = None) -> Any:
        return self._json(self._send("POST", path, json=body))

    def download(self, url: str) -> bytes:
        """A result image (a signed URL: absolute, or relative to the API)."""
        return self._send("GET", urljoin(self.base_url + "/", url)).content

    def _send(self, method: str, path: str, **options: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **options)
        except httpx.TimeoutException:
            raise CliError(f"the API at {self.base_url} did not answer in time") from None
        except httpx.HTTPError as exc:
            where = self.base_url if path.startswith("/") else path.split("?")[0]  # never a URL's signature
            raise CliError(f"cannot reach the API at {where}: {exc}") from None
        if response.status_code >= 400:
            raise CliError(error_line(response))
        return response

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise CliError(f"the API answered {response.status_code} without JSON") from None


def error_line(response: httpx.Response) -> str:
    """``400 invalid_parameter (n): message`` from the API's OpenAI-style error body, or the status alone."""
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    if not isinstance(error, dict) or not error.get("message"):
        return f"the API answered {response.status_code} {response.reason_phrase}"
    code = f" {error['code']}" if error.get("code") else ""
    param = f" ({error['param']})" if error.get("param") else ""
    return f"{response.status_code}{code}{param}: {error['message']}"
