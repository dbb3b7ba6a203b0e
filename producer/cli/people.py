"""The commands for people, over HTTP to the API: ``submit`` (``--watch``), ``show``, ``cancel``, ``jobs``,
``cost``, ``models``. Each prints a readable table, or with ``--json`` the API's answer (machine-readable)."""

from __future__ import annotations

import base64
import json
import mimetypes
import time
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.table import Table

from producer.cli.api_client import ApiClient, resolve_target
from producer.cli.failures import CliError

GENERATIONS = "/v1/images/generations"
TERMINAL = frozenset({"succeeded", "failed", "cancelled", "expired"})
WATCH_INTERVAL_S = 0.5

out = Console(highlight=False, soft_wrap=True)
status_line = Console(stderr=True, highlight=False)

JsonFlag = Annotated[bool, typer.Option("--json", help="print the API's answer as JSON")]


def register(app: typer.Typer) -> None:
    app.callback()(connection)
    for command in (submit, show, cancel, jobs, cost, models):
        app.command()(command)


_connection: dict[str, str | None] = {"api_url": None, "api_key": None}


def connection(
    api_url: Annotated[
        str | None, typer.Option(help="the API's base URL (env IMAGEJOBS_API_URL; default: the local stack)")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(help="the API key (env IMAGEJOBS_API_KEY; default: var/local.env)")
    ] = None,
) -> None:
    """imagejobs: submit and follow image jobs over the API; manage keys and the schema in-process."""
    _connection.update(api_url=api_url, api_key=api_key)


def _client() -> ApiClient:
    return ApiClient(resolve_target(_connection["api_url"], _connection["api_key"]))


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


# ------------------------------------------------------------------------------------------------- submit


def parse_param(text: str) -> tuple[str, Any]:
    """``name=value``: the value as JSON when it parses (``n=2``, ``seed=7``, ``x=[1,2]``), else as text."""
    name, equals, value = text.partition("=")
    if not equals or not name.strip():
        raise CliError(f"--param must be NAME=VALUE, not {text!r}", exit_code=2)
    try:
        return name.strip(), json.loads(value)
    except ValueError:
        return name.strip(), value


def image_data_url(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CliError(f"--image {path}: {exc.strerror}", exit_code=2) from None
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"


def submit(
    model: Annotated[str, typer.Argument(help="a model of `imagejobs models`")],
    prompt: Annotated[str, typer.Argument(help="what to draw")],
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="an extra request field NAME=VALUE (repeatable)")
    ] = None,
    image: Annotated[list[Path] | None, typer.Option("--image", "-i", help="an input image file (repeatable)")] = None,
    watch: Annotated[bool, typer.Option(help="follow the job until it ends and save its images")] = False,
    out_dir: Annotated[Path, typer.Option("--out", help="where --watch saves the images")] = Path("."),
    timeout_s: Annotated[float, typer.Option("--timeout", help="how long --watch waits (seconds)")] = 600.0,
    as_json: JsonFlag = False,
) -> int:
    """Submit a job (asynchronously); with --watch, follow it live and save its images on success."""
    body: dict[str, Any] = dict(parse_param(text) for text in param or [])
    body |= {"model": model, "prompt": prompt, "async": True}
    images = [image_data_url(path) for path in image or []]
    if len(images) == 1:
        body["image"] = images[0]
    elif images:
        body["images"] = images
    with _client() as api:
        task: dict[str, Any] = api.post(GENERATIONS, body)
        if not watch:
            _print_json(task) if as_json else out.print(task["id"])
            return 0
        task = follow(api, task, timeout_s=timeout_s, live=not as_json)
        saved = save_images(api, task, out_dir) if task["status"] == "succeeded" else []
    if as_json:
        _print_json({**task, "saved": [str(path) for path in saved]})
    else:
        _print_task(task)
        for path in saved:
            out.print(f"saved {path}")
    return 0 if task["status"] == "succeeded" else 1


def describe_progress(task: dict[str, Any], *, polls_seen: int, elapsed_s: float) -> str:
    parts = [f"[bold]{task['status']}[/bold]", f"polls {task.get('poll_count', polls_seen)}", f"{elapsed_s:.1f}s"]
    if task.get("queue_position") is not None:  # shown when the API reports it (queued jobs)
        parts.append(f"queue position {task['queue_position']}")
    return f"{task['id']}  " + " · ".join(parts)


def follow(api: ApiClient, task: dict[str, Any], *, timeout_s: float, live: bool) -> dict[str, Any]:
    """Poll the task object until it ends, showing a live status line on stderr; fails after ``timeout_s``."""
    started = time.monotonic()
    polls = 0
    with status_line.status("", spinner="dots") if live else _Quiet() as spinner:
        while task["status"] not in TERMINAL:
            elapsed = time.monotonic() - started
            if elapsed > timeout_s:
                raise CliError(f"{task['id']} is still {task['status']} after {timeout_s:.0f}s (not cancelled)")
            spinner.update(describe_progress(task, polls_seen=polls, elapsed_s=elapsed))
            time.sleep(WATCH_INTERVAL_S)
            task = api.get(f"{GENERATIONS}/{task['id']}")
            polls += 1
    return task


class _Quiet:
    def __enter__(self) -> _Quiet:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def update(self, _status: str) -> None:
        return None


