"""Fixtures for the e2e layer: the whole stack as subprocesses (API, worker, beat) plus the session emulator.

The building blocks live in ``tests.integration.harness`` and are shared with the integration layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.integration.harness import (
    Emulator,
    ProcessesFactory,
    Rows,
    emulator,
    files_dir,
    isolated_redis_url,
    processes,
    rows_for,
    webhook_receiver,
)
from tests.support import API_KEY, free_port

__all__ = ["emulator", "files_dir", "isolated_redis_url", "processes", "rows_for", "webhook_receiver"]


@dataclass
class Stack:
    api_url: str
    rows: Rows
    emulator: Emulator

    def get(self, path: str, **params: str) -> httpx.Response:
        return httpx.get(
            f"{self.api_url}{path}", params=params, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
        )

    def task(self, task_id: str) -> dict[str, Any]:
        response = self.get(f"/v1/images/generations/{task_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture
def start_stack(processes: ProcessesFactory, rows_for: Any, emulator: Emulator) -> Callable[[str], Stack]:
    """``start_stack(database_url)``: API (sync wait 60 s), worker and beat, all against one Redis DB and database."""

    def start(database_url: str) -> Stack:
        port = free_port()
        stack = processes(
            database_url,
            IMAGEJOBS_API_PORT=str(port),
            IMAGEJOBS_PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
            IMAGEJOBS_SYNC_TIMEOUT_S="60",
        )
        stack.worker()
        stack.beat()
        api_url = stack.api()
        return Stack(api_url=api_url, rows=rows_for(database_url), emulator=emulator)

    return start
