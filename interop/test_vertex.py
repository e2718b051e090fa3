"""Google Vertex AI through byok-proxy with a service-account credential (SPEC §9).

The clients are the official SDKs, unchanged, with the gateway key as their
OAuth token: google-genai (`vertexai=True`, http_options.base_url =
http://ADDR/google-vertex) for Gemini, and anthropic's AnthropicVertex
(base_url = http://ADDR/google-vertex/v1) for Claude on Vertex.

The credential's key is a service-account JSON whose token_uri is the mock's
token endpoint (mock_upstream.py): it verifies each JWT bearer grant with the
public half of tests/fixtures/vertex-test-key.pem and issues ya29.mock-N.
The proxy must mint, cache and send that token upstream, and put the
credential's project and region in the path in place of the client's.

Each test has a tenant (and so a credential, and a token cache) of its own,
with a token path of its own (/token/NAME), so that one test's cached or
failing token is no other test's.
"""

from __future__ import annotations

import base64
import json
import threading
import time

import anthropic
import google.oauth2.credentials
import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from google import genai
from google.genai import errors, types

import mock_upstream as up
from checks import assert_hits, assert_refusal, assert_upstream_got
from gateway import FIXTURES, Credential, Tenant

PROVIDER = "google-vertex"
AUTH = "authorization"  # Vertex's upstream auth: Bearer <access token>
MODEL = "gemini-2.0-flash"
CLAUDE = "claude-3-5-sonnet-v2@20241022"

# Where the client says it calls, and where the credential says the proxy must.
CLIENT_PROJECT, CLIENT_LOCATION = "client-proj", "europe-west4"
PROJECT, REGION = "proj-cred", "us-central1"

CLIENT_EMAIL = "tester@proj-cred.iam.gserviceaccount.com"
KEY_ID = "kid-1"
PRIVATE_KEY_PEM = (FIXTURES / "vertex-test-key.pem").read_text()
PRIVATE_KEY = serialization.load_pem_private_key(PRIVATE_KEY_PEM.encode(), password=None)

CONCURRENT_CALLS = 8
TOKEN_HOLD_SECS = 0.5


def service_account(mock_url: str, token_path: str) -> str:
    """The credential's key: a service-account JSON (plus OpenRouter's `region`) whose token_uri
    is the mock's `token_path`."""
    return json.dumps(
        {
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": KEY_ID,
            "private_key": PRIVATE_KEY_PEM,
            "client_email": CLIENT_EMAIL,
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": f"{mock_url}{token_path}",
            "region": REGION,
        }
    )


def token_path(tenant: str, n: int = 0) -> str:
    return f"/token/{tenant}-{n}"


# tenant -> its credentials' allowed_models, one credential each unless listed twice.
TENANT_MODELS: dict[str, list[list[str] | None]] = {
    "ok": [None],
    "ok-v1": [None],
    "grant": [None],
    "stream": [None],
    "cached": [None],
    "expired": [None],
    "margin": [None],
    "concurrent": [None],
    "failover": [None, None],  # the first one's token endpoint fails
    "broken": [None],  # its only token endpoint fails
    # Admitted, and refused (a tenant of its own: no token cached, so none may be minted).
    "flash-only": [[f"{PROVIDER}/{MODEL}"]],
    "flash-only-refused": [[f"{PROVIDER}/{MODEL}"]],
    "claude": [[f"{PROVIDER}/{CLAUDE}"]],
    "claude-stream": [[CLAUDE]],  # the bare model id matches too (SPEC §4)
    "claude-raw": [[f"{PROVIDER}/{CLAUDE}"]],
    "claude-refused": [[f"{PROVIDER}/{CLAUDE}"]],
}


@pytest.fixture(scope="module")
def token_endpoint(mock):
    """The mock's token endpoint, accepting grants of the test service account."""
    mock.add_service_account(CLIENT_EMAIL, PRIVATE_KEY.public_key(), KEY_ID)
    return mock


@pytest.fixture(scope="module")
def gateway(start_proxy, token_endpoint):
    mock = token_endpoint
    tenants = [
        Tenant(
            name,
            [
                Credential(service_account(mock.url, token_path(name, n)), allowed_models=allowed)
                for n, allowed in enumerate(models)
            ],
        )
        for name, models in TENANT_MODELS.items()
    ]
    return start_proxy(PROVIDER, tenants)


