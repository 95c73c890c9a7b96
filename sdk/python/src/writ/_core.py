"""What the sync and async clients share: keys, assertions, DPoP proofs, requests, paths. No I/O here."""

from __future__ import annotations

import base64
import email.utils
import hashlib
import json
import math
import random
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import quote, urlencode, urlsplit

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey, RSAKey, import_key

from .errors import GatewayPathError, WritError, WritResponseError, WritTimeoutError, oauth_error

GRANT_TYPE_TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
TOKEN_TYPE_JWT = "urn:ietf:params:oauth:token-type:jwt"
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
DEFAULT_APPROVAL_TIMEOUT = 300.0
DEFAULT_POLL_INTERVAL = 5  # RFC 8628 §3.5, when the server names none

_CONNECTOR_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_ENCODED_SEPARATOR = re.compile(r"%(2e|2f|5c|25|00)", re.IGNORECASE)
_FORBIDDEN_CHARACTER = re.compile(r"[\x00-\x20\x7f#\\]")
_ASYMMETRIC = re.compile(r"ES(256|384|512)|EdDSA|Ed25519|PS(256|384|512)|RS(256|384|512)")
_CURVE_ALG = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}

MAX_RETRIES = 3  # 429/503 answers retried at most this many times
MAX_RETRY_WAIT = 30.0  # seconds; a longer Retry-After is returned to the caller instead of slept on
# RFC 9110 §9.2.2: only these gateway calls are sent again (a POST may have been forwarded).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
DEFAULT_TIMEOUT = 30.0  # seconds: connect, each read and write of one request (as the TypeScript SDK's timeoutMs)
DEFAULT_LIFETIME = 60.0  # seconds, when a token answer names no expires_in (RFC 6749 §5.1 makes it optional)
# The longest lifetime believed from a token answer: Writ's credentials live minutes; a larger expires_in (a bug, a
# proxy, 1e300) would otherwise keep a token cached for ever.
MAX_LIFETIME = 86_400.0
MIN_CACHED_LIFETIME = 1.0  # seconds: a shorter-lived token is used for the call that asked for it, never cached
# The largest answer read from the authorization server (discovery, token endpoint, Tasks API), as the TypeScript
# SDK's MAX_ANSWER_BYTES: a broken or hostile server streaming without end cannot fill the agent's memory.
MAX_ANSWER_BYTES = 1024 * 1024
SKEW_THRESHOLD = 5.0  # seconds: a server Date further off than this moves our iat/exp to the server's clock
_USE_DPOP_NONCE = re.compile(r'error\s*=\s*"?use_dpop_nonce"?', re.IGNORECASE)
_LEADING_NUMBER = re.compile(r"\s*([+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)")
_INVALID_TOKEN = re.compile(r'error\s*=\s*"?invalid_token"?', re.IGNORECASE)


