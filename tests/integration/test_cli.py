"""The CLI for people against the running stack: the API, a Celery worker and the emulator as real processes.

``submit --watch --json`` follows a Kling job to ``succeeded`` and saves its image; ``show``, ``jobs``, ``cost``,
``models`` and ``cancel`` answer JSON; an unreachable API is one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from producer import cli
from tests.integration.harness import Emulator, ProcessesFactory, fixed
from tests.support import API_KEY, OTHER_API_KEY, free_port

pytestmark = pytest.mark.integration

KLING = ["kling-image", "a lighthouse at dusk", "--param", "model_name=kling-v2-1"]


def run(capsys: pytest.CaptureFixture[str], api: str, *args: str, key: str = API_KEY) -> tuple[int, Any, str]:
    code = cli.main(["--api-url", api, "--api-key", key, *args])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if "--json" in args and captured.out else captured.out, captured.err


def test_cli_submits_watches_saves_lists_costs_and_cancels(
    sqlite_url: str, processes: ProcessesFactory, emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()  # the signed image URLs point at the public base URL: this API
    group = processes(sqlite_url, IMAGEJOBS_API_PORT=str(port), IMAGEJOBS_PUBLIC_BASE_URL=f"http://127.0.0.1:{port}")
    api = group.api()
    group.worker(concurrency=4)

    # submit --watch --json: the job reaches succeeded and its image is saved
    out = tmp_path / "out"
    code, task, err = run(capsys, api, "submit", *KLING, "--watch", "--json", "--out", str(out))
    assert code == 0, err
    assert task["status"] == "succeeded" and task["model"] == "kling-image"
    [saved] = task["saved"]
    assert Path(saved).parent == out and Path(saved).stat().st_size > 0
    assert Path(saved).read_bytes()[:4] in (b"\x89PNG", b"\xff\xd8\xff\xe0", b"\xff\xd8\xff\xe1", b"RIFF")

    code, shown, _ = run(capsys, api, "show", task["id"], "--json")
    assert code == 0 and shown["id"] == task["id"] and shown["status"] == "succeeded"

    # jobs: this tenant's only
    code, other, _ = run(capsys, api, "submit", *KLING, "--json", key=OTHER_API_KEY)
    assert code == 0
    code, listed, _ = run(capsys, api, "jobs", "--json", "--status", "succeeded")
    assert code == 0 and [job["id"] for job in listed["data"]] == [task["id"]]
    code, listed, _ = run(capsys, api, "jobs", "--json", key=OTHER_API_KEY)
    assert [job["id"] for job in listed["data"]] == [other["id"]]

    # cost: the job's cost, by model and by day
    code, report, _ = run(capsys, api, "cost", "--json")
    assert code == 0
    [line] = report["data"]
    assert (line["key"], line["jobs"]) == ("kling-image", 1)
    assert line["amount"] == shown["cost"]["amount"] or float(line["amount"]) == float(shown["cost"]["amount"])
    code, by_day, _ = run(
        capsys, api, "cost", "--json", "--group-by", "day", "--since", f"{date.today() - timedelta(days=2)}"
    )
    assert code == 0 and [line["jobs"] for line in by_day["data"]] == [1]
    code, none, _ = run(capsys, api, "cost", "--json", "--model", "gpt-image-1")
    assert code == 0 and none["data"] == []

    code, catalog, _ = run(capsys, api, "models", "--json")
    assert code == 0 and "kling-image" in {card["id"] for card in catalog["data"]}

    # the same, for people: tables, not JSON
    for args in (["models"], ["jobs"], ["show", task["id"]], ["cost", "--group-by", "day"]):
        code, text, err = run(capsys, api, *args)
        assert code == 0 and err == "", (args, err)
        assert ("kling-image" if args[0] != "cost" else "1") in text

    # cancel: a job still running upstream
    emulator.configure({"kling": {"latency": fixed(30.0)}})
    code, slow, _ = run(capsys, api, "submit", *KLING, "--json")
    code, cancelled, err = run(capsys, api, "cancel", slow["id"], "--json")
    assert code == 0, err
    assert cancelled["status"] == "cancelled"
    # a second cancel is the API's 409, as one line
    code, _, err = run(capsys, api, "cancel", slow["id"])
    assert code == 1 and err.count("\n") == 1 and "409 task_already_ended" in err

    # a bad parameter: the API's 4xx, one line naming it
    code, _, err = run(capsys, api, "submit", *KLING, "--param", "n=0")
    assert code == 1 and err.count("\n") == 1 and "400" in err and "(n)" in err


def test_an_unreachable_api_is_one_line_and_a_non_zero_exit(capsys: pytest.CaptureFixture[str]) -> None:
    api = f"http://127.0.0.1:{free_port()}"
    for args in (["show", "abc"], ["jobs", "--json"], ["submit", "kling-image", "x", "--watch"], ["models"]):
        code, _, err = run(capsys, api, *args)
        assert code == 1
        assert err.count("\n") == 1 and f"cannot reach the API at {api}" in err and "Traceback" not in err
