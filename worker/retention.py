"""The beat task's step: delete what retention says has expired (``shared.retention``), with the worker's clock."""

from __future__ import annotations

from shared.retention import Purged, purge_expired
from worker.runtime import Runtime


def purge(*, rt: Runtime) -> Purged:
    return purge_expired(engine=rt.engine, storage=rt.storage, retention=rt.settings.retention, now=rt.clock())
