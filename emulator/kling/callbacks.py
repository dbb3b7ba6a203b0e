"""Kling's callbacks: a task created with ``callback_url`` POSTs itself there on every status change.

Kling's callback protocol: https://app.klingai.com/global/dev/document-api.

The body is the legacy-format payload — the task object as a query would answer it at that moment (``task_id,
task_status, task_status_msg, task_info, created_at, updated_at, task_result``, ``final_unit_deduction`` on
success) — sent at creation (``submitted``), when ``processing`` starts and when the task ends (a hanging task
never ends). Kling's optional Standard Webhooks signature (configured in its console) is not emulated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from emulator.callbacks import CallbackSender
from emulator.kling.tasks import KlingTask
from emulator.knobs import CallbackKnobs

#: the task is described this long after its status change (so the change has certainly happened)
_AFTER_S = 1e-3

#: ``(task, at)`` → the task object as a query at unix time ``at`` would answer it
TaskObject = Callable[[KlingTask, float], dict[str, Any]]


def schedule_callbacks(
    sender: CallbackSender, task: KlingTask, *, task_object: TaskObject, knobs: CallbackKnobs
) -> int:
    """Schedule the task's callbacks (none without ``callback_url``); returns how many status changes it has."""
    url = task.request.callback_url
    if not url:
        return 0
    changes = task.status_changes()
    for at in changes:
        sender.schedule(url, at, _payload(task_object, task, at + _AFTER_S), knobs=knobs)
    return len(changes)


def _payload(task_object: TaskObject, task: KlingTask, at: float) -> Callable[[], dict[str, Any]]:
    return lambda: task_object(task, at)
