"""The task dialects' pure parts: request mapping, task envelopes, error envelopes, and edit-body reading."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.exceptions import RequestValidationError
from PIL import Image
from starlette.datastructures import FormData, Headers, UploadFile

from producer.http import apimodels_routes, kling_routes
from producer.http.errors import ApiError, Failure, describe_failure
from producer.http.tasks import epoch_ms, parse_request
from producer.http.uploads import check_inline_sizes, form_fields, sniff_image_type
from shared.catalog import load_catalog
from shared.db.tables import Job
from shared.errors import InvalidRequestError, JobNotFoundError
from shared.jobs import JobStatus
from tests.fakes import png_bytes

CREATED = datetime(2026, 5, 21, 12, 0, 0, 123000, tzinfo=UTC)
URLS = ("http://api.test/v1/files/a.png?sig=1", "http://api.test/v1/files/b.png?sig=2")


def make_job(status: JobStatus, **changes: Any) -> Job:
    values: dict[str, Any] = {
        "id": "0123456789abcdef0123456789abcdef",
        "owner": "owner-1",
        "status": status,
        "model": "kling-image",
        "variant": "kling-v3",
        "provider": "kling",
        "upstream_model": "kling-v3",
        "operation": "text2img",
        "price_per": "image",
        "unit_price": Decimal("0.151"),
        "currency": "credits",
        "created_at": CREATED,
        "updated_at": CREATED + timedelta(seconds=5),
    }
    values.update(changes)
    return Job(**values)


def body_of(response: Any) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(response.body)
    return decoded


# --------------------------------------------------------------------------------------------- statuses


@pytest.mark.parametrize(
    ("status", "kling", "apimodels"),
    [
        (JobStatus.QUEUED, "submitted", "pending"),
        (JobStatus.SUBMITTING, "submitted", "pending"),
        (JobStatus.RUNNING, "processing", "processing"),
        (JobStatus.SUCCEEDED, "succeed", "completed"),
        (JobStatus.FAILED, "failed", "failed"),
        (JobStatus.TIMED_OUT, "failed", "failed"),
        (JobStatus.CANCELLED, "failed", "failed"),
    ],
)
def test_every_job_status_has_its_word_in_each_dialect(status: JobStatus, kling: str, apimodels: str) -> None:
    assert kling_routes.KLING_STATUS[status] == kling
    assert apimodels_routes.STATE[status] == apimodels


def test_timestamps_are_epoch_milliseconds() -> None:
    assert epoch_ms(CREATED) == 1779364800123


# --------------------------------------------------------------------------------------------- Kling-task


def test_a_kling_create_answer_is_the_seed_envelope() -> None:
    body = kling_routes.kling_envelope(kling_routes.created_data(make_job(JobStatus.QUEUED)))

    assert set(body) == {"code", "message", "request_id", "data"}
    assert body["code"] == 0 and body["message"] == "SUCCEED" and body["request_id"]
    assert body["data"] == {
        "task_id": "0123456789abcdef0123456789abcdef",
        "task_status": "submitted",
        "created_at": 1779364800123,
        "updated_at": 1779364805123,
    }


def test_a_succeeded_kling_task_lists_its_images_with_their_index() -> None:
    job = make_job(JobStatus.SUCCEEDED, external_task_id="order-7", finished_at=CREATED + timedelta(seconds=9))

    data = kling_routes.task_data(job, URLS)

    assert data["task_status"] == "succeed"
    assert data["task_status_msg"] == ""
    assert data["task_info"] == {"external_task_id": "order-7"}
    assert data["task_result"] == {"images": [{"index": 0, "url": URLS[0]}, {"index": 1, "url": URLS[1]}]}


@pytest.mark.parametrize("status", [JobStatus.FAILED, JobStatus.TIMED_OUT, JobStatus.CANCELLED])
def test_an_ended_kling_task_says_why(status: JobStatus) -> None:
    job = make_job(status, error_code="content_policy_violation", error_message="Flagged by moderation")

    data = kling_routes.task_data(job, ())

    assert data["task_status"] == "failed"
    assert data["task_status_msg"] == "Flagged by moderation"
    assert data["task_result"] == {"images": []}


def test_a_running_kling_task_has_no_message_and_no_images_yet() -> None:
    data = kling_routes.task_data(make_job(JobStatus.RUNNING), ())

    assert data["task_status"] == "processing"
    assert data["task_status_msg"] == ""
    assert data["task_result"] == {"images": []}
    assert "task_info" not in data


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        (Failure(401, "no key", code="missing_api_key"), 401, 1001),
        (Failure(401, "bad key", code="invalid_api_key"), 401, 1002),
        (Failure(400, "Invalid value for 'n'", param="n", code="invalid_parameter"), 400, 1201),
        (Failure(400, "not JSON", code="invalid_json"), 400, 1200),
        (Failure(402, "over budget", code="insufficient_quota"), 402, 1102),
        (Failure(403, "forbidden"), 403, 1103),
        (Failure(404, "No task", param="task_id", code="task_not_found"), 404, 1203),
        (Failure(429, "slow down"), 429, 1302),
        (Failure(500, "boom", code="internal_error"), 500, 5000),
        (Failure(503, "maintenance"), 503, 5001),
        (Failure(504, "timeout"), 504, 5002),
        (Failure(502, "bad gateway"), 502, 5000),
    ],
)
def test_kling_errors_use_klings_codes_and_statuses(failure: Failure, status: int, code: int) -> None:
    response = kling_routes.kling_error(failure)

    assert response.status_code == status
    body = body_of(response)
    assert set(body) == {"code", "message", "request_id"}
    assert body["code"] == code
    assert body["message"] == failure.message


def test_a_kling_body_without_model_is_a_kling_image_task_with_the_default_model_name() -> None:
    request = kling_routes.kling_request({"prompt": "a fox"}, load_catalog())

    assert request.model == "kling-image"
    assert request.model_name == kling_routes.DEFAULT_MODEL_NAME == "kling-v1"


def test_klings_legacy_model_field_names_the_model_name() -> None:
    request = kling_routes.kling_request({"model": "kling-v1-5", "prompt": "a fox"}, load_catalog())

    assert (request.model, request.model_name) == ("kling-image", "kling-v1-5")


def test_a_kling_body_keeps_a_model_and_model_name_it_names() -> None:
    catalog = load_catalog()

    explicit = kling_routes.kling_request({"model": "kling-image", "model_name": "kling-v3", "prompt": "x"}, catalog)
    other = kling_routes.kling_request({"model": "gpt-image-1", "prompt": "x"}, catalog)
    unknown = kling_routes.kling_request({"model": "kling-v99", "prompt": "x"}, catalog)

    assert (explicit.model, explicit.model_name) == ("kling-image", "kling-v3")
    assert (other.model, other.model_name) == ("gpt-image-1", None)
    assert (unknown.model, unknown.model_name) == ("kling-v99", None)  # the catalog refuses it, naming 'model'


@pytest.mark.parametrize("field", ["async", "response_format"])
def test_a_kling_body_refuses_fields_of_the_openai_dialect(field: str) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        kling_routes.kling_request({"prompt": "x", field: True}, load_catalog())
    assert raised.value.param == field


# --------------------------------------------------------------------------------------------- apimodels


def test_an_apimodels_create_answer_is_the_seed_envelope() -> None:
    body = apimodels_routes.envelope(apimodels_routes.created_data(make_job(JobStatus.QUEUED)))

    assert body == {
        "code": 200,
        "msg": "success",
        "data": {"taskId": "0123456789abcdef0123456789abcdef", "state": "pending", "model": "kling-image-gen/kling-v3"},
    }


def test_a_completed_apimodels_task_has_its_urls_and_times() -> None:
    job = make_job(JobStatus.SUCCEEDED, finished_at=CREATED + timedelta(seconds=50))

    data = apimodels_routes.task_data(job, URLS)

    assert data == {
        "taskId": job.id,
        "state": "completed",
        "model": "kling-image-gen/kling-v3",
        "resultUrls": list(URLS),
        "createTime": 1779364800123,
        "completeTime": 1779364850123,
    }


def test_a_failed_apimodels_task_has_its_reason() -> None:
    job = make_job(
        JobStatus.FAILED,
        error_code="content_policy_violation",
        error_message="Content policy violation",
        finished_at=CREATED + timedelta(seconds=3),
    )

    data = apimodels_routes.task_data(job, ())

    assert data["state"] == "failed"
    assert data["failMsg"] == "Content policy violation"
    assert "resultUrls" not in data
    assert data["completeTime"] == 1779364803123


def test_a_pending_apimodels_task_has_neither_urls_nor_an_end() -> None:
    data = apimodels_routes.task_data(make_job(JobStatus.RUNNING), ())

    assert data == {
        "taskId": "0123456789abcdef0123456789abcdef",
        "state": "processing",
        "model": "kling-image-gen/kling-v3",
        "createTime": 1779364800123,
    }


def test_the_apimodels_model_label_follows_provider_and_upstream_model() -> None:
    job = make_job(JobStatus.QUEUED, provider="openai", upstream_model="gpt-image-1", model="gpt-image-1")

    assert apimodels_routes.model_label(job) == "openai-image-gen/gpt-image-1"


@pytest.mark.parametrize("status", [400, 401, 402, 404, 413, 500])
def test_apimodels_errors_carry_the_http_status_as_code(status: int) -> None:
    response = apimodels_routes.apimodels_error(Failure(status, "what went wrong"))

    assert response.status_code == status
    assert body_of(response) == {"code": status, "msg": "what went wrong", "data": None}


def test_an_apimodels_body_is_the_unified_request() -> None:
    body = {
        "model": "kling-multi-image",
        "multi_model_name": "kling-v2",
        "subject_image_list": [{"subject_image": "u"}],
    }

    request = apimodels_routes.apimodels_request(body)

    assert (request.model, request.multi_model_name, request.model_name) == ("kling-multi-image", "kling-v2", None)
    with pytest.raises(InvalidRequestError) as raised:
        apimodels_routes.apimodels_request({"model": "m", "async": True})
    assert raised.value.param == "async"


# --------------------------------------------------------------------------------------------- failures


def test_every_exception_is_described_once_for_all_dialects() -> None:
    assert describe_failure(ApiError(401, "no", code="missing_api_key")) == Failure(401, "no", None, "missing_api_key")
    invalid = describe_failure(InvalidRequestError("bad n", param="n"))
    assert (invalid.status, invalid.param, invalid.code) == (400, "n", "invalid_parameter")
    missing = describe_failure(JobNotFoundError("abc"))
    assert (missing.status, missing.param, missing.code) == (404, "task_id", "task_not_found")
    limited = ApiError(429, "slow down", code="rate_limit_exceeded")
    limited.headers = {"Retry-After": "7"}  # type: ignore[attr-defined]
    assert describe_failure(limited).headers == {"Retry-After": "7"}
    assert kling_routes.kling_error(describe_failure(limited)).headers["retry-after"] == "7"
    crash = describe_failure(RuntimeError("secret detail"))
    assert crash.status == 500 and "secret detail" not in crash.message


def test_a_bad_field_is_named_as_a_body_field() -> None:
    with pytest.raises(RequestValidationError) as raised:
        parse_request({"model": "m", "n": "2"})
    assert raised.value.errors()[0]["loc"] == ("body", "n")
    failure = describe_failure(raised.value)
    assert (failure.status, failure.param) == (400, "n")

    extra = describe_failure(_validation_error({"model": "m", "colour": "red"}))
    assert extra.param == "colour" and extra.message.startswith("Unrecognized request argument")


def _validation_error(fields: dict[str, Any]) -> RequestValidationError:
    with pytest.raises(RequestValidationError) as raised:
        parse_request(fields)
    return raised.value


def test_form_text_is_converted_to_the_field_types() -> None:
    request = parse_request({"model": "m", "n": "2", "async": "true", "image_fidelity": "0.5"}, lax=True)

    assert (request.n, request.async_, request.image_fidelity) == (2, True, 0.5)


# --------------------------------------------------------------------------------------------- edit bodies


def upload(data: bytes, content_type: str | None = "image/png") -> UploadFile:
    headers = Headers({"content-type": content_type}) if content_type else Headers()
    return UploadFile(io.BytesIO(data), size=len(data), filename="file", headers=headers)


def read_form(items: list[tuple[str, Any]], *, max_image_bytes: int = 1 << 20) -> dict[str, Any]:
    return asyncio.run(form_fields(FormData(items), max_image_bytes=max_image_bytes))


def data_uri(data: bytes, mime_type: str = "image/png") -> str:
    return f"data:{mime_type};base64,{base64.b64encode(data).decode()}"


def test_one_image_file_is_image_and_several_are_images() -> None:
    first, second = png_bytes(color="red"), png_bytes(color="blue")

    single = read_form([("image", upload(first)), ("prompt", "p"), ("mask", upload(second))])
    several = read_form([("image[]", upload(first)), ("image[]", upload(second))])
    one_in_brackets = read_form([("image[]", upload(first))])

    assert single == {"image": data_uri(first), "prompt": "p", "mask": data_uri(second)}
    assert several == {"images": [data_uri(first), data_uri(second)]}
    assert one_in_brackets == {"images": [data_uri(first)]}


def test_the_bytes_decide_the_image_type_of_an_untyped_file() -> None:
    jpeg = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(jpeg, format="JPEG")

    fields = read_form([("image", upload(jpeg.getvalue(), "application/octet-stream"))])

    assert fields["image"].startswith("data:image/jpeg;base64,")


def test_list_fields_repeat_or_carry_json() -> None:
    fields = read_form(
        [
            ("image_urls", "https://example.com/a.png"),
            ("image_urls[]", "https://example.com/b.png"),
            ("subject_image_list", '[{"subject_image": "https://example.com/s.png"}]'),
            ("element_list", '{"element_id": 7}'),
        ]
    )

    assert fields == {
        "image_urls": ["https://example.com/a.png", "https://example.com/b.png"],
        "subject_image_list": [{"subject_image": "https://example.com/s.png"}],
        "element_list": [{"element_id": 7}],
    }


@pytest.mark.parametrize(
    ("items", "param", "status"),
    [
        pytest.param([("image", upload(b"hello", "text/plain"))], "image", 400, id="text-file"),
        pytest.param([("image", upload(b"GIF89a" + b"\0" * 20, "image/gif"))], "image", 400, id="gif"),
        pytest.param([("image", upload(b"not an image at all", None))], "image", 400, id="unknown-bytes"),
        pytest.param([("mask", upload(b"\xff\xd8\xff" + b"\0" * 20, "image/jpeg"))], "mask", 400, id="jpeg-mask"),
        pytest.param([("prompt", upload(png_bytes()))], "prompt", 400, id="file-for-text-field"),
        pytest.param([("prompt", "a"), ("prompt", "b")], "prompt", 400, id="repeated-scalar"),
        pytest.param([("subject_image_list", "[{")], "subject_image_list", 400, id="bad-json-list"),
        pytest.param([("image", upload(b"\x89PNG\r\n\x1a\n" + b"\0" * 200))], "image", 413, id="file-too-large"),
    ],
)
def test_a_bad_form_part_is_refused_naming_its_field(items: list[tuple[str, Any]], param: str, status: int) -> None:
    with pytest.raises((InvalidRequestError, ApiError)) as raised:
        read_form(items, max_image_bytes=100)
    failure = describe_failure(raised.value)
    assert (failure.status, failure.param) == (status, param)


def test_inline_images_over_the_limit_are_refused_naming_the_field() -> None:
    big = base64.b64encode(b"x" * 2000).decode()
    check_inline_sizes({"image": "https://example.com/huge.png", "images": [big[:100]]}, max_image_bytes=1000)

    for fields, param in (({"image": big}, "image"), ({"images": ["abcd", f"data:image/png;base64,{big}"]}, "images")):
        with pytest.raises(ApiError) as raised:
            check_inline_sizes(fields, max_image_bytes=1000)
        assert (raised.value.status, raised.value.param) == (413, param)


def test_image_types_are_sniffed_from_their_first_bytes() -> None:
    assert sniff_image_type(png_bytes()) == "image/png"
    assert sniff_image_type(b"\xff\xd8\xff\xe0rest") == "image/jpeg"
    assert sniff_image_type(b"RIFF\x10\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert sniff_image_type(b"GIF89a") is None