def _http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def retry_after(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` in seconds (RFC 9110 §10.2.3: delay-seconds, or an HTTP-date read against the answer's own
    ``Date`` so that a skewed local clock does not matter); ``None`` when absent or unreadable."""
    value = (headers.get("retry-after") or "").strip()
    if not value:
        return None
    if re.fullmatch(r"[0-9]+", value):
        return float(value)
    at = _http_date(value)
    if at is None:
        return None
    server_now = _http_date(headers.get("date"))
    return max(0.0, at - (server_now if server_now is not None else time.time()))


def retry_delay(response: Any, attempt: int, rand: Any = random.random) -> float | None:
    """Seconds to wait before sending ``response``'s request again, or ``None``: only 429 and 503 are retried, at most
    ``MAX_RETRIES`` times, never sooner than ``Retry-After`` (plus up to 20 % jitter) and not at all when the server
    asks for more than ``MAX_RETRY_WAIT``. 400, 401 and 403 are answers, never retried here."""
    if response.status_code not in (429, 503) or attempt >= MAX_RETRIES:
        return None
    asked = retry_after(response.headers)
    base = asked if asked is not None else 2.0 ** attempt
    if base > MAX_RETRY_WAIT:
        return None
    return min(MAX_RETRY_WAIT, base + rand() * max(0.1, base * 0.2))


def server_skew(response: Any) -> float:
    """How far the server's clock (its ``Date``) is ahead of ours, in whole seconds; 0 when within the threshold."""
    server_now = _http_date(response.headers.get("date"))
    if server_now is None:
        return 0.0
    skew = server_now - time.time()
    return float(round(skew)) if abs(skew) > SKEW_THRESHOLD else 0.0


def is_nonce_error(response: Any) -> bool:
    """RFC 9449 §8-9: the server wants a DPoP nonce (400 ``use_dpop_nonce`` at the token endpoint, a 401 challenge
    at a resource server)."""
    if response.status_code == 401:
        return bool(_USE_DPOP_NONCE.search(response.headers.get("www-authenticate") or ""))
    if response.status_code == 400:
        body = json_or_none(response)
        return isinstance(body, dict) and body.get("error") == "use_dpop_nonce"
    return False


def is_refused_credential(response: Any) -> bool:
    """The gateway refused the credential itself (a 401 whose challenge names ``invalid_token``: spent, revoked,
    expired), so nothing was forwarded. An upstream's own 401 is passed on without its ``WWW-Authenticate`` (the
    gateway drops it): the upstream got that request, which must not be sent again."""
    return response.status_code == 401 and bool(_INVALID_TOKEN.search(response.headers.get("www-authenticate") or ""))


def post_token_request(http: Any, endpoint: str, params: dict[str, str], dpop: Any, key: ClientKey, client_id: str, issuer: str, now: float) -> Any:
    """Builds one token endpoint request with a fresh client assertion (and DPoP proof) on ``http`` (an httpx client,
    sync or async), for the client's ``send`` (which never follows a redirect)."""
    headers = {"accept": "application/json"}
    if dpop is not None:
        headers["dpop"] = dpop.proof("POST", endpoint, now=now)
    form = {**params, **client_auth_fields(key, client_id, issuer, now)}
    return http.build_request("POST", endpoint, data=form, headers=headers)


def metadata_url(issuer: str) -> str:
    """Where an issuer's metadata is (RFC 8414 §3.1): the well-known segment between the host and the issuer's path,
    ``https://host/.well-known/oauth-authorization-server/tenant`` for ``https://host/tenant`` (as oauth4webapi, hence
    the TypeScript SDK, asks for it); for an issuer without a path, ``/.well-known/oauth-authorization-server``."""
    parts = urlsplit(issuer)
    return f"{parts.scheme}://{parts.netloc}/.well-known/oauth-authorization-server{parts.path.rstrip('/')}"


class BoundedAnswer:
    """The body of an authorization server answer, collected as it streams in: past ``MAX_ANSWER_BYTES`` it is a
    ``WritResponseError``; past ``timeout`` seconds since ``started`` (checked as each chunk arrives: an answer that
    drips a byte at a time stays within every read timeout) a ``WritTimeoutError``, as the TypeScript SDK's
    ``timeoutMs`` bounds the whole request."""

    def __init__(self, response: Any, timeout: float | None, started: float) -> None:
        self.response = response
        self.timeout = timeout
        self.deadline = None if timeout is None else started + timeout
        self.chunks: list[bytes] = []
        self.size = 0

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > MAX_ANSWER_BYTES:
            raise WritResponseError(self.response.status_code, f"the authorization server's answer is larger than {MAX_ANSWER_BYTES} bytes")
        if self.deadline is not None and time.monotonic() > self.deadline:
            request = self.response.request
            target = f"{request.method} {request.url.scheme}://{request.url.netloc.decode('ascii', 'replace')}{request.url.path}"
            raise WritTimeoutError(f"no whole answer from the authorization server to {target} within {self.timeout:g} s", self.timeout)
        self.chunks.append(chunk)

    def answer(self) -> httpx.Response:
        """The answer with its whole (decoded) body."""
        dropped = ("content-encoding", "content-length", "transfer-encoding")
        headers = [(name, value) for name, value in self.response.headers.multi_items() if name.lower() not in dropped]
        return httpx.Response(self.response.status_code, headers=headers, content=b"".join(self.chunks), request=self.response.request)


class GatewayAttempts:
    """What to do after each answer to one gateway call, shared by the sync and async agents: send it again once
    with the gateway's DPoP nonce (the credential is fine), once with a fresh credential after a 401, and, for an
    idempotent method only (a POST may have been forwarded), after a 429 or 503 as ``retry_delay`` allows. A 401
    without the gateway's ``invalid_token`` challenge is the upstream's answer, returned as it is."""

    NONCE = "nonce"
    REFRESH = "refresh"

    def __init__(self, verb: str) -> None:
        self.verb = verb
        self.nonce_sent = False
        self.refreshed = False
        self.retries = 0

    def after(self, token_type: str, response: Any) -> str | float | None:
        """``NONCE`` or ``REFRESH`` (forget the credential first), seconds to wait before sending again, or ``None``:
        the response is the answer."""
        if token_type == "DPoP" and not self.nonce_sent and response.status_code == 401 and is_nonce_error(response):
            self.nonce_sent = True  # RFC 9449 §9: the credential is fine, the proof needs the gateway's nonce
            return self.NONCE
        if is_refused_credential(response) and not self.refreshed:
            self.refreshed = True
            return self.REFRESH
        delay = retry_delay(response, self.retries) if self.verb in IDEMPOTENT_METHODS else None
        if delay is not None:
            self.retries += 1
        return delay


@dataclass(frozen=True)
class ClientKey:
    """A client's private signing key (imported from a private JWK) with its ``kid`` and algorithm."""

    key: Any
    kid: str | None
    alg: str

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> "ClientKey":
        if jwk.get("kty") not in ("EC", "RSA", "OKP") or "d" not in jwk:
            raise WritError("the client key must be an asymmetric private JWK (with \"d\")", "invalid_key")
        alg = jwk.get("alg") or (_CURVE_ALG.get(jwk.get("crv", "")) if jwk["kty"] == "EC" else "EdDSA" if jwk["kty"] == "OKP" else "PS256")
        # An asymmetric signature only, as in TypeScript: "none" would send unsigned assertions, HMAC is no key pair.
        if not isinstance(alg, str) or not _ASYMMETRIC.fullmatch(alg):
            raise WritError(f"unsupported client key algorithm {alg or jwk['kty']}", "invalid_key")
        return cls(import_key(dict(jwk)), jwk.get("kid"), alg)


def client_assertion(key: ClientKey, client_id: str, issuer: str, now: float | None = None) -> str:
    """A ``private_key_jwt`` assertion (RFC 7523): ``aud`` is the issuer, a fresh ``jti`` every time; ``now`` is the
    server's time when its clock is known to differ from ours."""
    now = int(time.time() if now is None else now)
    header: dict[str, Any] = {"alg": key.alg, "typ": "JWT"}
    if key.kid:
        header["kid"] = key.kid
    claims = {"iss": client_id, "sub": client_id, "aud": issuer, "iat": now, "exp": now + 60, "jti": str(uuid.uuid4())}
    return jwt.encode(header, claims, key.key, algorithms=[key.alg])


def client_auth_fields(key: ClientKey, client_id: str, issuer: str, now: float | None = None) -> dict[str, str]:
    return {
        "client_id": client_id,
        "client_assertion_type": CLIENT_ASSERTION_TYPE,
        "client_assertion": client_assertion(key, client_id, issuer, now),
    }


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class DPoPKey:
    """A per-agent ES256 key; every proof (RFC 9449) is new: ``jti``, ``iat``, ``htm``, ``htu``, ``ath``, and the
    server's latest ``DPoP-Nonce`` for that origin when it gave one."""

    def __init__(self) -> None:
        self._key = ECKey.generate_key("P-256", private=True)
        public = self._key.as_dict(private=False)
        self._public = {name: public[name] for name in ("kty", "crv", "x", "y")}
        self.thumbprint = self._key.thumbprint()
        self._nonces: dict[str, str] = {}

    def __repr__(self) -> str:  # the private key never in logs or tracebacks
        return f"DPoPKey(thumbprint={self.thumbprint!r})"

    @staticmethod
    def _origin(url: str) -> str:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc}"

    def remember_nonce(self, url: str, response: Any) -> None:
        """Keeps the ``DPoP-Nonce`` an answer from ``url``'s origin carried (RFC 9449 §8-9)."""
        nonce = response.headers.get("dpop-nonce")
        if nonce:
            self._nonces[self._origin(url)] = nonce

    def proof(self, method: str, url: str, access_token: str | None = None, now: float | None = None) -> str:
        parts = urlsplit(url)
        claims: dict[str, Any] = {
            "jti": str(uuid.uuid4()),
            "htm": method.upper(),
            "htu": f"{parts.scheme}://{parts.netloc}{parts.path}",
            "iat": int(time.time() if now is None else now),
        }
        nonce = self._nonces.get(self._origin(url))
        if nonce:
            claims["nonce"] = nonce
        if access_token is not None:
            claims["ath"] = _b64u(hashlib.sha256(access_token.encode("ascii")).digest())
        return jwt.encode({"alg": "ES256", "typ": "dpop+jwt", "jwk": self._public}, claims, self._key, algorithms=["ES256"])


MAX_CACHED = 1000  # credentials one agent keeps (as the TypeScript SDK): expired ones are dropped first, then the oldest


def refresh_at_for(obtained_at: float, lifetime: float) -> float:
    """When a token obtained at ``obtained_at`` (epoch seconds) for ``lifetime`` seconds stops being reused: a fifth of
    its lifetime early, at least 1 s and at most 30 s. A token shorter-lived than 1 s (``expires_in: 0``) is never
    reused (``-inf``): each call gets its own, once."""
    if lifetime < MIN_CACHED_LIFETIME:
        return -math.inf
    return obtained_at + lifetime - max(1.0, min(30.0, lifetime / 5))


def remember(cache: dict[str, Credential], key: str, credential: Credential) -> None:
    """Caches ``credential`` under ``key``, keeping at most ``MAX_CACHED``: an agent asking for ever new constraint
    values does not keep every token it was given. A credential too short-lived to reuse is not kept at all."""
    cache.pop(key, None)
    if credential.refresh_at() == -math.inf:
        return
    if len(cache) >= MAX_CACHED:
        now = time.time()
        for stale in [name for name, cached in cache.items() if cached.refresh_at() <= now]:
            del cache[stale]
        while len(cache) >= MAX_CACHED:
            del cache[next(iter(cache))]
    cache[key] = credential


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def detail_of(connector: str, action: str, constraints: Mapping[str, Any] | None) -> dict[str, Any]:
    """One RFC 9396 ``authorization_details`` entry for one operation on one connector."""
    if not isinstance(connector, str) or not isinstance(action, str):
        raise WritError("a request names one connector and one action", "invalid_request")
    detail: dict[str, Any] = {"type": "connector", "connector": connector, "actions": [action]}
    if constraints is not None:
        detail["constraints"] = dict(constraints)
    return detail


def gateway_url_for(gateway_url: str, connector: str, path: str) -> str:
    """The gateway URL for ``path`` under a connector; anything that would leave it raises ``GatewayPathError``."""
    if not isinstance(connector, str) or not _CONNECTOR_ID.match(connector):
        raise GatewayPathError(f"invalid connector id {connector!r}")
    if not isinstance(path, str) or not path.startswith("/"):
        raise GatewayPathError('the path must be relative to the connector and start with "/" (absolute URLs are refused)')
    if path.startswith("//"):
        raise GatewayPathError('protocol-relative paths ("//host") are refused')
    if _FORBIDDEN_CHARACTER.search(path):
        raise GatewayPathError('the path contains a control character, a space, "#" or "\\"')
    pathname = path.split("?", 1)[0]
    if _ENCODED_SEPARATOR.search(pathname):
        raise GatewayPathError('encoded ".", "/", "\\", "%" or NUL in the path are refused')
    segments = pathname[1:].split("/")
    for index, segment in enumerate(segments):
        if segment in (".", ".."):
            raise GatewayPathError('"." and ".." segments are refused')
        if segment == "" and index != len(segments) - 1:
            raise GatewayPathError("empty path segments are refused")
    base = urlsplit(gateway_url)
    prefix = f"{base.path.rstrip('/')}/connectors/{connector}"
    url = f"{base.scheme}://{base.netloc}{prefix}{path}"
    parsed = urlsplit(url)
    if parsed.netloc != base.netloc or not parsed.path.startswith(prefix + "/") or parsed.fragment:
        raise GatewayPathError("the path leaves the connector")
    return url


def check_metadata(metadata: Any, issuer: str, allow_insecure: bool, status: int) -> dict[str, Any]:
    """RFC 8414 §3.3: the discovered ``issuer`` is the configured one; the token endpoint (which gets the task token and
    the client assertion) is an ``https`` URL unless insecure requests were allowed, as oauth4webapi requires."""
    if not isinstance(metadata, dict) or metadata.get("issuer") != issuer:
        raise WritResponseError(status, "the discovered issuer differs from the configured one")
    endpoint = metadata.get("token_endpoint")
    parts = urlsplit(endpoint) if isinstance(endpoint, str) else None
    if parts is None or not parts.netloc or parts.scheme not in (("https", "http") if allow_insecure else ("https",)):
        raise WritResponseError(status, "the discovered token_endpoint is not an https URL")
    return metadata


def discovered(response: Any, issuer: str, allow_insecure: bool) -> dict[str, Any]:
    """The metadata of a discovery answer (``check_metadata``), or a ``discovery_failed`` ``WritError`` naming why:
    an answer other than 200 (a redirect included: never followed), another issuer, a token endpoint that is not
    ``https``; the same code as the TypeScript SDK's for the same answers."""
    try:
        if response.status_code != 200:
            raise WritResponseError(response.status_code, f"unexpected answer {response.status_code}")
        return check_metadata(json_or_none(response), issuer, allow_insecure, response.status_code)
    except WritResponseError as error:
        raise discovery_failed(issuer, error) from error


def discovery_failed(issuer: str, error: Exception) -> WritError:
    """The error of a discovery that failed for ``error`` (an answer refused, the server unreachable)."""
    return WritError(f"discovery of {issuer} failed: {error}", "discovery_failed")


def path_segment(value: str) -> str:
    """``value`` as one path segment (``/``, ``?``, ``#``, ``..`` encoded), as ``encodeURIComponent`` makes it."""
    if not isinstance(value, str) or value in ("", ".", ".."):
        raise WritError(f"invalid path segment {value!r}", "invalid_request")
    return quote(value, safe="")


def with_query(path: str, query: Mapping[str, Any] | None) -> str:
    if not query:
        return path
    return f"{path}{'&' if '?' in path else '?'}{urlencode({name: str(value) for name, value in query.items()})}"


def gateway_timeout(method: str, url: str, timeout: float | None) -> WritTimeoutError:
    """The error of a gateway call without an answer in time; names the call (never its query or a credential)."""
    parts = urlsplit(url)
    within = f" within {timeout:g} s" if isinstance(timeout, (int, float)) else ""
    return WritTimeoutError(f"no answer from the gateway to {method} {parts.scheme}://{parts.netloc}{parts.path}{within}", timeout)


def server_timeout(what: str, error: Any, timeout: float | None) -> WritTimeoutError:
    """The error of a request to ``what`` without an answer in time, naming the request httpx timed out (its method,
    origin and path: never its query, body or a credential)."""
    try:
        request = error.request
    except RuntimeError:  # httpx raises when the exception carries no request
        request = None
    target = f" to {request.method} {request.url.scheme}://{request.url.netloc.decode('ascii', 'replace')}{request.url.path}" if request is not None else ""
    within = f" within {timeout:g} s" if isinstance(timeout, (int, float)) else ""
    return WritTimeoutError(f"no answer from {what}{target}{within}", timeout)


def check_timeout(timeout: float) -> float:
    """``timeout`` when it is a positive, finite number of seconds; an ``invalid_options`` error otherwise."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0:
        raise WritError("timeout must be a positive number of seconds", "invalid_options")
    return float(timeout)


def check_base_url(url: str, allow_insecure: bool, what: str) -> str:
    parts = urlsplit(url)
    if parts.query or parts.fragment or parts.username or parts.password or not parts.netloc:
        raise WritError(f"{what} must be a plain base URL", "invalid_options")
    if parts.scheme != "https" and not (allow_insecure and parts.scheme == "http"):
        raise WritError(f"{what} must be https (set allow_insecure_requests for local development)", "invalid_options")
    return url.rstrip("/")


@dataclass
class Credential:
    """A connector credential obtained by token exchange."""

    access_token: str = field(repr=False)  # never in logs or tracebacks
    token_type: str = "Bearer"  # "DPoP" or "Bearer"
    expires_at: float = 0.0  # epoch seconds
    authorization_details: list[dict[str, Any]] = field(default_factory=list)
    # When a cached copy stops being reused: a fifth of its lifetime early (at least 1 s, at most 30 s), decided
    # once, when it is obtained (computed again at each look-up, the margin shrank with the remaining lifetime).
    _refresh_at: float = field(init=False, repr=False, compare=False, default=0.0)

    def __post_init__(self) -> None:
        self._refresh_at = refresh_at_for(time.time(), self.expires_at - time.time())

    def refresh_at(self) -> float:
        return self._refresh_at


@dataclass
class PendingApproval:
    approval_id: str
    reasons: list[str]
    interval: float


@dataclass
class CreatedTask:
    task_id: str
    task_token: str = field(repr=False)  # the agent's subject token: never in logs or tracebacks
    expires_at: str = ""
    status: str = "active"


def task_body(agent_id: str, purpose: str, allowed: list[Mapping[str, Any]], ttl_seconds: int,
              on_behalf_of: str | None = None, metadata: Mapping[str, Any] | None = None, *,
              user_token: str | None = None, user: Mapping[str, str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "agent_id": agent_id,
        "purpose": purpose,
        "allowed": [{**entry, "type": "connector"} for entry in allowed],
        "ttl_seconds": ttl_seconds,
    }
    if on_behalf_of is not None:
        body["on_behalf_of"] = on_behalf_of
    if user_token is not None:
        body["user_token"] = user_token
    if user is not None:
        body["user"] = dict(user)
    if metadata is not None:
        body["metadata"] = dict(metadata)
    return body


def json_or_none(response: Any) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def raise_for_answer(response: Any) -> Any:
    """The JSON body of a 2xx answer; a typed error otherwise."""
    body = json_or_none(response)
    if 200 <= response.status_code < 300:
        if body is None:
            raise WritResponseError(response.status_code, "Writ answered without a JSON body")
        return body
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        if "error_description" not in body and isinstance(body.get("message"), str):
            body = {**body, "error_description": body["message"]}
        raise oauth_error(response.status_code, body)
    raise WritResponseError(response.status_code, f"unexpected answer {response.status_code} from Writ")


class PollState:
    """Approval polling (RFC 8628 style): the server's ``interval`` and ``approval_id``, +5 s per ``slow_down``."""

    def __init__(self, timeout: float) -> None:
        self.deadline = time.monotonic() + timeout
        self.server_interval: float = DEFAULT_POLL_INTERVAL
        self.slow_down: float = 0
        self.approval_id: str | None = None
        self.reasons: list[str] = []

    @property
    def interval(self) -> float:
        return self.server_interval + self.slow_down

    def on_error(self, error: Exception) -> PendingApproval | None:
        """Records a polling answer; re-raises anything else. Returns the pending approval to report, if any."""
        from .errors import ApprovalTimeoutError, WritOAuthError

        if not isinstance(error, WritOAuthError):
            raise error
        pending = None
        if error.error == "authorization_pending":
            approval_id = error.body.get("approval_id") or self.approval_id
            if not isinstance(approval_id, str):
                raise error
            self.approval_id = approval_id
            interval = error.body.get("interval")
            if isinstance(interval, (int, float)) and interval > 0:
                self.server_interval = interval
            if error.reasons and (error.description or "").startswith("a human must approve"):
                self.reasons = error.reasons
            pending = PendingApproval(approval_id, self.reasons, self.interval)
        elif error.error == "slow_down":
            self.slow_down += 5
        else:
            raise error
        if time.monotonic() + self.interval > self.deadline:
            raise ApprovalTimeoutError(self.approval_id or "", self.reasons)
        return pending


def exchange_params(task_token: str, detail: Mapping[str, Any], gateway_url: str, approval_id: str | None) -> dict[str, str]:
    params = {
        "grant_type": GRANT_TYPE_TOKEN_EXCHANGE,
        "subject_token": task_token,
        "subject_token_type": TOKEN_TYPE_JWT,
        "authorization_details": json.dumps([detail]),
        "resource": f"{gateway_url}/connectors/{detail['connector']}",
    }
    if approval_id:
        params["approval_id"] = approval_id
    return params


def token_response(body: Any) -> tuple[str, str, float]:
    """``access_token``, ``token_type`` (lower case: ``bearer`` or ``dpop``) and ``expires_in`` (60 s only when the
    server names none: 0 is a token that expires now, used once and never cached; at most ``MAX_LIFETIME``) of a
    token response, or a ``WritResponseError`` that never carries the token (RFC 6749 §5.1, as oauth4webapi checks
    it: a numeric string is read as a number; negative, non-finite and non-numeric lifetimes are refused)."""
    if not isinstance(body, dict) or not isinstance(body.get("access_token"), str) or not body["access_token"]:
        raise WritResponseError(200, "the token response has no access_token")
    token_type = body.get("token_type")
    if not isinstance(token_type, str) or token_type.lower() not in ("bearer", "dpop"):
        raise WritResponseError(200, "the token response has no supported token_type (Bearer or DPoP)")
    expires_in = body.get("expires_in", DEFAULT_LIFETIME)
    if expires_in is None:
        expires_in = DEFAULT_LIFETIME
    if isinstance(expires_in, str):  # as oauth4webapi reads it (parseFloat: the number the string starts with)
        number = _LEADING_NUMBER.match(expires_in)
        expires_in = float(number.group(1)) if number else None
    if isinstance(expires_in, bool) or not isinstance(expires_in, (int, float)) or not math.isfinite(expires_in) or expires_in < 0:
        raise WritResponseError(200, "the token response's expires_in is not a number of seconds")
    return body["access_token"], token_type.lower(), min(float(expires_in), MAX_LIFETIME)


def credential_from(body: Any, detail: Mapping[str, Any], bound: bool) -> Credential:
    access_token, token_type, expires_in = token_response(body)
    if bound and token_type != "dpop":
        raise WritError("asked for a DPoP-bound credential, got a bearer one", "unexpected_response")
    return Credential(
        access_token=access_token,
        token_type="DPoP" if token_type == "dpop" else "Bearer",
        expires_at=time.time() + expires_in,
        authorization_details=list(body.get("authorization_details") or [dict(detail)]),
    )


def prepare_call(headers: Mapping[str, str] | None, json_body: Any, content: bytes | str | None) -> tuple[dict[str, str], bytes | None]:
    out = {name.lower(): value for name, value in (headers or {}).items()}
    for name in ("authorization", "dpop"):
        if name in out:
            raise WritError(f"the {name} header is set by the SDK", "invalid_request")
    if json_body is not None:
        if content is not None:
            raise WritError("give either content or json", "invalid_request")
        out.setdefault("content-type", "application/json")
        return out, json.dumps(json_body).encode("utf-8")
    if isinstance(content, str):
        return out, content.encode("utf-8")
    return out, content


def auth_headers(credential: Credential, dpop: DPoPKey | None, method: str, url: str, now: float | None = None) -> dict[str, str]:
    if credential.token_type == "DPoP":
        if dpop is None:
            raise WritError("a DPoP-bound credential without a DPoP key", "invalid_state")
        return {"authorization": f"DPoP {credential.access_token}", "dpop": dpop.proof(method, url, credential.access_token, now)}
    return {"authorization": f"Bearer {credential.access_token}"}
