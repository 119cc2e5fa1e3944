"""The dashboard behind API keys, in headless chromium: a login form, read keys see but cannot
act, admin keys act, a submit-only key is turned away.

An API process of its own on a database of its own: a key in the session's database would close
the shared, open API for every other test."""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from playwright.sync_api import Page, expect

from taskq_core.db import engines
from taskq_core.processes import spawn
from tests.conftest import Servers, create_keys, free_port, taskq, wait_for

QUEUE = "dashboard-auth"  # Redis lists of its own beside the shared API's


@dataclass
class Keyed:
    url: str
    database_url: str
    keys: dict[str, str]  # scope -> a key with only that scope
    env: dict[str, str]  # for `taskq keys ...` against this API's database

    def keys_command(self, *args: str) -> str:
        done = subprocess.run(
            taskq("keys", *args), env=self.env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def sql(self, statement: str, params: object = None) -> list[tuple[object, ...]]:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            cursor = conn.execute(statement, params)  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description else []

    def submit_delayed(self) -> int:
        response = httpx.post(
            f"{self.url}/tasks/",
            json={"task_type": "FibonacciTask", "input_data": {"n": 3}, "delay_seconds": 3600},
            headers={"Authorization": f"Bearer {self.keys['admin']}"},
        )
        assert response.status_code == 201, response.text
        task_id: int = response.json()["id"]
        return task_id


@pytest.fixture(scope="module")
def keyed(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keyed]:
    name = f"taskq_ui_auth_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(servers.database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    database_url = servers.database_url.rsplit("/", 1)[0] + f"/{name}"
    engines.upgrade(database_url)
    env = servers.env(TASKQ_DATABASE_URL=database_url, TASKQ_QUEUE=QUEUE)
    scopes = ("read", "submit", "admin")
    made = create_keys(env, *(["--scope", scope, "--name", f"ui-{scope}"] for scope in scopes))
    keys = dict(zip(scopes, made, strict=True))
    port = free_port()
    log = tmp_path_factory.mktemp("keyed-api") / "api.log"
    with log.open("wb") as out:
        proc = spawn(
            taskq("api", "--port", str(port)),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            new_session=False,
        )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"the API exited:\n{log.read_text()}")
        try:
            return httpx.get(f"{url}/health").status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, what="the keyed API to start")
    yield Keyed(url, database_url, keys, env)
    proc.terminate()
    proc.wait(15)
    with psycopg.connect(servers.database_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def log_in(page: Page, keyed: Keyed, scope: str, target: str = "/ui") -> None:
    page.goto(keyed.url + target)
    expect(page).to_have_url(f"{keyed.url}/ui/login?next={target.replace('/', '%2F')}")
    page.fill("#key", keyed.keys[scope])
    page.get_by_role("button", name="Log in").click()


def test_a_read_key_sees_but_cannot_cancel(keyed: Keyed, page: Page, screenshots: Path) -> None:
    task_id = keyed.submit_delayed()
    log_in(page, keyed, "read", f"/ui/tasks/{task_id}")
    expect(page.locator("#task-status")).to_have_text("pending")
    expect(page.locator("header")).to_contain_text("key:ui-read · read-only")
    expect(page.get_by_role("button", name="Cancel")).to_have_count(0)
    expect(page.locator(".actions")).to_contain_text("cancel and retry need admin")
    shoot = screenshots / "read-only-task.png"
    page.screenshot(path=str(shoot), full_page=True)

    # Even a hand-made POST with this session's cookie and valid CSRF token is refused.
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    with httpx.Client(base_url=keyed.url, cookies=cookies) as client:
        response = client.post(f"/ui/tasks/{task_id}/cancel", data={"csrf_token": token})
    assert response.status_code == 403
    assert "need admin" in response.text
    assert keyed.sql("SELECT status FROM tasks WHERE id = %s", [task_id]) == [("pending",)]


def test_an_admin_key_cancels(keyed: Keyed, page: Page) -> None:
    task_id = keyed.submit_delayed()
    log_in(page, keyed, "admin", f"/ui/tasks/{task_id}")
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#task-status")).to_have_text("cancelled")
    assert keyed.sql("SELECT status FROM tasks WHERE id = %s", [task_id]) == [("cancelled",)]


def test_wrong_and_submit_only_keys_are_turned_away(keyed: Keyed, page: Page) -> None:
    page.goto(f"{keyed.url}/ui/tasks")
    page.fill("#key", "not-a-key-" + "x" * 30)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator(".field-error")).to_have_text("That key is not valid.")
    page.fill("#key", keyed.keys["submit"])
    page.get_by_role("button", name="Log in").click()
    expect(page.locator(".field-error")).to_contain_text("needs a read or admin key")
    # Nor do the live fragments answer without a session.
    assert httpx.get(f"{keyed.url}/ui/live/overview").status_code == 401


def test_logging_out_ends_the_session(keyed: Keyed, page: Page, screenshots: Path) -> None:
    log_in(page, keyed, "read")
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(f"{keyed.url}/ui/login")
    page.screenshot(path=str(screenshots / "login.png"), full_page=True)
    page.goto(f"{keyed.url}/ui/tasks")
    expect(page).to_have_url(f"{keyed.url}/ui/login?next=%2Fui%2Ftasks")


def test_a_revoked_keys_session_ends(keyed: Keyed, page: Page) -> None:
    keyed.keys["doomed"] = keyed.keys_command("create", "--scope", "read", "--name", "ui-doomed")
    log_in(page, keyed, "doomed", "/ui/tasks")
    expect(page.get_by_role("heading", name="Tasks")).to_be_visible()
    keyed.keys_command("revoke", "ui-doomed")
    # Within the key cache's expiry (5 s) the live refresh is refused and the page goes to login.
    expect(page).to_have_url(re.compile(r"/ui/login\?next="), timeout=20_000)
