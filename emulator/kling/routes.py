"""Kling dialect: the legacy ``/v1`` image task APIs (create, query one, list) plus result files.

Five endpoints share one task store, envelope and lifecycle: ``/v1/images/generations``,
``/v1/images/multi-image2image``, ``/v1/images/editing/expand``, ``/v1/images/kolors-virtual-try-on`` and
``/v1/images/omni-image``; a task is queried under the path that created it. Envelope
``{"code", "message", "request_id", "data"}`` with Kling's service codes; ms timestamps; ``task_status``
``submitted → processing → succeed | failed``. Result images are served by
``GET /_emulator/files/kling/{task_id}/{index}.png``. A task created with ``callback_url`` POSTs itself there on
every status change (``kling_callbacks``; knobs ``kling.callbacks``).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse

from emulator.broken_answers import broken_answer
from emulator.callbacks import CallbackSender
from emulator.faults import generation_time
from emulator.kling import callbacks as kling_callbacks
from emulator.kling import expand as kling_expand
from emulator.kling import multi_image as kling_multi_image
from emulator.kling import omni as kling_omni
from emulator.kling import try_on as kling_try_on
from emulator.kling.auth import check_kling_auth
from emulator.kling.params import KlingImageRequest, KlingParamError, parse_submit
from emulator.kling.tasks import (
    FAILED,
    SUCCEED,
    ConcurrencyExceededError,
    DuplicateExternalTaskIdError,
    KlingTask,
    TaskStore,
)
from emulator.knobs import Knobs
from emulator.markers import GARBAGE_HTML, Markers, parse_markers
from emulator.render import render_png_cached

PATH = "/v1/images/generations"
#: ``[slow-ack=S]``: the task is created at once but the submit answer comes ``S`` seconds later (an ambiguous
#: timeout for a client that gives up sooner: the task exists although the client never saw its id)
SLOW_ACK = re.compile(r"\[slow-ack=(\d+(?:\.\d+)?)\]", re.I)
MODERATION_MSG = "Failure to pass the risk control system"
FAILURE_MSG = "Image generation failed due to an internal error, please try again later"

Parser = Callable[[dict[str, Any]], KlingImageRequest]
Handler = Callable[..., Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One task API: its name (``KlingImageRequest.endpoint``), path and body parser."""

    name: str
    path: str
    parse: Parser


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def envelope(status: int, code: int, message: str, data: Any = None) -> JSONResponse:
    body = {"code": code, "message": message, "request_id": str(uuid.uuid4()), "data": data}
    return JSONResponse(body, status_code=status)