def save_images(api: ApiClient, task: dict[str, Any], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    saved = []
    for index, image in enumerate(task.get("data") or []):
        extension = mimetypes.guess_extension(image.get("content_type") or "") or ".bin"
        path = out_dir / f"{task['id']}-{index}{extension}"
        path.write_bytes(api.download(image["url"]))
        saved.append(path)
    return saved


# ------------------------------------------------------------------------------------------ show, cancel


def show(task_id: Annotated[str, typer.Argument(help="the task id")], as_json: JsonFlag = False) -> None:
    """One task: status, polls, cost, images, error."""
    with _client() as api:
        task = api.get(f"{GENERATIONS}/{task_id}")
    _print_json(task) if as_json else _print_task(task)


def cancel(task_id: Annotated[str, typer.Argument(help="the task id")], as_json: JsonFlag = False) -> None:
    """Cancel a queued, submitting or running task (never billed)."""
    with _client() as api:
        task = api.post(f"{GENERATIONS}/{task_id}/cancel")
    _print_json(task) if as_json else _print_task(task)


def _money(cost: dict[str, Any] | None) -> str:
    return f"{cost['amount']} {cost['currency']}" if cost else "-"


def _print_task(task: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None)
    table.add_row("id", task["id"])
    table.add_row("status", task["status"])
    table.add_row("model", f"{task['model']} ({task['upstream_model']})")
    table.add_row("polls", str(task["poll_count"]))
    table.add_row("cost", _money(task.get("cost")))
    if task.get("error"):
        table.add_row("error", f"{task['error']['code']}: {task['error']['message']}")
    for image in task.get("data") or []:
        table.add_row("image", image["url"])
    out.print(table)


# ------------------------------------------------------------------------------------------ jobs, cost


def jobs(
    status: Annotated[str | None, typer.Option(help="only this status (queued, running, succeeded, …)")] = None,
    model: Annotated[str | None, typer.Option(help="only this model")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100, help="at most this many, newest first")] = 20,
    as_json: JsonFlag = False,
) -> None:
    """Your key's jobs, newest first."""
    params: dict[str, Any] = {"limit": limit}
    params |= {name: value for name, value in (("status", status), ("model", model)) if value is not None}
    with _client() as api:
        listed = api.get(GENERATIONS, params)
    if as_json:
        _print_json(listed)
        return
    table = Table("id", "status", "model", "polls", "cost", "created")
    for task in listed["data"]:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(task["created_at"]))
        table.add_row(
            task["id"], task["status"], task["model"], str(task["poll_count"]), _money(task.get("cost")), created
        )
    out.print(table)


def cost(
    since: Annotated[str | None, typer.Option(help="from this time (ISO 8601, e.g. 2026-12-01 or ...T00:00Z)")] = None,
    until: Annotated[str | None, typer.Option(help="until this time, excluded (ISO 8601)")] = None,
    model: Annotated[str | None, typer.Option(help="only this model")] = None,
    group_by: Annotated[str, typer.Option(help="model or day")] = "model",
    as_json: JsonFlag = False,
) -> None:
    """What your jobs cost, per model or per day, in each currency."""
    if group_by not in ("model", "day"):
        raise CliError(f"--group-by must be model or day, not {group_by!r}", exit_code=2)
    params = {name: _utc_time(value) for name, value in (("since", since), ("until", until)) if value is not None}
    with _client() as api:
        daily = api.get("/v1/costs", params)  # per UTC day, model and currency
    report = group_costs(daily, group_by="day" if group_by == "day" else "model", model=model)
    if as_json:
        _print_json(report)
        return
    table = Table(report["group_by"], "jobs", "amount", "currency")
    for line in report["data"]:
        table.add_row(line["key"], str(line["jobs"]), line["amount"], line["currency"])
    out.print(table)


def group_costs(daily: dict[str, Any], *, group_by: Literal["model", "day"], model: str | None) -> dict[str, Any]:
    """The API's rows per day, model and currency summed per ``group_by`` and currency (``model``: only it)."""
    sums: dict[tuple[str, str], tuple[int, Decimal]] = {}
    for row in daily["data"]:
        if model is not None and row["model"] != model:
            continue
        key = (str(row["day"] if group_by == "day" else row["model"]), row["currency"])
        jobs, amount = sums.get(key, (0, Decimal(0)))
        sums[key] = (jobs + int(row["jobs"]), amount + Decimal(str(row["amount"])))
    lines = [
        {"key": key, "currency": currency, "jobs": jobs, "amount": str(amount)}
        for (key, currency), (jobs, amount) in sorted(sums.items())
    ]
    return {"object": "cost.report", "group_by": group_by, "since": daily["since"], "until": daily["until"],
            "model": model, "data": lines}  # fmt: skip


def _utc_time(value: str) -> str:
    """A date (``2026-12-01``: its UTC midnight) or a time; without an offset it is taken as UTC."""
    if len(value) == 10:
        return f"{value}T00:00:00Z"
    return value if value.endswith("Z") or "+" in value[10:] or "-" in value[10:] else f"{value}Z"


# ------------------------------------------------------------------------------------------------ models


def models(as_json: JsonFlag = False) -> None:
    """Every model with its availability and prices."""
    with _client() as api:
        listed = api.get("/v1/models")
    if as_json:
        _print_json(listed)
        return
    table = Table("model", "provider", "availability", "prices")
    for card in listed["data"]:
        table.add_row(card["id"], card["owned_by"], card["availability"], describe_prices(card))
    out.print(table)


def describe_prices(card: dict[str, Any]) -> str:
    currency = card.get("currency", "")

    def one(price: dict[str, Any]) -> str:
        varies = " (varies)" if price.get("amounts") else ""
        return f"{price['operation']}: {price['amount']} {currency}/{price['per']}{varies}"

    if "variants" in card:
        return "\n".join(
            f"{name}: " + ", ".join(one(price) for price in variant["prices"])
            for name, variant in card["variants"].items()
        )
    return ", ".join(one(price) for price in card.get("prices", []))
