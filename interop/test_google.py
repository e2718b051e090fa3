"""The official `google-genai` SDK (Gemini Developer API) through byok-proxy
(http_options.base_url = http://ADDR/google-ai-studio, api_key = the gateway key)."""

from __future__ import annotations

import pytest
from google import genai
from google.genai import errors, types

import mock_upstream as up
from checks import assert_hits, assert_refusal, assert_upstream_got
from gateway import MAX_BODY_BYTES, Credential, Tenant

AUTH = "x-goog-api-key"  # Google's upstream auth
MODEL = "gemini-2.0-flash"
API_VERSION = "v1"  # google-genai's default for the Gemini Developer API (v1beta before 2.x)

# A 400 that is about the request, not the key: relayed as it came, no failover.
NOT_ABOUT_THE_KEY = {
    "error": {
        "code": 400,
        "message": "* GenerateContentRequest.contents: contents is not specified",
        "status": "INVALID_ARGUMENT",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "CONTENTS_NOT_SPECIFIED",
                "domain": "generativelanguage.googleapis.com",
            },
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": "contents", "description": "contents is not specified"}],
            },
        ],
    }
}

TENANTS = [
    Tenant("ok", [Credential("AIzaSy-google-ok-0000001")]),
    Tenant("restricted", [Credential("AIzaSy-google-flash-0002", allowed_models=[f"google-ai-studio/{MODEL}"])]),
    Tenant("revoked", [Credential("AIzaSy-google-revoked-03"), Credential("AIzaSy-google-revoked-04")]),
    Tenant("failover", [Credential("AIzaSy-google-revoked-05"), Credential("AIzaSy-google-ok-0000006")]),
    Tenant("bad-request", [Credential("AIzaSy-google-badreq-007"), Credential("AIzaSy-google-ok-0000008")]),
    Tenant("broke", [Credential("AIzaSy-google-broke-0009")], limit=0),
]


@pytest.fixture(scope="module")
def gateway(start_proxy):
    return start_proxy("google-ai-studio", TENANTS)


def sdk(gateway, tenant: str = "ok", *, key: str | None = None) -> genai.Client:
    """A client of the proxy. google-genai retries nothing unless told to (retry_options), so
    these clients keep that default everywhere."""
    options = types.HttpOptions(base_url=f"{gateway.url}/google-ai-studio", timeout=10_000)
    return genai.Client(api_key=key or gateway.key(tenant), http_options=options)


def generate(client: genai.Client, model: str = MODEL, contents: str = "hi"):
    return client.models.generate_content(model=model, contents=contents)


def assert_readable(e: errors.APIError, status: int, reason: str, google_status: str) -> str:
    """What a google-genai user reads: the proxy's message and Google's status."""
    message = assert_refusal(e.details, status, reason)
    assert e.code == status
    assert e.status == google_status
    assert e.message == message
    assert message in str(e)
    return message


# --- Success ------------------------------------------------------------------


def test_generate_content(gateway, mock):
    response = generate(sdk(gateway))

    assert response.text == up.TEXT
    usage = response.usage_metadata
    assert (usage.prompt_token_count, usage.candidates_token_count) == (up.INPUT_TOKENS, up.OUTPUT_TOKENS)
    assert_upstream_got(mock, AUTH, gateway.secrets("ok"), gateway.key("ok"))
    (request,) = mock.requests
    assert request.path == f"/{API_VERSION}/models/{MODEL}:generateContent"


def test_generate_content_stream(gateway, mock):
    client = sdk(gateway)  # held: a google-genai Client closes its connections when collected
    chunks = list(client.models.generate_content_stream(model=MODEL, contents="hi"))

    assert "".join(c.text for c in chunks) == up.STREAM_TEXT
    usage = chunks[-1].usage_metadata
    assert (usage.prompt_token_count, usage.candidates_token_count) == (up.INPUT_TOKENS, up.OUTPUT_TOKENS)
    assert_upstream_got(mock, AUTH, gateway.secrets("ok"), gateway.key("ok"))
    (request,) = mock.requests
    assert (request.path, request.query) == (f"/{API_VERSION}/models/{MODEL}:streamGenerateContent", "alt=sse")


# --- The proxy's own refusals: nothing goes upstream ---------------------------


def test_unknown_gateway_key_is_401(gateway, mock):
    with pytest.raises(errors.ClientError) as caught:
        generate(sdk(gateway, key="gw-nobody-knows-this-key"))

    assert_readable(caught.value, 401, "invalid_api_key", "UNAUTHENTICATED")
    assert_hits(mock, 0)


def test_model_not_allowed_is_403(gateway, mock):
    with pytest.raises(errors.ClientError) as caught:
        generate(sdk(gateway, "restricted"), model="gemini-2.5-pro")

    message = assert_readable(caught.value, 403, "no_eligible_credential", "PERMISSION_DENIED")
    assert "allowed_models" in message
    assert_hits(mock, 0)


def test_body_too_large_is_413(gateway, mock):
    with pytest.raises(errors.ClientError) as caught:
        generate(sdk(gateway), contents="x" * (MAX_BODY_BYTES + 1024))

    assert_readable(caught.value, 413, "body_too_large", "INVALID_ARGUMENT")
    assert_hits(mock, 0)


def test_key_over_its_limit_is_402(gateway, mock):
    with pytest.raises(errors.ClientError) as caught:
        generate(sdk(gateway, "broke"))

    assert_readable(caught.value, 402, "key_limit_exceeded", "FAILED_PRECONDITION")
    assert_hits(mock, 0)


# --- Upstream answers: rejections, failover, other 400s --------------------------


def test_every_secret_rejected_is_502_and_the_sdk_does_not_retry(gateway, mock):
    secrets = gateway.secrets("revoked")
    mock.reject("google-ai-studio", *secrets)  # Google's 400 API_KEY_INVALID

    with pytest.raises(errors.ServerError) as caught:
        generate(sdk(gateway, "revoked"))

    assert_readable(caught.value, 502, "upstream_rejected_credential", "UNAVAILABLE")
    assert "API key not valid" not in str(caught.value)  # the provider's words about the secret stay inside
    assert_upstream_got(mock, AUTH, secrets, gateway.key("revoked"))  # once per credential


def test_first_secret_rejected_fails_over_to_the_second(gateway, mock):
    secrets = gateway.secrets("failover")
    mock.reject("google-ai-studio", secrets[0])

    response = generate(sdk(gateway, "failover"))

    assert response.text == up.TEXT
    assert_upstream_got(mock, AUTH, secrets, gateway.key("failover"))


def test_a_400_not_about_the_key_is_relayed_as_it_came(gateway, mock):
    secrets = gateway.secrets("bad-request")
    mock.reply_for_secret(secrets[0], 400, NOT_ABOUT_THE_KEY)

    with pytest.raises(errors.ClientError) as caught:
        generate(sdk(gateway, "bad-request"))

    e = caught.value
    assert (e.code, e.status) == (400, "INVALID_ARGUMENT")
    assert e.message == NOT_ABOUT_THE_KEY["error"]["message"]
    assert e.details == NOT_ABOUT_THE_KEY  # byte for byte: the JSON the upstream sent
    assert_upstream_got(mock, AUTH, secrets[:1], gateway.key("bad-request"))  # no failover
