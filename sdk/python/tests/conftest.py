"""A real Writ for the whole session: ``writ_server.mjs`` starts it (launcher, embedded PostgreSQL, a mock
payments upstream), seeds an orchestrator, an agent and the payments connector, and prints where they are."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def writ() -> Iterator[dict[str, Any]]:
    node = os.environ.get("WRIT_NODE") or shutil.which("node")
    assert node, "node is needed to start Writ for these tests"
    process = subprocess.Popen([node, str(HERE / "writ_server.mjs")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout=600)
    if not line or not line[0].strip():
        process.kill()
        raise RuntimeError("writ_server.mjs did not start Writ (see its output above)")
    try:
        yield json.loads(line[0])
    finally:
        process.stdin.close()  # the script stops Writ, the upstream and removes its data
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def admin(writ: dict[str, Any]):
    def call(method: str, path: str, body: Any = None) -> httpx.Response:
        return httpx.request(method, f"{writ['admin_url']}{path}", json=body, headers={"authorization": f"Bearer {writ['admin_token']}"})

    return call


@pytest.fixture
def allowed() -> list[dict[str, Any]]:
    return [
        {"connector": "payments", "actions": ["payouts.create"], "constraints": {"destination": "acct_1", "amount_max": 200000, "currency": "usd"}},
        {"connector": "payments", "actions": ["payouts.get"]},
    ]


def payout(amount_max: int, destination: str = "acct_1") -> dict[str, Any]:
    return {"connector": "payments", "action": "payouts.create", "constraints": {"destination": destination, "amount_max": amount_max, "currency": "usd"}}


def upstream_received(writ: dict[str, Any]) -> list[dict[str, Any]]:
    return httpx.get(f"{writ['upstream_url']}/_received").json()
