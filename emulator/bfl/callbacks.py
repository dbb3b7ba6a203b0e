"""BFL's webhooks: a task submitted with ``webhook_url`` POSTs its end there (``Ready``, ``Error``, moderated).

The payload format is UNVERIFIED (BFL's docs do not describe it); third-party notes describe
``{id, status, result, timestamp}``, so the body is the poll's answer at the end
(``id, status, result, progress, details, preview``) plus ``timestamp`` (ISO 8601). With ``webhook_secret`` it
is signed as those notes describe (also UNVERIFIED): ``X-BFL-Signature: sha256=<hex HMAC-SHA256(secret, body)>``.
Hanging tasks never end, so never call back.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from datetime import UTC, datetime
from typing import Any

from emulator.bfl.tasks import ERROR, READY, BflTask
from emulator.callbacks import CallbackSender, Signer
from emulator.knobs import CallbackKnobs

SIGNATURE_HEADER = "x-bfl-signature"


def schedule_webhook(
    sender: CallbackSender,
    task: BflTask,
    *,
    url: str,
    secret: str | None,
    result: dict[str, Any] | None,
    knobs: CallbackKnobs,
) -> bool:
    """Schedule the task's webhook at its end (``result``: the ``Ready`` answer's); False if it never ends."""
    if not math.isfinite(task.ends_at):
        return False
    sender.schedule(url, task.ends_at, lambda: webhook_payload(task, result), knobs=knobs, sign=_signer(secret))
    return True


def webhook_payload(task: BflTask, result: dict[str, Any] | None) -> dict[str, Any]:
    status = task.outcome
    if status == READY:
        details: Any = None
    elif status == ERROR:
        details = {"error": "Generation failed, please try again."}
    else:
        details = {"Moderation Reasons": ["Emulated moderation"]}
    return {
        "id": task.task_id,
        "status": status,
        "result": result if status == READY else None,
        "progress": None,
        "details": details,
        "preview": None,
        "timestamp": datetime.fromtimestamp(task.ends_at, tz=UTC).isoformat().replace("+00:00", "Z"),
    }


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _signer(secret: str | None) -> Signer | None:
    if not secret:
        return None
    return lambda body: {SIGNATURE_HEADER: signature(secret, body)}
