"""The dashboard in a real headless chromium against the real API, PostgreSQL, Redis and workers."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

import httpx
from playwright.sync_api import Page, expect

from tests.conftest import Api, Processes, Servers, Workers, wait_finished, wait_for
from tests.plugins.taskq_longwork import gate_key, pattern
from tests.ui.conftest import README_IMAGE

FINISHED = 30_000  # ms: generous, for a loaded machine


def shoot(page: Page, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def test_a_task_submitted_from_the_form_reaches_completed(
    api: Api, workers: Workers, page: Page, screenshots: Path
) -> None:
    workers.start()
    page.goto(f"{api.url}/ui/task-types")
    expect(page.locator("body")).to_contain_text("taskq-fibonacci 0.1.0")
    shoot(page, screenshots, "task-types")
    page.get_by_role("link", name="FibonacciTask", exact=True).click()
    expect(page.get_by_role("heading", name="FibonacciTask")).to_be_visible()
    page.fill("#f-n", "10")
    page.select_option("#f-priority", "4")
    shoot(page, screenshots, "task-type-form")
    page.get_by_role("button", name="Submit task").click()

    expect(page).to_have_url(re.compile(r"/ui/tasks/\d+$"))
    # The page refreshes itself: nobody reloads it.
    expect(page.locator("#task-status")).to_have_text("completed", timeout=FINISHED)
    expect(page.locator("#task-result")).to_contain_text('"result": 55')
    expect(page.locator("table.list tbody tr")).to_have_count(1)  # one attempt
    shoot(page, screenshots, "task-completed")
    task_id = int(page.url.rsplit("/", 1)[1])
    assert api.client.get(f"/tasks/{task_id}").json()["priority"] == 4


def test_an_invalid_input_shows_its_error_beside_the_field(
    api: Api, clean: Servers, page: Page, screenshots: Path
) -> None:
    page.goto(f"{api.url}/ui/task-types/FibonacciTask")
    page.fill("#f-n", "-3")
    page.get_by_role("button", name="Submit task").click()
    error = page.locator('[data-error-for="n"]')
    expect(error).to_contain_text("greater than or equal to 0")
    expect(page.locator("#f-n")).to_have_value("-3")  # what was typed stays
    shoot(page, screenshots, "invalid-input")

    page.fill("#f-n", "ten")
    page.get_by_role("button", name="Submit task").click()
    expect(error).to_contain_text("valid integer")

    # A list field (one address per line): the error names which line is wrong.
    page.goto(f"{api.url}/ui/task-types/EmailTask")
    page.fill("#f-to", "ann@example.com\nnot-an-address")
    page.fill("#f-subject", "Hello")
    page.get_by_role("button", name="Submit task").click()
    expect(page.locator('[data-error-for="to"]')).to_contain_text(
        "line 2: value is not a valid email address"
    )
    expect(page.locator('[data-error-for="body"]')).to_contain_text("Field required")
    shoot(page, screenshots, "invalid-email")
    assert clean.sql("SELECT count(*) FROM tasks") == [(0,)]


def test_a_delayed_task_is_cancelled_from_its_page(
    api: Api, clean: Servers, page: Page, screenshots: Path
) -> None:
    created = api.client.post(
        "/tasks/",
        json={"task_type": "FibonacciTask", "input_data": {"n": 5}, "delay_seconds": 3600},
    ).json()
    page.goto(f"{api.url}/ui/tasks/{created['id']}")
    expect(page.locator("#task-status")).to_have_text("pending")
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator(".notice")).to_have_text("Cancelled.")
    expect(page.locator("#task-status")).to_have_text("cancelled")
    expect(page.get_by_role("button", name="Cancel")).to_have_count(0)
    shoot(page, screenshots, "task-cancelled")
    assert clean.sql("SELECT status FROM tasks WHERE id = %s", [created["id"]]) == [("cancelled",)]


def test_a_cancelled_task_is_retried_and_runs(
    api: Api, workers: Workers, page: Page, screenshots: Path
) -> None:
    created = api.client.post(
        "/tasks/",
        json={"task_type": "FibonacciTask", "input_data": {"n": 12}, "delay_seconds": 3600},
    ).json()
    assert api.client.post(f"/tasks/{created['id']}/cancel").status_code == 200
    workers.start()
    page.goto(f"{api.url}/ui/tasks/{created['id']}")
    page.get_by_role("button", name="Retry").click()
    expect(page.locator(".notice")).to_contain_text("Pending again")
    expect(page.locator("#task-status")).to_have_text("completed", timeout=FINISHED)
    expect(page.locator("#task-result")).to_contain_text('"result": 144')


def test_the_task_list_filters_through_the_url(
    api: Api, workers: Workers, page: Page, screenshots: Path
) -> None:
    workers.start()
    batch = [
        {"task_type": "FibonacciTask", "input_data": {"n": n}, "priority": 4} for n in range(3)
    ]
    batch.append({"task_type": "FailTask", "input_data": {}, "max_attempts": 1})
    assert api.client.post("/tasks/batch", json={"tasks": batch}).status_code == 201
    wait_finished(workers.servers, 4)

    page.goto(f"{api.url}/ui/tasks?status=failed")
    rows = page.locator("table.tasks tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("FailTask")

    page.goto(f"{api.url}/ui/tasks")
    page.select_option("select[name=task_type]", "FibonacciTask")
    page.select_option("select[name=priority]", "4")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"task_type=FibonacciTask.*priority=4"))
    expect(rows).to_have_count(3)
    ids = [int(rows.nth(i).locator("td").first.inner_text()) for i in range(3)]
    assert ids == sorted(ids, reverse=True)  # newest first
    shoot(page, screenshots, "tasks")

    page.goto(f"{api.url}/ui/tasks?status=failed")
    rows.first.get_by_role("link").click()
    expect(page.locator(".card.error")).to_contain_text("ValueError: boom")
    expect(page.locator(".card.error pre")).to_contain_text("Traceback")
    shoot(page, screenshots, "task-failed")


def test_the_overview_shows_queues_counts_throughput_and_workers(
    api: Api, workers: Workers, page: Page, screenshots: Path
) -> None:
    # Work that finished (for the chart and the counts) on a worker with one slot...
    workers.start(concurrency=1)
    batch = [{"task_type": "FibonacciTask", "input_data": {"n": n % 90}} for n in range(300)]
    batch += [{"task_type": "FailTask", "input_data": {}, "max_attempts": 1} for _ in range(20)]
    assert api.client.post("/tasks/batch", json={"tasks": batch}).status_code == 201
    wait_finished(workers.servers, len(batch))
    # ...then that slot and its runner taken by long tasks, so what comes next stays queued in
    # Redis.
    sleeper = api.client.post(
        "/tasks/", json={"task_type": "AsyncSleepTask", "input_data": {"seconds": 60}}
    ).json()
    blocker = {"task_type": "BlockingSleepTask", "input_data": {"seconds": 60}}
    sleepers = [sleeper["id"], api.client.post("/tasks/", json=blocker).json()["id"]]
    wait_for(
        lambda: (
            workers.servers.sql(
                "SELECT count(*) FROM tasks WHERE id = ANY(%s) AND status = 'running'", [sleepers]
            )[0][0]
            == len(sleepers)
        ),
        what="the long tasks to start",
    )
    queued = [{"task_type": "FibonacciTask", "input_data": {"n": 7}, "priority": 5}] * 7
    queued += [{"task_type": "FibonacciTask", "input_data": {"n": 7}, "priority": 2}] * 3
    first = api.client.post("/tasks/batch", json={"tasks": queued}).json()["tasks"][0]
    api.client.post(
        "/tasks/", json={"task_type": "FibonacciTask", "input_data": {"n": 1}, "delay_seconds": 60}
    )

    page.goto(f"{api.url}/ui")
    expect(page.locator('[data-priority="5"]')).to_have_text("7")
    expect(page.locator('[data-priority="2"]')).to_have_text("3")
    expect(page.locator('[data-count="pending"]')).to_have_text("11")
    # Below 100,000 tasks the finished ones are counted exactly (then the planner's estimate).
    expect(page.locator('[data-count="completed"]')).to_have_text("300")
    expect(page.locator('[data-count="running"]')).to_have_text(str(len(sleepers)))
    expect(page.locator("#overview")).to_contain_text("Workers online (1)")
    expect(page.locator("td.running").first).to_contain_text(f"{sleeper['id']} AsyncSleepTask")
    expect(page.locator("[data-oldest-age]")).to_have_text(re.compile(r"^\d+s$"))
    expect(page.locator(f'a[href="/ui/tasks/{first["id"]}"]')).to_be_visible()
    # Live: the overview refreshes itself.
    expect(page.locator("#overview[data-refreshed-at]")).to_have_count(1)
    shoot(page, screenshots, "overview")
    # The README's picture is refreshed on request only: a test run leaves the tree clean.
    if os.environ.get("TASKQ_TEST_UPDATE_README_IMAGE") == "1":
        README_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshots / "overview.png", README_IMAGE)


def test_every_post_needs_the_sessions_csrf_token(api: Api, clean: Servers) -> None:
    created = api.client.post(
        "/tasks/", json={"task_type": "FibonacciTask", "input_data": {"n": 5}, "delay_seconds": 60}
    ).json()
    with httpx.Client(base_url=api.url) as browser:
        assert browser.get(f"/ui/tasks/{created['id']}").status_code == 200  # gets a session
        cookie = browser.cookies["taskq_session"]
        response = browser.post(f"/ui/tasks/{created['id']}/cancel", data={"csrf_token": "x"})
        assert response.status_code == 403
        forged = browser.post(f"/ui/tasks/{created['id']}/cancel")
        assert forged.status_code == 403
        assert browser.cookies["taskq_session"] == cookie
    assert clean.sql("SELECT status FROM tasks") == [("pending",)]


def test_the_dashboard_stays_out_of_the_api_schema(api: Api) -> None:
    paths = api.client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith("/ui")]


def test_the_session_cookie_is_httponly_strict_and_signed(api: Api, clean: Servers) -> None:
    response = httpx.get(f"{api.url}/ui")
    header = response.headers["set-cookie"]
    assert "HttpOnly" in header
    assert "SameSite=strict" in header or "SameSite=Strict" in header
    assert "Path=/ui" in header
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    value = response.cookies["taskq_session"]
    payload = value.rsplit(".", 1)[0]
    tampered = httpx.get(f"{api.url}/ui", cookies={"taskq_session": f"{payload}.{'0' * 64}"})
    assert "set-cookie" in tampered.headers  # refused, and a new session issued in its place


def test_the_task_list_pages_by_cursor(api: Api, clean: Servers, page: Page) -> None:
    batch = [{"task_type": "FibonacciTask", "input_data": {"n": n}} for n in range(60)]
    ids = [t["id"] for t in api.client.post("/tasks/batch", json={"tasks": batch}).json()["tasks"]]
    page.goto(f"{api.url}/ui/tasks?task_type=FibonacciTask")
    rows = page.locator("table.tasks tbody tr")
    expect(rows).to_have_count(50)
    expect(rows.first.locator("td").first).to_have_text(str(ids[-1]))
    page.get_by_role("link", name="older »").click()
    expect(page).to_have_url(re.compile(rf"task_type=FibonacciTask&cursor={ids[10]}$"))
    expect(rows).to_have_count(10)
    expect(rows.last.locator("td").first).to_have_text(str(ids[0]))
    expect(page.get_by_role("link", name="older »")).to_have_count(0)
    page.get_by_role("link", name="« newest").click()
    expect(rows).to_have_count(50)


def test_a_running_task_is_stopped_from_its_page(api: Api, workers: Workers, page: Page) -> None:
    workers.start()
    created = api.client.post(
        "/tasks/", json={"task_type": "AsyncSleepTask", "input_data": {"seconds": 60}}
    ).json()
    page.goto(f"{api.url}/ui/tasks/{created['id']}")
    expect(page.locator("#task-status")).to_have_text("running", timeout=FINISHED)
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator(".notice")).to_have_text("It was running: its worker was asked to stop it.")
    expect(page.locator("#task-status")).to_have_text("cancelled", timeout=FINISHED)
    expect(page.locator("table.list tbody tr").first).to_contain_text("cancelled")  # the attempt


def test_a_failed_task_retried_keeps_its_history(api: Api, workers: Workers, page: Page) -> None:
    workers.start()
    created = api.client.post(
        "/tasks/", json={"task_type": "FailTask", "input_data": {}, "max_attempts": 1}
    ).json()
    page.goto(f"{api.url}/ui/tasks/{created['id']}")
    expect(page.locator("#task-status")).to_have_text("failed", timeout=FINISHED)
    page.get_by_role("button", name="Retry").click()
    expect(page.locator(".notice")).to_contain_text("Pending again")
    attempts = page.locator("table.list tbody tr")
    expect(attempts).to_have_count(2, timeout=FINISHED)  # the first failure, then the retry's
    expect(page.locator("#task-status")).to_have_text("failed")
    # Retrying what is not failed or cancelled is refused, and changes nothing.
    workers.servers.sql("UPDATE tasks SET status = 'completed' WHERE id = %s", [created["id"]])
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    with httpx.Client(base_url=api.url, cookies=cookies) as client:
        response = client.post(f"/ui/tasks/{created['id']}/retry", data={"csrf_token": token})
    assert response.status_code == 303
    assert response.headers["location"].endswith("done=not-retried")
    assert workers.servers.sql("SELECT status FROM tasks WHERE id = %s", [created["id"]]) == [
        ("completed",)
    ]


def test_a_running_tasks_progress_and_a_finished_tasks_artifacts_show(
    api: Api, clean: Servers, processes: Processes, sites: dict[str, Path]
) -> None:
    long_workers = Workers(clean, processes, [sites["taskq-testkit"], sites["taskq-longwork"]])
    running = api.client.post(
        "/tasks/", json={"task_type": "ProgressTask", "input_data": {"reports": 10}}
    ).json()
    written = api.client.post(
        "/tasks/", json={"task_type": "ArtifactTask", "input_data": {"name": "r.csv", "size": 9}}
    ).json()
    long_workers.start(1, 4, TASKQ_ARTIFACTS_URL=str(api.artifacts))
    with httpx.Client(base_url=api.url) as browser:

        def shown(path: str, text: str) -> bool:
            return text in browser.get(path).text

        wait_for(
            lambda: shown(f"/ui/tasks/{running['id']}", 'max="20" value="10"'),
            what="the progress bar on the task page",
        )
        page = browser.get(f"/ui/tasks/{running['id']}").text
        assert "10 / 20 (50.0%)" in page
        assert "halfway" in page
        rows = browser.get("/ui/tasks?fragment=true").text
        assert '<progress max="20" value="10" title="halfway">' in rows
        wait_for(lambda: shown(f"/ui/tasks/{written['id']}", "r.csv"), what="the artifact list")
        page = browser.get(f"/ui/tasks/{written['id']}").text
        assert "9 bytes" in page
        assert "application/octet-stream" in page
        assert hashlib.sha256(pattern(9)).hexdigest() in page
    with clean.redis() as client:
        client.rpush(gate_key(running["id"], 1), "go")
