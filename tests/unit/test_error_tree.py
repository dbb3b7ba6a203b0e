"""Every error class imagejobs raises joins the one tree rooted at ``shared.errors.ImageJobsError``."""

from __future__ import annotations

import pytest

from producer.cancel import JobAlreadyEndedError
from producer.http.errors import ApiError
from producer.keys import KeyReferenceError, SpendBudgetExceededError
from shared.egress import EgressRefusedError
from shared.errors import ImageJobsError, PermanentProviderError
from shared.storage import StorageKeyError
from worker.inputs import InputImageError


@pytest.mark.parametrize(
    "error_class",
    [ApiError, SpendBudgetExceededError, JobAlreadyEndedError, KeyReferenceError, StorageKeyError, EgressRefusedError],
)
def test_the_stray_error_classes_are_imagejobs_errors(error_class: type[Exception]) -> None:
    assert issubclass(error_class, ImageJobsError)


def test_a_bad_input_image_is_a_permanent_provider_error() -> None:
    assert issubclass(InputImageError, PermanentProviderError)


def test_an_unknown_key_reference_is_still_a_lookup_error_for_existing_callers() -> None:
    assert issubclass(KeyReferenceError, LookupError)