def sdk(gateway, tenant: str, *, api_version: str | None = None) -> genai.Client:
    """google-genai on Vertex, its OAuth token the gateway key. It retries nothing unless told to."""
    options = types.HttpOptions(base_url=f"{gateway.url}/{PROVIDER}", timeout=10_000, api_version=api_version)
    return genai.Client(
        vertexai=True,
        project=CLIENT_PROJECT,
        location=CLIENT_LOCATION,
        # With a quota project the SDK sends `x-goog-user-project`, which must not reach Google:
        # the credential's identity is billed to its own project, not one the client picks.
        credentials=google.oauth2.credentials.Credentials(token=gateway.key(tenant), quota_project_id=CLIENT_PROJECT),
        http_options=options,
    )


def claude_sdk(gateway, tenant: str) -> anthropic.AnthropicVertex:
    return anthropic.AnthropicVertex(
        region=CLIENT_LOCATION,
        project_id=CLIENT_PROJECT,
        access_token=gateway.key(tenant),
        base_url=f"{gateway.url}/{PROVIDER}/v1",
        max_retries=0,
        timeout=10,
    )


def generate(client: genai.Client, model: str = MODEL):
    return client.models.generate_content(model=model, contents="hi")


def gemini_path(version: str, method: str, model: str = MODEL) -> str:
    return f"/{version}/projects/{PROJECT}/locations/{REGION}/publishers/google/models/{model}:{method}"


def minted(mock: up.MockUpstream, path: str) -> list[str]:
    """The tokens the mock issued at `path` in this test, in order; every grant there verified."""
    at_path = [t for t in mock.token_requests if t.path == path]
    refused = [(t.status, t.error) for t in at_path if t.error]
    assert not refused, f"the mock token endpoint refused the proxy's JWT grant: {refused}"
    return [t.access_token for t in at_path if t.access_token]


def assert_token_requests_clean(mock: up.MockUpstream, gateway_key: str):
    """No token request carried the gateway key, or any client-side key header."""
    for t in mock.token_requests:
        leaked = [text for text in up.everything_sent(t.request) if gateway_key in text]
        assert not leaked, f"the gateway key reached the token endpoint: {leaked}"
        assert "authorization" not in t.request.headers


def assert_readable(e: errors.APIError, status: int, reason: str, google_status: str) -> str:
    message = assert_refusal(e.details, status, reason)
    assert (e.code, e.status) == (status, google_status)
    assert e.message == message
    return message


# --- The harness itself: the mock's token endpoint can say no -----------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_jwt(header: dict, claims: dict) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = PRIVATE_KEY.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64(signature)}"


def test_the_mock_token_endpoint_verifies_the_grant(token_endpoint, mock):
    """A grant signed as SPEC §9 says gets a token; each way of getting it wrong gets 400
    invalid_grant. Without a proxy: the endpoint the other tests rely on can fail."""
    uri = f"{mock.url}/token/selftest"
    now = int(time.time())
    header = {"alg": "RS256", "typ": "JWT", "kid": KEY_ID}
    claims = {"iss": CLIENT_EMAIL, "scope": up.CLOUD_PLATFORM_SCOPE, "aud": uri, "iat": now, "exp": now + 3600}

    def post(assertion: str, content_type="application/x-www-form-urlencoded"):
        body = {"grant_type": up.JWT_BEARER_GRANT, "assertion": assertion}
        if content_type == "application/json":
            return requests.post(uri, json=body, timeout=5)
        return requests.post(uri, data=body, headers={"content-type": content_type}, timeout=5)

    good = post(sign_jwt(header, claims))
    assert good.status_code == 200, good.text
    assert good.json()["access_token"].startswith("ya29.mock-")
    assert good.json()["expires_in"] == 3600

    valid = sign_jwt(header, claims)
    h, p, s = valid.split(".")
    tampered = f"{h}.{_b64(json.dumps({**claims, 'iss': 'x@y.iam.gserviceaccount.com'}).encode())}.{s}"
    wrong = {
        "tampered payload": post(tampered),
        "foreign signature": post(f"{h}.{_b64(json.dumps({**claims, 'exp': now + 7200}).encode())}.{s}"),
        "wrong aud": post(sign_jwt(header, {**claims, "aud": "https://oauth2.googleapis.com/token"})),
        "wrong scope": post(sign_jwt(header, {**claims, "scope": "openid"})),
        "wrong kid": post(sign_jwt({**header, "kid": "kid-2"}, claims)),
        "two-hour exp": post(sign_jwt(header, {**claims, "exp": now + 7200})),
        "stale iat": post(sign_jwt(header, {**claims, "iat": now - 7200, "exp": now - 3600})),
        "HS256 header": post(sign_jwt({**header, "alg": "HS256"}, claims)),
        "JSON body": post(valid, content_type="application/json"),
    }
    for what, response in wrong.items():
        assert (what, response.status_code, response.json().get("error")) == (what, 400, "invalid_grant")
    assert [t.error is None for t in mock.token_requests] == [True] + [False] * len(wrong)
    assert_hits(mock, 0)


