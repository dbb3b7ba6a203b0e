"""The results console in a real browser (headless Debian Chromium via Playwright) against the real stack: the
API, a Celery worker and the emulator as subprocesses, SQLite, a private Redis.

Signs in with an API key, submits a job from the playground whose prompt is markup (it must show as text and
never run), watches it reach ``succeeded``, opens its image, cancels a slow Kling job from its page, filters the
list and reads the cost page. Screenshots go to ``tests/browser/artifacts/<test>/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Dialog, Page, expect

from tests.integration.harness import Emulator, ProcessesFactory
from tests.support import API_KEY, OTHER_API_KEY, free_port

# one xdist worker runs the module: its Chromium (a module fixture) and the stack start once
pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.xdist_group("browser")]

HOSTILE_PROMPT = "<img src=x onerror=alert(1)>"
FAST_MODEL = "gpt-image-1"
SLOW_PROMPT = "a lighthouse at dusk [latency=120]"


@pytest.fixture
def api_url(processes: ProcessesFactory, sqlite_url: str, emulator: Emulator) -> str:
    port = free_port()  # the signed image URLs name the API's own address
    stack = processes(sqlite_url, IMAGEJOBS_API_PORT=str(port), IMAGEJOBS_PUBLIC_BASE_URL=f"http://127.0.0.1:{port}")
    stack.worker(concurrency=4)
    return stack.api()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        yield context.new_page()
    finally:
        context.close()


def sign_in(page: Page, api_url: str, key: str = API_KEY) -> None:
    page.goto(f"{api_url}/ui")
    page.fill("#api-key", key)
    page.click("#sign-in-form button[type=submit]")
    expect(page.locator("#job-rows")).to_be_attached()


def submit_from_playground(page: Page, model: str, prompt: str) -> str:
    page.click("#nav a[data-view=playground]")
    page.select_option("#model", model)
    expect(page.locator("#fields legend")).to_have_text(f"Parameters of {model}")
    page.fill("#param-prompt", prompt)
    page.click("#submit")
    link = page.locator("#submitted")
    expect(link).to_be_visible(timeout=15_000)
    job_id = link.text_content()
    assert job_id
    return job_id


def status_of(page: Page, status: str) -> None:
    expect(page.locator(f"#view h1 .status[data-status={status}]")).to_be_visible(timeout=60_000)


def test_console_signs_in_submits_watches_opens_and_cancels(page: Page, api_url: str, artifacts: Path) -> None:
    dialogs: list[str] = []

    def record(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", record)

    page.goto(f"{api_url}/ui")
    page.fill("#api-key", "sk-not-a-key")
    page.click("#sign-in-form button[type=submit]")
    expect(page.locator("#sign-in-error")).to_have_text("That API key is not valid.")
    sign_in(page, api_url)
    page.screenshot(path=str(artifacts / "01-signed-in.png"))

    # the playground builds each model's own fields from its parameter schema
    page.click("#nav a[data-view=playground]")
    page.select_option("#model", "kling-image")
    expect(page.locator("#param-model_name")).to_be_visible()
    page.select_option("#model", FAST_MODEL)
    expect(page.locator("#param-model_name")).to_have_count(0)
    page.screenshot(path=str(artifacts / "02-playground.png"))

    job_id = submit_from_playground(page, FAST_MODEL, HOSTILE_PROMPT)
    page.click("#submitted")
    status_of(page, "succeeded")
    expect(page.locator("#timeline tr").first).to_be_visible()
    expect(page.locator("#timeline")).to_contain_text("succeeded")
    expect(page.locator("#request")).to_contain_text(HOSTILE_PROMPT)
    expect(page.locator("#cancel")).to_be_hidden()
    expect(page.locator("#summary dt").first).to_have_text("Model")
    expect(page.locator("#summary")).to_contain_text("Served by")
    expect(page.locator("#summary")).not_to_contain_text("[object")
    page.screenshot(path=str(artifacts / "03-job-succeeded.png"))

    # the image opens (a signed URL served without the key)
    with page.context.expect_page() as opened:
        page.click("#images a.image-link")
    image_page = opened.value
    image_page.wait_for_load_state()
    response = httpx.get(image_page.url, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("image/")
    image_page.screenshot(path=str(artifacts / "04-image.png"))
    image_page.close()

    # the list shows the hostile prompt as text: no element made of it, no script run
    page.click("#nav a[data-view=jobs]")
    row = page.locator(f"#job-rows tr[data-job-id='{job_id}']")
    expect(row.locator("td.prompt")).to_have_text(HOSTILE_PROMPT)
    expect(row.locator(".status")).to_have_text("succeeded")
    expect(row.locator("img.thumb")).to_have_js_property("naturalWidth", 1024)
    assert page.locator("img[src=x]").count() == 0
    assert row.locator("td.prompt").inner_html() == "&lt;img src=x onerror=alert(1)&gt;"

    # a slow Kling job, cancelled from its page
    slow_id = submit_from_playground(page, "kling-image", SLOW_PROMPT)
    page.click("#submitted")
    expect(page.locator("#cancel")).to_be_visible(timeout=15_000)
    page.screenshot(path=str(artifacts / "05-slow-job.png"))
    page.click("#cancel")
    status_of(page, "cancelled")
    expect(page.locator("#cancel")).to_be_hidden()
    expect(page.locator("#timeline")).to_contain_text("cancelled")
    page.screenshot(path=str(artifacts / "06-cancelled.png"))

    # the live list picks up both, and its filters narrow it
    page.click("#nav a[data-view=jobs]")
    expect(page.locator("#job-rows tr")).to_have_count(2)
    page.select_option("#filters select[name=status]", "cancelled")
    expect(page.locator("#job-rows tr")).to_have_count(1)
    expect(page.locator(f"#job-rows tr[data-job-id='{slow_id}']")).to_be_visible()
    page.select_option("#filters select[name=status]", "")
    page.fill("#filters input[name=q]", "lighthouse")
    expect(page.locator("#job-rows tr")).to_have_count(1)
    page.fill("#filters input[name=q]", "")
    expect(page.locator("#job-rows tr")).to_have_count(2)
    page.screenshot(path=str(artifacts / "07-list.png"))

    # the cost page: the succeeded job is billed (the cancelled one is not), drawn as a bar
    page.click("#nav a[data-view=costs]")
    expect(page.locator("#cost-table tbody tr")).to_have_count(1)
    expect(page.locator("#cost-table tbody tr")).to_contain_text(FAST_MODEL)
    expect(page.locator(f"svg.chart rect[data-model='{FAST_MODEL}']")).to_have_count(1)
    page.screenshot(path=str(artifacts / "08-costs.png"))

    assert dialogs == []


def test_console_shows_a_tenant_only_its_own_jobs(page: Page, api_url: str, artifacts: Path) -> None:
    created = httpx.post(
        f"{api_url}/v1/images/generations",
        json={"model": FAST_MODEL, "prompt": "only mine", "async": True},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=30,
    )
    assert created.status_code == 202, created.text
    sign_in(page, api_url, OTHER_API_KEY)
    page.wait_for_timeout(2_500)  # one refresh of the live list
    expect(page.locator("#job-rows tr")).to_have_count(0)
    page.goto(f"{api_url}/ui#/jobs/{created.json()['id']}")
    expect(page.locator("#view .error")).to_be_visible()
    page.screenshot(path=str(artifacts / "other-tenant.png"))