def _int_query(request: Request, key: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(key)
    try:
        value = default if raw is None else int(raw)
    except ValueError:
        raise KlingParamError(f"{key} must be an integer") from None
    if not low <= value <= high:
        raise KlingParamError(f"{key} must be within [{low}, {high}]")
    return value


def result_size(shape: tuple[float, float], long_side: int) -> tuple[int, int]:
    """``(width, height)`` of a result of this shape whose longer side is ``long_side`` pixels."""
    width, height = shape
    if width >= height:
        return long_side, max(1, round(long_side * height / width))
    return max(1, round(long_side * width / height)), long_side


class KlingEmulator:
    """The Kling account: credentials, task store and route handlers."""

    def __init__(
        self,
        knobs: Knobs,
        *,
        access_key: str,
        secret_key: str,
        clock: Callable[[], float] = time.time,
        callbacks: CallbackSender | None = None,
    ) -> None:
        self.knobs = knobs
        self.access_key = access_key
        self.secret_key = secret_key
        self.clock = clock
        self.store = TaskStore()
        #: sends the callbacks of tasks created with ``callback_url`` (None: they are stored, never sent)
        self.callbacks = callbacks
        #: arrival times of the API requests of the last second (``kling_load.peak_requests_per_s``)
        self._recent: deque[float] = deque()
        self.generations = Endpoint("generations", PATH, parse_submit)
        self.endpoints = (
            self.generations,
            Endpoint(kling_multi_image.ENDPOINT, "/v1/images/multi-image2image", kling_multi_image.parse_multi_image),
            Endpoint(kling_expand.ENDPOINT, "/v1/images/editing/expand", kling_expand.parse_expand),
            Endpoint(kling_try_on.ENDPOINT, "/v1/images/kolors-virtual-try-on", kling_try_on.parse_try_on),
            Endpoint(kling_omni.ENDPOINT, "/v1/images/omni-image", self._parse_omni),
        )

    def reset(self) -> None:
        self.store.clear()
        self._recent.clear()

    def build_router(self, *, with_submit: bool = True) -> APIRouter:
        """The ``/v1`` API routes (``with_submit=False``: without ``POST /v1/images/generations``, whose root
        path the app shares with OpenAI)."""
        router = APIRouter(tags=["kling"])
        for endpoint in self.endpoints:
            if with_submit or endpoint.path != PATH:
                router.add_api_route(endpoint.path, self._submit_handler(endpoint), methods=["POST"])
            router.add_api_route(endpoint.path, self._list_handler(endpoint), methods=["GET"])
            router.add_api_route(endpoint.path + "/{task_id}", self._query_handler(endpoint), methods=["GET"])
        return router

    def files_router(self) -> APIRouter:
        router = APIRouter(tags=["kling"])
        router.add_api_route("/_emulator/files/kling/{task_id}/{index}.png", self.file, methods=["GET"])
        return router

    # -- handlers -----------------------------------------------------------------------------------

    async def submit(self, request: Request, endpoint: Endpoint | None = None) -> Response:
        """Create a task (default: ``POST /v1/images/generations``, where the app's shared root path dispatches)."""
        self.knobs.stats.kling.submits += 1
        self._note_request()
        return self._tally(await self._submit(request, endpoint or self.generations))

    def _submit_handler(self, endpoint: Endpoint) -> Handler:
        async def submit(request: Request) -> Response:
            return await self.submit(request, endpoint)

        return submit

    def _query_handler(self, endpoint: Endpoint) -> Handler:
        async def query(request: Request, task_id: str) -> Response:
            self.knobs.stats.kling.queries += 1
            self._note_request()
            return self._tally(await self._query(request, task_id, endpoint))

        return query

    def _list_handler(self, endpoint: Endpoint) -> Handler:
        async def list_tasks(request: Request) -> Response:
            self.knobs.stats.kling.queries += 1
            self._note_request()
            single = request.query_params.get("external_task_id") or request.query_params.get("task_id")
            if single:
                return self._tally(await self._query(request, single, endpoint))
            return self._tally(await self._list(request, endpoint))

        return list_tasks

    async def file(self, task_id: str, index: str) -> Response:
        task = self.store.get(task_id)
        now = self.clock()
        if task is None or task.state_at(now)[0] != SUCCEED or index not in map(str, range(task.request.n)):
            return envelope(404, 1203, "resource does not exist")
        width, height = result_size(task.request.shape, self.knobs.config.image_long_side)
        png = render_png_cached(f"kling {task.task_id} #{index}", width, height)
        return Response(png, media_type="image/png", headers={"cache-control": "public, max-age=2592000"})

    # -- internals ----------------------------------------------------------------------------------

    def _note_request(self) -> None:
        """The load an API request sees: image slots in flight, and requests within the last second."""
        now, load = self.clock(), self.knobs.stats.kling_load
        self._recent.append(now)
        while self._recent[0] <= now - 1.0:
            self._recent.popleft()
        load.peak_requests_per_s = max(load.peak_requests_per_s, len(self._recent))
        load.in_flight_slots = self.store.slots_in_use(now)

    def _tally(self, response: Response) -> Response:
        if response.status_code >= 300:
            self.knobs.stats.kling.rejected += 1
        return response

    def _auth_error(self, request: Request) -> Response | None:
        header = request.headers.get("authorization")
        failure = check_kling_auth(header, access_key=self.access_key, secret_key=self.secret_key)
        return None if failure is None else envelope(401, failure.code, failure.message)

    def _parse_omni(self, body: dict[str, Any]) -> KlingImageRequest:
        return kling_omni.parse_omni(body, draw_auto_series_amount=lambda: self.knobs.rng.randint(2, 9))

    async def _submit(self, request: Request, endpoint: Endpoint) -> Response:
        if (denied := self._auth_error(request)) is not None:
            return denied
        try:
            body = json.loads(await request.body())
        except ValueError:
            return envelope(400, 1200, "invalid request parameters: body is not valid JSON")
        if not isinstance(body, dict):
            return envelope(400, 1200, "invalid request parameters: body must be a JSON object")
        try:
            params = endpoint.parse(body)
        except KlingParamError as exc:
            return envelope(400, 1201, f"invalid parameter: {exc}")
        markers = parse_markers(params.scenario)
        if (rejection := self._front_door(markers)) is not None:
            return rejection
        now = self.clock()
        task = KlingTask(
            task_id=str(uuid.uuid4()),
            request=params,
            created_at=now,
            latency_s=generation_time(markers, self.knobs.config.kling.latency, self.knobs.rng, hang_s=math.inf),
            failure_msg=self._failure(markers),
        )
        try:
            self.store.add(task, now=now, concurrency_limit=self.knobs.config.kling.concurrency_limit)
        except DuplicateExternalTaskIdError:
            return envelope(400, 1201, f"invalid parameter: external_task_id {params.external_task_id!r} exists")
        except ConcurrencyExceededError:
            self.knobs.stats.kling_load.concurrency_rejected += 1
            return envelope(429, 1303, "parallel task over resource pack limit")
        load = self.knobs.stats.kling_load
        load.in_flight_slots = self.store.slots_in_use(now)
        load.peak_in_flight_slots = max(load.peak_in_flight_slots, load.in_flight_slots)
        if self.callbacks is not None:
            base = str(request.base_url).rstrip("/")
            kling_callbacks.schedule_callbacks(
                self.callbacks,
                task,
                task_object=lambda created, at: self.task_object(created, base, at),
                knobs=self.knobs.config.kling.callbacks,
            )
        if slow_ack := SLOW_ACK.search(params.scenario):
            await asyncio.sleep(min(float(slow_ack.group(1)), 60.0))
        data = {
            "task_id": task.task_id,
            "task_status": "submitted",
            "task_info": self._task_info(task),
            "created_at": _ms(now),
            "updated_at": _ms(now),
        }
        return envelope(200, 0, "SUCCEED", data)

    def _front_door(self, markers: Markers) -> Response | None:
        """Faults decided at submit time: markers first, then the random rates."""
        knobs = self.knobs.config.kling
        if (broken := broken_answer(markers.answer)) is not None:
            return broken
        if markers.moderated:
            return envelope(400, 1301, "content security policy triggered")
        if markers.rate_limited:
            return envelope(429, 1302, "request too fast, please slow down")
        if markers.quota:
            return envelope(429, 1102, "resource pack depleted or expired")
        if markers.server_error:
            return envelope(500, 5000, "internal error")
        if markers.garbage:
            return HTMLResponse(GARBAGE_HTML, status_code=200)
        if self.knobs.chance(knobs.error_rate):
            return envelope(500, 5000, "internal error")
        if self.knobs.chance(knobs.rate_limit_rate):
            return envelope(429, 1302, "request too fast, please slow down")
        return None

    def _failure(self, markers: Markers) -> str | None:
        if markers.moderated_async:
            return MODERATION_MSG
        if markers.fail or self.knobs.chance(self.knobs.config.kling.failure_rate):
            return FAILURE_MSG
        return None

    async def _query(self, request: Request, task_id: str, endpoint: Endpoint) -> Response:
        await self._status_delay()
        if (denied := self._auth_error(request)) is not None:
            return denied
        task = self.store.get(task_id, endpoint=endpoint.name)
        if task is None:
            return envelope(404, 1203, f"task {task_id} does not exist")
        if (broken := broken_answer(parse_markers(task.request.scenario).poll_answer)) is not None:
            return broken
        return envelope(200, 0, "SUCCEED", self._task_data(task, request))

    async def _list(self, request: Request, endpoint: Endpoint) -> Response:
        await self._status_delay()
        if (denied := self._auth_error(request)) is not None:
            return denied
        try:
            page_num = _int_query(request, "pageNum", 1, 1, 1000)
            page_size = _int_query(request, "pageSize", 30, 1, 500)
        except KlingParamError as exc:
            return envelope(400, 1201, f"invalid parameter: {exc}")
        tasks = self.store.page(page_num, page_size, endpoint=endpoint.name)
        return envelope(200, 0, "SUCCEED", [self._task_data(task, request) for task in tasks])

    async def _status_delay(self) -> None:
        if (delay := self.knobs.config.status_latency_s) > 0:
            await asyncio.sleep(delay)

    @staticmethod
    def _task_info(task: KlingTask) -> dict[str, str]:
        external = task.request.external_task_id
        return {} if external is None else {"external_task_id": external}

    def _task_data(self, task: KlingTask, request: Request) -> dict[str, Any]:
        return self.task_object(task, str(request.base_url).rstrip("/"), self.clock())

    def task_object(self, task: KlingTask, base: str, now: float) -> dict[str, Any]:
        """The task as a query at unix time ``now`` answers it (result URLs under ``base``); callbacks send it too."""
        status, updated_at = task.state_at(now)
        data: dict[str, Any] = {
            "task_id": task.task_id,
            "task_status": status,
            "task_status_msg": (task.failure_msg or "") if status == FAILED else "",
            "task_info": self._task_info(task),
            "created_at": _ms(task.created_at),
            "updated_at": _ms(updated_at),
        }
        if status != SUCCEED:
            return data | {"task_result": {}}
        images = [
            {"index": i, "url": f"{base}/_emulator/files/kling/{task.task_id}/{i}.png"} for i in range(task.request.n)
        ]
        result: dict[str, Any] = {"images": images}
        if task.request.endpoint == kling_omni.ENDPOINT:
            series = task.request.result_type == "series"
            result = {"result_type": task.request.result_type, "images": [] if series else images}
            if series:
                result["series_images"] = images
        return data | {"final_unit_deduction": str(task.request.units), "task_result": result}