# --- Success ------------------------------------------------------------------


@pytest.mark.parametrize(
    "tenant, api_version",
    [("ok", None), ("ok-v1", "v1")],
    ids=["sdk-default-v1beta1", "v1"],
)
def test_generate_content_with_a_minted_token_in_the_credentials_project(gateway, mock, tenant, api_version):
    response = generate(sdk(gateway, tenant, api_version=api_version))

    assert response.text == up.TEXT
    usage = response.usage_metadata
    assert (usage.prompt_token_count, usage.candidates_token_count) == (up.INPUT_TOKENS, up.OUTPUT_TOKENS)
    assert response.sdk_http_response.headers.get("x-byok-credential-id") == gateway.tenants[tenant].credentials[0].id
    # One token, minted with a JWT that the mock verified, and sent upstream.
    tokens = minted(mock, token_path(tenant))
    assert len(tokens) == 1, f"token requests: {mock.token_requests}"
    assert_upstream_got(mock, AUTH, tokens, gateway.key(tenant))
    (request,) = mock.requests
    # The credential's project and region replace the client's; the rest of the path is the SDK's.
    assert request.path == gemini_path(api_version or "v1beta1", "generateContent")
    assert CLIENT_PROJECT not in request.path and CLIENT_LOCATION not in request.path
    assert "x-goog-user-project" not in request.headers
    assert CLIENT_PROJECT not in str(request.headers)
    assert request.json() == {"contents": [{"parts": [{"text": "hi"}], "role": "user"}]}
    assert_token_requests_clean(mock, gateway.key(tenant))


def test_the_jwt_grant_is_as_google_wants_it(gateway, mock):
    """What the mock verified, spelled out: a form-encoded JWT bearer grant, RS256 with the key
    id, the account as issuer, cloud-platform scope, the token_uri as audience, one hour from now."""
    before = int(time.time())
    assert generate(sdk(gateway, "grant")).text == up.TEXT
    after = int(time.time())

    (grant,) = mock.token_requests
    assert grant.error is None, grant.error
    assert (grant.request.method, grant.path, grant.status) == ("POST", token_path("grant"), 200)
    assert grant.request.headers["content-type"].startswith("application/x-www-form-urlencoded")
    assert grant.jwt_header == {"alg": "RS256", "typ": "JWT", "kid": KEY_ID}
    claims = grant.claims
    assert claims["iss"] == CLIENT_EMAIL
    assert claims["scope"] == up.CLOUD_PLATFORM_SCOPE
    assert claims["aud"] == f"{mock.url}{token_path('grant')}"
    assert before - 5 <= claims["iat"] <= after + 5
    assert claims["exp"] == claims["iat"] + 3600
    assert_upstream_got(mock, AUTH, [grant.access_token], gateway.key("grant"))
    assert_token_requests_clean(mock, gateway.key("grant"))


def test_generate_content_stream(gateway, mock):
    client = sdk(gateway, "stream")  # held: a google-genai Client closes its connections when collected
    chunks = list(client.models.generate_content_stream(model=MODEL, contents="hi"))

    assert "".join(c.text for c in chunks) == up.STREAM_TEXT
    usage = chunks[-1].usage_metadata
    assert (usage.prompt_token_count, usage.candidates_token_count) == (up.INPUT_TOKENS, up.OUTPUT_TOKENS)
    tokens = minted(mock, token_path("stream"))
    assert len(tokens) == 1
    assert_upstream_got(mock, AUTH, tokens, gateway.key("stream"))
    (request,) = mock.requests
    assert (request.path, request.query) == (gemini_path("v1beta1", "streamGenerateContent"), "alt=sse")


