"""What the markers and the fault knobs do before a dialect generates: front-door faults and generation time.

Every dialect answers the same faults in the same order (markers first, then the random rates); only the
answers differ, so each dialect passes its own. Kling keeps its own order (``kling.KlingEmulator._front_door``).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from fastapi import Response
from fastapi.responses import HTMLResponse

from emulator.broken_answers import broken_answer
from emulator.knobs import Knobs, Latency, ProviderKnobs, sample_latency
from emulator.markers import GARBAGE_HTML, Markers

Answer = Callable[[], Response]


def front_door(
    knobs: Knobs,
    section: ProviderKnobs,
    markers: Markers,
    *,
    blocked: bool,
    on_blocked: Answer,
    on_rate_limited: Answer,
    on_quota: Answer,
    on_server_error: Answer,
) -> Response | None:
    """The fault decided before generating (``None``: none): ``[answer=NAME]`` (a broken answer from in front of
    the upstream), ``blocked`` (the dialect's moderation marker), ``[429]``, ``[quota]``, ``[500]`` or
    ``section.error_rate``, ``[garbage]``, then ``section.rate_limit_rate``."""
    if (broken := broken_answer(markers.answer)) is not None:
        return broken
    if blocked:
        return on_blocked()
    if markers.rate_limited:
        return on_rate_limited()
    if markers.quota:
        return on_quota()
    if markers.server_error or knobs.chance(section.error_rate):
        return on_server_error()
    if markers.garbage:
        return HTMLResponse(GARBAGE_HTML, status_code=200)
    if knobs.chance(section.rate_limit_rate):
        return on_rate_limited()
    return None


def generation_time(markers: Markers, latency: Latency, rng: random.Random, *, hang_s: float) -> float:
    """Seconds to generate: ``hang_s`` for ``[hang]``, ``S`` for ``[latency=S]``, else a draw from ``latency``."""
    if markers.hang:
        return hang_s
    if markers.latency_s is not None:
        return markers.latency_s
    return sample_latency(latency, rng)
