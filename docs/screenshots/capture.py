"""Take the README's screenshots from a running Tunix RT (for example `make run`).

    TUNIX_URL=http://127.0.0.1:8000 TUNIX_USER=admin TUNIX_PASSWORD=... \
        .venv/bin/python docs/screenshots/capture.py

It creates a few runs through the API (dry-runs, a local run, a queued run and a cancelled one),
then saves run-list.png, run-detail.png and run-launch.png beside this file.
"""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright

URL = os.environ.get("TUNIX_URL", "http://127.0.0.1:8000").rstrip("/")
USER = os.environ.get("TUNIX_USER", "admin")
PASSWORD = os.environ["TUNIX_PASSWORD"]
HERE = Path(__file__).resolve().parent


def call(
    method: str, path: str, token: str | None = None, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{URL}{path}", data=data, method=method)  # noqa: S310
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Token {token}")
    with urllib.request.urlopen(request) as response:  # noqa: S310 - operator-given URL
        answer: dict[str, Any] = json.loads(response.read() or b"{}")
        return answer


def main() -> None:
    token = call("POST", "/api/auth/token", body={"username": USER, "password": PASSWORD})["token"]
    base = {"dataset_key": "tunix-demo-v1"}
    detail = call(
        "POST",
        "/api/tunix/run",
        token,
        {**base, "model_id": "google/gemma-3-270m", "num_epochs": 2, "batch_size": 16},
    )
    call("POST", "/api/tunix/run", token, {**base, "model_id": "google/gemma-3-1b", "lora_rank": 8})
    call(
        "POST",
        "/api/tunix/run",
        token,
        {**base, "model_id": "meta-llama/Llama-3.2-1B", "dry_run": False},
    )
    queued = call(
        "POST", "/api/tunix/run?mode=async", token, {**base, "model_id": "Qwen/Qwen2.5-0.5B"}
    )
    call("POST", f"/api/tunix/runs/{queued['run_id']}/cancel", token)
    call(
        "POST",
        "/api/tunix/run?mode=async",
        token,
        {**base, "model_id": "google/gemma-3-270m", "learning_rate": 0.0001},
    )
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=os.environ.get("TUNIX_CHROMIUM", "/usr/bin/chromium")
        )
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        page.goto(f"{URL}/accounts/login/")
        page.get_by_label("Username").fill(USER)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{URL}/")
        page.screenshot(path=str(HERE / "run-list.png"), full_page=True)
        page.goto(f"{URL}/runs/{detail['run_id']}")
        page.get_by_text("Configuration").click()
        page.screenshot(path=str(HERE / "run-detail.png"), full_page=True)
        page.goto(f"{URL}/runs/new")
        page.screenshot(path=str(HERE / "run-launch.png"), full_page=True)
        browser.close()


if __name__ == "__main__":
    main()