# --- The token cache ----------------------------------------------------------------


def test_a_token_is_reused_until_shortly_before_it_expires(gateway, mock):
    client = sdk(gateway, "cached")
    for _ in range(3):
        assert generate(client).text == up.TEXT

    tokens = minted(mock, token_path("cached"))
    assert len(tokens) == 1, f"3 sequential calls with a one-hour token minted {len(tokens)} tokens"
    assert_upstream_got(mock, AUTH, tokens * 3, gateway.key("cached"))


def test_an_expired_token_is_minted_again(gateway, mock):
    mock.script_token(token_path("expired"), expires_in=0)
    client = sdk(gateway, "expired")
    for _ in range(2):
        assert generate(client).text == up.TEXT

    tokens = minted(mock, token_path("expired"))
    assert len(tokens) == 2, f"2 sequential calls with expires_in=0 minted {len(tokens)} tokens"
    assert tokens[0] != tokens[1]
    assert_upstream_got(mock, AUTH, tokens, gateway.key("expired"))  # each call the newest token


def test_the_refresh_margin_is_at_most_half_a_short_lifetime(gateway, mock):
    """expires_in=40: a margin of min(60 s, 40/2) leaves the token 20 s of use. (A flat 60 s
    margin would call it stale at once and mint twice.)"""
    mock.script_token(token_path("margin"), expires_in=40)
    client = sdk(gateway, "margin")
    for _ in range(2):
        assert generate(client).text == up.TEXT

    tokens = minted(mock, token_path("margin"))
    assert len(tokens) == 1, f"2 sequential calls with expires_in=40 minted {len(tokens)} tokens"
    assert_upstream_got(mock, AUTH, tokens * 2, gateway.key("margin"))


def test_concurrent_requests_wait_for_one_mint(gateway, mock):
    """Single flight: 8 calls at once, the token endpoint holding its first answer, 1 mint.
    (With a cache but no single flight each call that finds none mints: 8.)"""
    mock.script_token(token_path("concurrent"), hold_first_secs=TOKEN_HOLD_SECS)
    clients = [sdk(gateway, "concurrent") for _ in range(CONCURRENT_CALLS)]
    barrier = threading.Barrier(CONCURRENT_CALLS)
    started: list[float] = []
    results: list[object] = []
    lock = threading.Lock()

    def call(client):
        barrier.wait(timeout=10)
        with lock:
            started.append(time.monotonic())
        try:
            outcome = generate(client).text
        except Exception as e:  # reported below, with the others
            outcome = e
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=call, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "a call did not finish in 30 s"

    assert results == [up.TEXT] * CONCURRENT_CALLS, results
    grants = [t for t in mock.token_requests if t.path == token_path("concurrent")]
    # The premise: every call was sent while the first mint was still held.
    assert grants and max(started) < grants[0].answered_at, "the calls did not overlap the held mint"
    tokens = minted(mock, token_path("concurrent"))
    assert len(tokens) == 1, f"{CONCURRENT_CALLS} concurrent calls minted {len(tokens)} tokens"
    assert_upstream_got(mock, AUTH, tokens * CONCURRENT_CALLS, gateway.key("concurrent"))


# --- A failing token endpoint fails the attempt over ----------------------------------


def test_a_failing_token_endpoint_fails_over_to_the_next_credential(gateway, mock):
    mock.script_token(token_path("failover", 0), status=500)
    first, second = gateway.tenants["failover"].credentials

    response = generate(sdk(gateway, "failover"))

    assert response.text == up.TEXT
    headers = response.sdk_http_response.headers
    assert headers.get("x-byok-credential-id") == second.id
    assert headers.get("x-byok-attempts") == "2"
    assert [(t.path, t.status) for t in mock.token_requests] == [
        (token_path("failover", 0), 500),
        (token_path("failover", 1), 200),
    ]
    # Nothing went upstream with the first credential: it had no token.
    assert_upstream_got(mock, AUTH, minted(mock, token_path("failover", 1)), gateway.key("failover"))
    assert_token_requests_clean(mock, gateway.key("failover"))


