"""Magic prompt markers: tokens such as ``[fail]`` or ``[latency=0.5]`` that script one request.

The markers are parsed case-insensitively anywhere in the prompt and are left in the prompt (the
upstreams would see them as ordinary text). Unparseable ``[latency=…]`` values and unknown
``[answer=…]`` names are ignored.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# What `[garbage]` answers: HTTP 200, `text/html`, not JSON (a misbehaving proxy in front of the API).
GARBAGE_HTML = "<html><head><title>Gateway</title></head><body><h1>upstream says hi</h1></body></html>"

_MARKER = re.compile(
    r"\[(fail|moderated-async|moderated|429|quota|500|garbage|hang|latency=[^\]]*|(?:poll-)?answer=[^\]]*)\]", re.I
)


@dataclass(frozen=True, slots=True)
class Markers:
    """What the prompt asks the emulator to do with this request."""

    fail: bool = False
    moderated: bool = False
    moderated_async: bool = False
    rate_limited: bool = False
    quota: bool = False
    server_error: bool = False
    garbage: bool = False
    hang: bool = False
    latency_s: float | None = None
    #: ``[answer=NAME]``: the submit is answered with ``emulator.broken_answers.BROKEN_ANSWERS[NAME]``
    answer: str | None = None
    #: ``[poll-answer=NAME]``: every poll of the task is answered with that broken answer
    poll_answer: str | None = None


def _parse_latency(raw: str) -> float | None:
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def parse_markers(prompt: str) -> Markers:
    """Collect every marker in ``prompt`` (the last ``[latency=S]`` wins)."""
    flags: set[str] = set()
    latency: float | None = None
    answers: dict[str, str] = {}
    for match in _MARKER.finditer(prompt):
        token = match.group(1).lower()
        if "answer=" in token:
            kind, _, name = token.partition("=")
            answers[kind] = name.strip()
        elif token.startswith("latency="):
            parsed = _parse_latency(token.removeprefix("latency="))
            latency = parsed if parsed is not None else latency
        else:
            flags.add(token)
    return Markers(
        fail="fail" in flags,
        moderated="moderated" in flags,
        moderated_async="moderated-async" in flags,
        rate_limited="429" in flags,
        quota="quota" in flags,
        server_error="500" in flags,
        garbage="garbage" in flags,
        hang="hang" in flags,
        latency_s=latency,
        answer=answers.get("answer"),
        poll_answer=answers.get("poll-answer"),
    )
