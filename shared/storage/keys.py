"""The keys objects are stored under: ``jobs/<job id>/<n>.<ext>`` (results), ``inputs/<job id>/<n>.<ext>`` (inputs).

Every key of a job starts with one of its prefixes, so erasing a job is deleting two prefixes.
"""

from __future__ import annotations

import re

from shared.errors import ImageJobsError

_KEY = re.compile(r"^[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-]+)*\.(png|jpg|jpeg|webp)$")
CONTENT_TYPES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp"}
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}

RESULTS_PREFIX = "jobs"
INPUTS_PREFIX = "inputs"


class StorageKeyError(ImageJobsError):
    """A storage key that is not one of ours (e.g. contains '..')."""


def checked_key(key: str) -> str:
    if not _KEY.fullmatch(key):  # not match(): '$' would accept a trailing newline
        raise StorageKeyError(key)
    return key


def image_key(job_id: str, index: int, extension: str) -> str:
    return f"{RESULTS_PREFIX}/{job_id}/{index}.{extension}"


def input_key(job_id: str, index: int, extension: str) -> str:
    return f"{INPUTS_PREFIX}/{job_id}/{index}.{extension}"


def result_prefix(job_id: str) -> str:
    return f"{RESULTS_PREFIX}/{job_id}/"


def input_prefix(job_id: str) -> str:
    return f"{INPUTS_PREFIX}/{job_id}/"


def content_type_of(key: str) -> str:
    return CONTENT_TYPES[key.rsplit(".", 1)[1]]