def test_a_failing_token_endpoint_alone_is_502(gateway, mock):
    mock.script_token(token_path("broken"), status=500)

    with pytest.raises(errors.ServerError) as caught:
        generate(sdk(gateway, "broken"))

    assert_readable(caught.value, 502, "upstream_unreachable", "UNAVAILABLE")
    assert "internal_failure" not in str(caught.value)  # the token endpoint's words stay inside
    assert [(t.path, t.status) for t in mock.token_requests] == [(token_path("broken"), 500)]
    assert_hits(mock, 0)


# --- The model comes from the path ------------------------------------------------------


def test_a_model_allowlist_admits_the_path_model(gateway, mock):
    assert generate(sdk(gateway, "flash-only")).text == up.TEXT

    assert_upstream_got(mock, AUTH, minted(mock, token_path("flash-only")), gateway.key("flash-only"))
    assert mock.requests[0].path == gemini_path("v1beta1", "generateContent")


def test_a_model_allowlist_refuses_another_path_model_before_anything_goes_out(gateway, mock):
    with pytest.raises(errors.ClientError) as caught:
        generate(sdk(gateway, "flash-only-refused"), model="gemini-2.5-pro")

    message = assert_readable(caught.value, 403, "no_eligible_credential", "PERMISSION_DENIED")
    assert "allowed_models" in message
    assert_hits(mock, 0)
    assert mock.token_requests == []  # not even a token is minted


# --- Anthropic's publisher: Claude on Vertex ---------------------------------------------


def claude_path(method: str, model: str = CLAUDE) -> str:
    return f"/v1/projects/{PROJECT}/locations/{REGION}/publishers/anthropic/models/{model}:{method}"


def test_claude_raw_predict(gateway, mock):
    result = claude_sdk(gateway, "claude").messages.create(
        model=CLAUDE, max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    )

    assert [block.text for block in result.content] == [up.TEXT]
    assert result.model == CLAUDE
    assert (result.usage.input_tokens, result.usage.output_tokens) == (up.INPUT_TOKENS, up.OUTPUT_TOKENS)
    assert_upstream_got(mock, AUTH, minted(mock, token_path("claude")), gateway.key("claude"))
    (request,) = mock.requests
    assert request.path == claude_path("rawPredict")
    body = request.json()
    assert "model" not in body  # Vertex takes it from the path; the proxy adds none
    assert body["messages"] == [{"role": "user", "content": "hi"}]


def test_claude_stream_raw_predict(gateway, mock):
    with claude_sdk(gateway, "claude-stream").messages.stream(
        model=CLAUDE, max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()

    assert text == up.STREAM_TEXT
    assert (final.usage.input_tokens, final.usage.output_tokens) == (up.INPUT_TOKENS, up.OUTPUT_TOKENS)
    assert_upstream_got(mock, AUTH, minted(mock, token_path("claude-stream")), gateway.key("claude-stream"))
    assert mock.requests[0].path == claude_path("streamRawPredict")


def test_claude_model_allowlist_refuses_another_path_model(gateway, mock):
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        claude_sdk(gateway, "claude-refused").messages.create(
            model="claude-3-opus@20240229", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        )

    message = assert_refusal(caught.value.response.json(), 403, "no_eligible_credential")
    assert "allowed_models" in message
    assert_hits(mock, 0)
    assert mock.token_requests == []


def test_claude_raw_predict_with_a_plain_http_client(gateway, mock):
    """No SDK: the path as documented, any project and location, the gateway key as a bearer token."""
    response = requests.post(
        f"{gateway.url}/{PROVIDER}/v1/projects/x/locations/y/publishers/anthropic/models/{CLAUDE}:rawPredict",
        headers={"authorization": f"Bearer {gateway.key('claude-raw')}"},
        json={"anthropic_version": "vertex-2023-10-16", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]},
        timeout=10,
    )

    assert response.status_code == 200, response.text
    assert response.json()["content"] == [{"type": "text", "text": up.TEXT}]
    assert_upstream_got(mock, AUTH, minted(mock, token_path("claude-raw")), gateway.key("claude-raw"))
    (request,) = mock.requests
    assert request.path == claude_path("rawPredict")
    assert request.json()["anthropic_version"] == "vertex-2023-10-16"
