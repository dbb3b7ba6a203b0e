"""Black Forest Labs dialect: ``POST /v1/{model}`` → ``{id, polling_url}``, ``GET /v1/get_result?id=``, samples.

Auth is the ``x-key`` header on both calls. ``polling_url`` is an absolute URL back to this emulator's own
``get_result`` route (BFL's points at the region that took the task). The poll answers
``{id, status, result, progress, details, preview}`` with the six status strings of the API. A ``Ready``
task's ``result.sample`` is a signed, expiring URL (``se`` = expiry, ``sig`` = HMAC) under
``/_emulator/files/bfl/``, like BFL's ``delivery-*.bfl.ai`` links (10 minutes); an expired or tampered link
answers 403 as the blob store does. Errors use FastAPI's ``{"detail": ...}`` (422: a list of items). A task
submitted with ``webhook_url`` POSTs its end there (``bfl_callbacks``; knobs ``bfl.callbacks``).
Source: BFL's API reference, https://docs.bfl.ai/.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import secrets
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from emulator.bfl import callbacks as bfl_callbacks
from emulator.bfl.params import ENDPOINTS, BflParamError, BflRequest, parse_submit
from emulator.bfl.tasks import (
    ERROR,
    READY,
    REQUEST_MODERATED,
    TASK_NOT_FOUND,
    BflTask,
    BflTaskStore,
    Outcome,
    TooManyActiveTasksError,
)
from emulator.broken_answers import broken_answer
from emulator.callbacks import CallbackSender
from emulator.faults import front_door, generation_time
from emulator.knobs import Knobs
from emulator.markers import Markers, parse_markers
from emulator.render import ImageFormat, render_image

RESULT_TTL_S = 600.0
GET_RESULT_ROUTE = "bfl_get_result"
SAMPLE_ROUTE = "bfl_sample"
_MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg"}
_BLOB_ERROR = '<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code><Message>{message}</Message></Error>'


def detail(status: int, message: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


@lru_cache(maxsize=32)
def _sample(label: str, width: int, height: int, fmt: ImageFormat) -> bytes:
    return render_image(label, width, height, fmt)


class BflEmulator:
    """The BFL account: API key, tasks, and route handlers."""

    def __init__(
        self,
        knobs: Knobs,
        *,
        api_key: str,
        result_ttl_s: float = RESULT_TTL_S,
        clock: Callable[[], float] = time.time,
        callbacks: CallbackSender | None = None,
    ) -> None:
        self.knobs = knobs
        self.api_key = api_key
        self.result_ttl_s = result_ttl_s
        self.clock = clock
        self.store = BflTaskStore()
        #: sends the webhooks of tasks submitted with ``webhook_url`` (None: never sent)
        self.callbacks = callbacks
        self._signing_key = secrets.token_bytes(32)

    def reset(self) -> None:
        self.store.clear()

    def build_router(self) -> APIRouter:
        router = APIRouter(tags=["bfl"])
        router.add_api_route("/v1/get_result", self.get_result, methods=["GET"], name=GET_RESULT_ROUTE)
        router.add_api_route("/v1/{model}", self.submit, methods=["POST"])
        return router

    def files_router(self) -> APIRouter:
        router = APIRouter(tags=["bfl"])
        router.add_api_route(
            "/_emulator/files/bfl/{task_id}/sample.{ext}", self.sample, methods=["GET"], name=SAMPLE_ROUTE
        )
        return router

    # -- handlers -----------------------------------------------------------------------------------

    async def submit(self, request: Request, model: str) -> Response:
        self.knobs.stats.bfl.submits += 1
        return self._tally(await self._submit(request, model))

    async def get_result(self, request: Request) -> Response:
        self.knobs.stats.bfl.queries += 1
        return self._tally(await self._get_result(request))

    async def sample(self, task_id: str, ext: str, se: str = "", sig: str = "") -> Response:
        task = self.store.get(task_id)
        if task is None or task.status_at(self.clock())[0] != READY or ext != task.request.output_format:
            return _blob_error(404, "BlobNotFound", "The specified blob does not exist.")
        if not hmac.compare_digest(sig, self._signature(task_id, se)):
            return _blob_error(403, "AuthenticationFailed", "Signature did not match.")
        if _parse_expiry(se) <= self.clock():
            return _blob_error(403, "AuthenticationFailed", "Signature not valid in the specified time frame.")
        request = task.request
        data = _sample(f"bfl {task_id}", request.width, request.height, request.output_format)
        return Response(data, media_type=_MEDIA_TYPES[request.output_format])

    # -- internals ----------------------------------------------------------------------------------

    def _tally(self, response: Response) -> Response:
        if response.status_code >= 300:
            self.knobs.stats.bfl.rejected += 1
        return response

    def _auth_error(self, request: Request) -> Response | None:
        key = request.headers.get("x-key")
        if not key:
            return detail(403, "Not authenticated")
        if not hmac.compare_digest(key.encode(), self.api_key.encode()):
            return detail(401, "Invalid API key")
        return None

    async def _submit(self, request: Request, model: str) -> Response:
        endpoint = ENDPOINTS.get(model)
        if endpoint is None:
            return detail(404, "Not Found")
        if (denied := self._auth_error(request)) is not None:
            return denied
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        if not isinstance(body, dict):
            item = {"type": "model_attributes_type", "loc": ["body"], "msg": "Input should be a valid dictionary"}
            return detail(422, [item])
        try:
            params = parse_submit(model, endpoint, body)
        except BflParamError as exc:
            return detail(422, [exc.item])
        markers = parse_markers(params.prompt)
        if (rejection := self._front_door(markers)) is not None:
            return rejection
        now = self.clock()
        task = BflTask(
            task_id=str(uuid.uuid4()),
            request=params,
            created_at=now,
            latency_s=generation_time(markers, self.knobs.config.bfl.latency, self.knobs.rng, hang_s=math.inf),
            outcome=self._outcome(markers),
        )
        try:
            self.store.add(task, now=now, concurrency_limit=self.knobs.config.bfl.concurrency_limit)
        except TooManyActiveTasksError:
            limit = self.knobs.config.bfl.concurrency_limit
            return detail(429, f"Too many active tasks (limit {limit}); wait for running tasks to finish.")
        self._schedule_webhook(request, body, task)
        polling_url = request.url_for(GET_RESULT_ROUTE).include_query_params(id=task.task_id)
        answer: dict[str, Any] = {"id": task.task_id, "polling_url": str(polling_url)}
        if endpoint.reports_cost:
            answer |= _cost(params)
        return JSONResponse(answer)

    def _schedule_webhook(self, request: Request, body: dict[str, Any], task: BflTask) -> None:
        url, secret = body.get("webhook_url"), body.get("webhook_secret")
        if self.callbacks is None or not isinstance(url, str) or not url or not math.isfinite(task.ends_at):
            return  # a hanging task never ends, so never calls back
        bfl_callbacks.schedule_webhook(
            self.callbacks,
            task,
            url=url,
            secret=secret if isinstance(secret, str) else None,
            result=self._result(request, task) if task.outcome == READY else None,
            knobs=self.knobs.config.bfl.callbacks,
        )

    def _front_door(self, markers: Markers) -> Response | None:
        """Faults decided at submit time: markers first, then the random rates."""
        return front_door(
            self.knobs,
            self.knobs.config.bfl,
            markers,
            blocked=markers.moderated,
            # BFL reports flagged input as the poll status `Request Moderated`; this synchronous pre-check
            # stands for an input filter that refuses at the door (shape UNVERIFIED, see README).
            on_blocked=lambda: detail(
                400, "Request Moderated: the prompt or input image was flagged by the safety filter."
            ),
            on_rate_limited=lambda: detail(
                429, "Rate limit exceeded, please retry later.", headers={"retry-after": "1"}
            ),
            on_quota=lambda: detail(402, "Insufficient credits. Add credits to your account to continue."),
            on_server_error=lambda: detail(500, "Internal Server Error"),
        )

    def _outcome(self, markers: Markers) -> Outcome:
        if markers.moderated_async:
            return REQUEST_MODERATED
        if markers.fail or self.knobs.chance(self.knobs.config.bfl.failure_rate):
            return ERROR
        return READY

    async def _get_result(self, request: Request) -> Response:
        if (delay := self.knobs.config.status_latency_s) > 0:
            await asyncio.sleep(delay)
        if (denied := self._auth_error(request)) is not None:
            return denied
        task_id = request.query_params.get("id")
        if not task_id:
            return detail(422, [{"type": "missing", "loc": ["query", "id"], "msg": "Field required", "input": None}])
        task = self.store.get(task_id)
        if task is None:
            return JSONResponse(_result_body(task_id, TASK_NOT_FOUND))
        if (broken := broken_answer(parse_markers(task.request.prompt).poll_answer)) is not None:
            return broken
        status, progress = task.status_at(self.clock())
        body = _result_body(task_id, status, progress=progress)
        if status == READY:
            body["result"] = self._result(request, task)
        elif status == ERROR:
            body["details"] = {"error": "Generation failed, please try again."}
        elif status != "Pending":
            body["details"] = {"Moderation Reasons": ["Emulated moderation"]}
        return JSONResponse(body)

    def _result(self, request: Request, task: BflTask) -> dict[str, Any]:
        expiry = datetime.fromtimestamp(task.ends_at + self.result_ttl_s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        url = request.url_for(SAMPLE_ROUTE, task_id=task.task_id, ext=task.request.output_format)
        signed = url.include_query_params(se=expiry, sig=self._signature(task.task_id, expiry))
        params = task.request
        return {
            "sample": str(signed),
            "seed": params.seed if params.seed is not None else int(task.task_id[:8], 16),
            "prompt": params.prompt,
            "start_time": task.created_at,
            "end_time": task.ends_at,
            "duration": round(task.ends_at - task.created_at, 3),
        }

    def _signature(self, task_id: str, expiry: str) -> str:
        return hmac.new(self._signing_key, f"{task_id}\n{expiry}".encode(), hashlib.sha256).hexdigest()[:43]


def _result_body(task_id: str, status: str, *, progress: float | None = None) -> dict[str, Any]:
    return {"id": task_id, "status": status, "result": None, "progress": progress, "details": None, "preview": None}


def _cost(params: BflRequest) -> dict[str, float]:
    """FLUX.2's ``cost`` (credits: 3 for the first output MP, 1.5 per further or input MP) and megapixels."""
    output_mp = round(params.output_megapixels, 2)
    input_mp = float(params.input_images)  # input images are counted as ~1 MP each
    credits = 3.0 + 1.5 * (math.ceil(max(0.0, output_mp - 1.05)) + math.ceil(input_mp))
    return {"cost": credits, "input_mp": input_mp, "output_mp": output_mp}


def _parse_expiry(value: str) -> float:
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return 0.0


def _blob_error(status: int, code: str, message: str) -> Response:
    return Response(_BLOB_ERROR.format(code=code, message=message), status_code=status, media_type="application/xml")
