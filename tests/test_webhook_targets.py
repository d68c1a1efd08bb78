"""Webhook targets come from operator settings only, and must be public addresses unless the
operator allows private ones: no delivery reaches loopback, private networks or cloud
metadata, whatever a name resolves to, and a literal private IP is refused at start-up."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from runs import addresses, webhooks
from tests.support.clusters import REPO_ROOT
from tests.support.receiver import Receiver

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(SECRET) as server:
        yield server


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.9",
        "192.168.1.1",
        "169.254.169.254",
        "::1",
        "fd00::1",
        "0.0.0.0",
        "::ffff:127.0.0.1",
        "224.0.0.1",
        "100.64.0.1",
    ],
)
def test_non_public_addresses_are_recognised(address: str) -> None:
    assert not addresses.is_public(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert addresses.is_public(address)


def post(url: str, *, allow_private: bool) -> webhooks.AttemptResult:
    return webhooks.post(
        url=url, body="{}", headers={"content-type": "application/json"}, timeout=2,
        allow_private=allow_private,
    )  # fmt: skip


def test_a_loopback_target_is_refused_without_a_request(receiver: Receiver) -> None:
    result = post(receiver.url("/hook"), allow_private=False)
    assert result.status_code is None
    assert "not a public address" in result.error
    assert receiver.on("/hook") == []  # nothing reached the receiver


def test_https_targets_are_checked_the_same_way() -> None:
    result = post("https://127.0.0.1:9/hook", allow_private=False)
    assert result.status_code is None
    assert "127.0.0.1 resolves to 127.0.0.1, which is not a public address" in result.error


def test_a_name_that_resolves_to_a_private_address_is_refused(receiver: Receiver) -> None:
    url = receiver.url("/hook").replace("127.0.0.1", "localhost")
    result = post(url, allow_private=False)
    assert "localhost resolves to" in result.error
    assert receiver.on("/hook") == []


def test_the_operator_can_allow_private_targets(receiver: Receiver) -> None:
    result = post(receiver.url("/hook"), allow_private=True)
    assert result.delivered
    assert len(receiver.on("/hook")) == 1


def test_the_connection_goes_to_the_address_that_was_checked(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resolver whose second answer differs (DNS rebinding) cannot redirect the request: the
    name is resolved once, checked, and that address is dialled."""
    answers = iter(["127.0.0.1", "10.255.255.1"])
    real = socket.getaddrinfo

    def rebinding(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "hooks.example":
            return real(next(answers), port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    url = receiver.url("/hook").replace("127.0.0.1", "hooks.example")
    assert post(url, allow_private=True).delivered
    assert next(answers) == "10.255.255.1"  # resolved exactly once


@pytest.mark.processes
def test_a_literal_private_webhook_url_stops_the_server_at_start_up(tmp_path: Any) -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tunix_rt.settings",
        "SECRET_KEY": "x" * 50,
        "TUNIX_VAR_DIR": str(tmp_path),
        "TUNIX_WEBHOOK_SECRET": SECRET,
        "TUNIX_WEBHOOK_URLS": "http://169.254.169.254/latest/meta-data",
    }
    env.pop("TUNIX_WEBHOOK_ALLOW_PRIVATE", None)
    argv = [sys.executable, "manage.py", "check"]
    refused = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert refused.returncode != 0
    assert "169.254.169.254, not a public address" in refused.stderr
    allowed = subprocess.run(
        argv, cwd=REPO_ROOT, env={**env, "TUNIX_WEBHOOK_ALLOW_PRIVATE": "1"},
        capture_output=True, text=True,
    )  # fmt: skip
    assert allowed.returncode == 0, allowed.stderr
