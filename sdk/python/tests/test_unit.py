"""Unit tests without a server: paths, reasons, polling (scripted token endpoint), redirects, secrets in reprs."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from joserfc.jwk import ECKey

from writ import Agent, CreatedTask, Credential, GatewayPathError, PolicyRefusalError, gateway_url_for
from writ import _core
from writ.errors import reasons_of

ISSUER = "https://writ.example"
GATEWAY = "https://gw.example"


def private_jwk() -> dict[str, Any]:
    return {**ECKey.generate_key("P-256", private=True).as_dict(private=True), "kid": "k1"}


def scripted(answers: list[tuple[int, dict[str, Any]]], gateway: list[httpx.Response] | None = None):
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/.well-known/oauth-authorization-server":
            return httpx.Response(200, json={"issuer": ISSUER, "token_endpoint": f"{ISSUER}/oauth2/token"})
        if request.url.host == "writ.example":
            status, body = answers.pop(0)
            return httpx.Response(status, json=body)
        return gateway.pop(0) if gateway else httpx.Response(404)

    return httpx.Client(transport=httpx.MockTransport(handler)), seen


def test_gateway_paths_stay_under_the_connector():
    assert gateway_url_for("https://gw.example/base/", "payments", "/v1/payouts?limit=5") == "https://gw.example/base/connectors/payments/v1/payouts?limit=5"
    for path in ["https://evil.example/", "//evil.example/x", "/../x", "/a/./b", "/a/%2E%2E/b", "/a%2fb", "/a\\b", "", "x", "/a#b", "/a\nb", "/a//b"]:
        with pytest.raises(GatewayPathError):
            gateway_url_for(GATEWAY, "payments", path)
    with pytest.raises(GatewayPathError):
        gateway_url_for(GATEWAY, "..", "/x")


def test_reasons_are_read_from_the_description():
    assert reasons_of("denied by policy: a; b") == ["a", "b"]
    assert reasons_of("denied by policy: no reason given") == []
    assert reasons_of("the task is completed") == ["the task is completed"]


def test_polls_with_the_server_interval_and_slows_down(monkeypatch):
    import writ.client as sync_client

    waits: list[float] = []
    monkeypatch.setattr(sync_client.time, "sleep", waits.append)  # records the waits instead of sleeping
    pending = {"error": "authorization_pending", "error_description": "a human must approve this request: amount above 100", "approval_id": "ap-1", "interval": 1}
    http, seen = scripted([
        (400, pending),
        (400, {"error": "slow_down"}),
        (400, {**pending, "error_description": "the approval is still pending"}),
        (200, {"access_token": "at", "token_type": "Bearer", "expires_in": 120}),
    ])
    agent = Agent(ISSUER, "agent-1", private_jwk(), GATEWAY, dpop=False, http=http)
    reported = []
    credential = agent.credential("task-token", "payments", "payouts.create", on_pending=reported.append)
    assert credential.access_token == "at"
    assert waits == [1, 6, 6]
    forms = [parse_qs(request.content.decode()) for request in seen if request.url.path == "/oauth2/token"]
    assert [form.get("approval_id") for form in forms] == [None, ["ap-1"], ["ap-1"], ["ap-1"]]
    assert len({form["client_assertion"][0] for form in forms}) == 4  # a fresh assertion per poll
    assert [(p.approval_id, p.reasons, p.interval) for p in reported] == [("ap-1", ["amount above 100"], 1), ("ap-1", ["amount above 100"], 6)]


def test_refusals_are_typed_and_not_cached():
    http, _ = scripted([
        (400, {"error": "invalid_authorization_details", "error_description": "denied by policy: destination is not the payee"}),
        (200, {"access_token": "at2", "token_type": "Bearer", "expires_in": 120}),
    ])
    agent = Agent(ISSUER, "agent-1", private_jwk(), GATEWAY, dpop=False, http=http)
    with pytest.raises(PolicyRefusalError) as refused:
        agent.credential("t", "payments", "payouts.get")
    assert refused.value.reasons == ["destination is not the payee"]
    assert agent.credential("t", "payments", "payouts.get").access_token == "at2"


def test_a_redirect_from_the_gateway_is_returned_not_followed():
    http, seen = scripted(
        [(200, {"access_token": "at", "token_type": "DPoP", "expires_in": 120})],
        [httpx.Response(302, headers={"location": "https://evil.example/steal"})],
    )
    agent = Agent(ISSUER, "agent-1", private_jwk(), GATEWAY, http=http)
    response = agent.fetch("t", "payments", "payouts.get", "/v1/payouts/po_1")
    assert response.status_code == 302
    assert all(request.url.host != "evil.example" for request in seen)
    gateway_call = seen[-1]
    assert gateway_call.headers["authorization"] == "DPoP at"
    proof = json.loads(_core.base64.urlsafe_b64decode(gateway_call.headers["dpop"].split(".")[1] + "=="))
    assert proof["htm"] == "GET" and proof["htu"] == f"{GATEWAY}/connectors/payments/v1/payouts/po_1" and proof["ath"]


def test_secrets_stay_out_of_reprs():
    assert "secret-token" not in repr(Credential("secret-token", "Bearer", 0.0))
    assert "secret-task-token" not in repr(CreatedTask("t1", "secret-task-token", "", "active"))


def test_keys_and_urls_are_checked():
    with pytest.raises(Exception, match="private JWK"):
        Agent(ISSUER, "agent-1", {"kty": "EC", "crv": "P-256", "x": "a", "y": "b"}, GATEWAY)
    with pytest.raises(Exception, match="https"):
        Agent("http://writ.example", "agent-1", private_jwk(), GATEWAY)
    with pytest.raises(Exception, match="plain base URL"):
        Agent(ISSUER, "agent-1", private_jwk(), "https://gw.example/?x=1")


def test_a_cached_credential_is_renewed_shortly_before_it_expires(monkeypatch):
    # As in TypeScript: refreshed a fifth of its lifetime early (at most 30 s, at least 1 s), decided when issued,
    # not moved later as the credential ages (which kept a 120 s credential in use until 1 s before its exp).
    clock = [1_000_000.0]
    monkeypatch.setattr(_core.time, "time", lambda: clock[0])
    issued = lambda token, lifetime: (200, {"access_token": token, "token_type": "Bearer", "expires_in": lifetime})  # noqa: E731
    http, _ = scripted([issued("at-1", 120), issued("at-2", 120), issued("at-3", 0), issued("at-4", 60)])
    agent = Agent(ISSUER, "agent-1", private_jwk(), GATEWAY, dpop=False, http=http)
    assert agent.credential("t", "payments", "payouts.get").access_token == "at-1"
    clock[0] += 95  # 25 s left: outside the margin (a fifth of 120 s: 24 s)
    assert agent.credential("t", "payments", "payouts.get").access_token == "at-1"
    clock[0] += 2  # 23 s left: within 24 s of its expiry
    assert agent.credential("t", "payments", "payouts.get").access_token == "at-2"
    # A credential the server says expires now is never cached as if it had a minute.
    assert agent.credential("t", "payments", "payouts.create").access_token == "at-3"
    assert agent.credential("t", "payments", "payouts.create").access_token == "at-4"


def test_a_refused_task_names_the_offending_fields():
    # The Tasks API answers a refused body with `400 {error, message, fields: [{field, message}]}`.
    body = {"error": "invalid_request", "message": "the request body is invalid",
            "fields": [{"field": "ttl_seconds", "message": "ttl_seconds must not be less than 1"}]}
    http, _ = scripted([(200, {"access_token": "tasks-at", "token_type": "Bearer", "expires_in": 300}), (400, body)])
    from writ import Orchestrator, WritOAuthError

    with pytest.raises(WritOAuthError) as refused:
        Orchestrator(ISSUER, "orch-1", private_jwk(), http=http).create_task("agent-1", "pay", [], -5)
    assert refused.value.fields == [{"field": "ttl_seconds", "message": "ttl_seconds must not be less than 1"}]
    assert "ttl_seconds must not be less than 1" in str(refused.value)


@pytest.mark.parametrize("body", [
    {"access_token": "at-secret-value", "token_type": "N_A", "expires_in": 60},
    {"access_token": "at-secret-value", "token_type": "Bearer", "expires_in": "soon"},
    {"access_token": "at-secret-value", "expires_in": 60},
    {"token_type": "Bearer", "expires_in": 60},
    ["at-secret-value"],
])
def test_a_malformed_token_response_is_refused_without_the_token(body):
    from writ import WritResponseError

    # As in TypeScript (oauth4webapi): an unknown token type is not taken for Bearer, and the error is typed.
    http, _ = scripted([(200, body)])
    with pytest.raises(WritResponseError) as refused:
        Agent(ISSUER, "agent-1", private_jwk(), GATEWAY, dpop=False, http=http).credential("t", "payments", "payouts.get")
    assert "at-secret-value" not in str(refused.value) and "at-secret-value" not in repr(refused.value)


def test_the_credential_cache_is_bounded(monkeypatch):
    # As in TypeScript: at most MAX_CACHED credentials are kept (expired ones go first, then the oldest), so that an
    # agent asking for ever new constraint values does not keep every token it was ever given.
    monkeypatch.setattr(_core, "MAX_CACHED", 3, raising=False)
    http, _ = scripted([(200, {"access_token": f"at-{n}", "token_type": "Bearer", "expires_in": 120}) for n in range(5)])
    agent = Agent(ISSUER, "agent-1", private_jwk(), GATEWAY, dpop=False, http=http)
    for amount in range(5):
        agent.credential("t", "payments", "payouts.create", {"amount_max": amount})
    assert len(agent._cache) == 3
    assert [credential.access_token for credential in agent._cache.values()] == ["at-2", "at-3", "at-4"]


def test_the_package_ships_its_type_hints():
    # PEP 561: without the py.typed marker, type checkers ignore the SDK's annotations in an application.
    from importlib.resources import files

    assert files("writ").joinpath("py.typed").is_file()
