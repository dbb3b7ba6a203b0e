"""The shared front-door faults and generation time (emulator/faults.py)."""

from __future__ import annotations

import json
import math
import random

import pytest
from fastapi import Response

from emulator.broken_answers import TEXT_429_RETRY_AFTER_S, broken_answer
from emulator.faults import front_door, generation_time
from emulator.knobs import FixedLatency, Knobs, ProviderKnobs
from emulator.markers import GARBAGE_HTML, parse_markers


def _door(prompt: str, section: ProviderKnobs | None = None) -> Response | None:
    knobs = Knobs(seed=1)
    markers = parse_markers(prompt)
    return front_door(
        knobs,
        section or knobs.config.openai,
        markers,
        blocked=markers.moderated,
        on_blocked=lambda: Response(status_code=400),
        on_rate_limited=lambda: Response(status_code=429),
        on_quota=lambda: Response(status_code=402),
        on_server_error=lambda: Response(status_code=500),
    )


def test_front_door_answers_markers_in_order() -> None:
    assert _door("plain") is None
    answers = {
        prompt: _door(prompt) for prompt in ("[moderated] [429]", "[429] [quota]", "[quota] [500]", "[500] [garbage]")
    }
    assert {prompt: r.status_code for prompt, r in answers.items() if r is not None} == {
        "[moderated] [429]": 400,
        "[429] [quota]": 429,
        "[quota] [500]": 402,
        "[500] [garbage]": 500,
    }
    garbage = _door("[garbage]")
    assert garbage is not None and garbage.status_code == 200 and bytes(garbage.body) == GARBAGE_HTML.encode()


def test_front_door_draws_the_random_rates() -> None:
    latency = FixedLatency()
    error = _door("plain", ProviderKnobs(latency=latency, error_rate=1.0))
    limited = _door("plain", ProviderKnobs(latency=latency, rate_limit_rate=1.0))
    assert error is not None and error.status_code == 500
    assert limited is not None and limited.status_code == 429


def test_generation_time_follows_markers_then_knobs() -> None:
    rng = random.Random(1)
    fixed = FixedLatency(value_s=2.5)
    assert generation_time(parse_markers("[hang] [latency=1]"), fixed, rng, hang_s=math.inf) == math.inf
    assert generation_time(parse_markers("[latency=0.25]"), fixed, rng, hang_s=3600.0) == 0.25
    assert generation_time(parse_markers("plain"), fixed, rng, hang_s=3600.0) == 2.5


def test_answer_markers_name_a_broken_answer_for_the_submit_or_every_poll() -> None:
    markers = parse_markers("a fox [Answer=HTML-502] [poll-answer=empty-200]")
    assert (markers.answer, markers.poll_answer) == ("html-502", "empty-200")
    assert parse_markers("[answer=]").answer == ""
    assert broken_answer("no-such-answer") is None and broken_answer(None) is None


def test_a_broken_answer_comes_before_every_other_fault() -> None:
    answered = _door("[moderated] [500] [answer=text-429]")
    assert answered is not None
    assert (answered.status_code, answered.headers["retry-after"]) == (429, str(TEXT_429_RETRY_AFTER_S))
    assert bytes(answered.body) == b"Too Many Requests"
    assert _door("[poll-answer=html-502]") is None  # poll answers are the dialect's to serve, not the front door's


@pytest.mark.parametrize(
    ("name", "status", "media_type", "is_json"),
    [
        ("html-502", 502, "text/html", False),
        ("html-503", 503, "text/html", False),
        ("text-429", 429, "text/plain", False),
        ("empty-200", 200, "application/json", False),
        ("truncated-json", 200, "application/json", False),
        ("commented-json", 200, "application/json", False),
        ("wrong-shape", 200, "application/json", True),
    ],
)
def test_each_broken_answer_is_what_it_says(name: str, status: int, media_type: str, is_json: bool) -> None:
    answer = broken_answer(name)
    assert answer is not None
    assert answer.status_code == status
    assert answer.headers["content-type"].startswith(media_type)
    try:
        json.loads(bytes(answer.body))
    except ValueError:
        parsed = False
    else:
        parsed = True
    assert parsed is is_json
