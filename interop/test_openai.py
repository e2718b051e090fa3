"""The official `openai` SDK through byok-proxy (base_url = http://ADDR/openai/v1)."""

from __future__ import annotations

import openai
import pytest

import mock_upstream as up
from checks import assert_hits, assert_refusal, assert_upstream_got
from gateway import MAX_BODY_BYTES, Credential, Tenant

AUTH = "authorization"  # OpenAI's upstream auth: Bearer
MODEL = "gpt-4o-mini"

TENANTS = [
    Tenant("ok", [Credential("sk-openai-ok-0000000001")]),
    Tenant("restricted", [Credential("sk-openai-mini-00000002", allowed_models=["openai/gpt-4o-mini"])]),
    Tenant("revoked", [Credential("sk-openai-revoked-0003"), Credential("sk-openai-revoked-0004")]),
    Tenant("failover", [Credential("sk-openai-revoked-0005"), Credential("sk-openai-ok-0000000006")]),
    Tenant("broke", [Credential("sk-openai-broke-0000009")], limit=0),
]


@pytest.fixture(scope="module")
def gateway(start_proxy):
    return start_proxy("openai", TENANTS)


def sdk(gateway, tenant: str = "ok", *, key: str | None = None, sdk_retries: bool = False) -> openai.OpenAI:
    """A client of the proxy; without `sdk_retries`, one that never retries (the test is about something else)."""
    retries = {} if sdk_retries else {"max_retries": 0}
    return openai.OpenAI(base_url=f"{gateway.url}/openai/v1", api_key=key or gateway.key(tenant), timeout=10, **retries)


def chat(client: openai.OpenAI, model: str = MODEL, content: str = "hi", **options):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}], **options)


# --- Success ------------------------------------------------------------------


def test_chat_completion(gateway, mock):
    completion = chat(sdk(gateway))

    assert completion.choices[0].message.content == up.TEXT
    assert completion.choices[0].finish_reason == "stop"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (up.INPUT_TOKENS, up.OUTPUT_TOKENS)
    assert_upstream_got(mock, AUTH, gateway.secrets("ok"), gateway.key("ok"))
    (request,) = mock.requests
    assert request.path == "/v1/chat/completions"
    assert request.json()["model"] == MODEL


def test_chat_completion_stream(gateway, mock):
    stream = chat(sdk(gateway), stream=True, stream_options={"include_usage": True})
    chunks = list(stream)

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == up.STREAM_TEXT
    usage = chunks[-1].usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (up.INPUT_TOKENS, up.OUTPUT_TOKENS)
    assert_upstream_got(mock, AUTH, gateway.secrets("ok"), gateway.key("ok"))


def test_embeddings(gateway, mock):
    result = sdk(gateway).embeddings.create(model="text-embedding-3-small", input="hello")

    assert result.data[0].embedding == up.EMBEDDING
    assert result.usage.prompt_tokens == up.INPUT_TOKENS
    assert_upstream_got(mock, AUTH, gateway.secrets("ok"), gateway.key("ok"))
    assert mock.requests[0].path == "/v1/embeddings"


def test_responses(gateway, mock):
    response = sdk(gateway).responses.create(model=MODEL, input="hi")

    assert response.output_text == up.TEXT
    assert (response.usage.input_tokens, response.usage.output_tokens) == (up.INPUT_TOKENS, up.OUTPUT_TOKENS)
    assert_upstream_got(mock, AUTH, gateway.secrets("ok"), gateway.key("ok"))
    assert mock.requests[0].path == "/v1/responses"


def test_responses_stream(gateway, mock):
    events = list(sdk(gateway).responses.create(model=MODEL, input="hi", stream=True))

    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == up.STREAM_TEXT
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == up.STREAM_TEXT
    assert events[-1].response.usage.total_tokens == up.TOTAL_TOKENS
    assert_upstream_got(mock, AUTH, gateway.secrets("ok"), gateway.key("ok"))


# --- The proxy's own refusals: nothing goes upstream ---------------------------


def test_unknown_gateway_key_is_401(gateway, mock):
    with pytest.raises(openai.AuthenticationError) as caught:
        chat(sdk(gateway, key="gw-nobody-knows-this-key"))

    e = caught.value
    message = assert_refusal(e.response.json(), 401, "invalid_api_key")
    assert message in str(e)
    assert e.type == "authentication_error"
    assert_hits(mock, 0)


def test_model_not_allowed_is_403(gateway, mock):
    with pytest.raises(openai.PermissionDeniedError) as caught:
        chat(sdk(gateway, "restricted"), model="gpt-4o")

    e = caught.value
    message = assert_refusal(e.response.json(), 403, "no_eligible_credential")
    assert message in str(e)
    assert "allowed_models" in message
    assert e.type == "permission_error"
    assert_hits(mock, 0)


def test_body_too_large_is_413(gateway, mock):
    with pytest.raises(openai.APIStatusError) as caught:
        chat(sdk(gateway), content="x" * (MAX_BODY_BYTES + 1024))

    e = caught.value
    assert e.status_code == 413
    message = assert_refusal(e.response.json(), 413, "body_too_large")
    assert message in str(e)
    assert e.type is not None
    assert_hits(mock, 0)


def test_key_over_its_limit_is_402(gateway, mock):
    with pytest.raises(openai.APIStatusError) as caught:
        chat(sdk(gateway, "broke", sdk_retries=True))

    e = caught.value
    assert e.status_code == 402
    message = assert_refusal(e.response.json(), 402, "key_limit_exceeded")
    assert message in str(e)
    assert e.type == "billing_error"
    assert e.response.headers.get("x-should-retry") == "false"
    assert_hits(mock, 0)


# --- Upstream rejections and failover -------------------------------------------


def test_every_secret_rejected_is_502_and_the_sdk_does_not_retry(gateway, mock):
    secrets = gateway.secrets("revoked")
    mock.reject("openai", *secrets)

    with pytest.raises(openai.InternalServerError) as caught:
        chat(sdk(gateway, "revoked", sdk_retries=True))  # the SDK's default retries

    e = caught.value
    assert e.status_code == 502
    message = assert_refusal(e.response.json(), 502, "upstream_rejected_credential")
    assert message in str(e)
    assert "Incorrect API key" not in str(e)  # the provider's words about the secret stay inside
    assert e.response.headers.get("x-should-retry") == "false"
    assert e.type is not None
    assert_upstream_got(mock, AUTH, secrets, gateway.key("revoked"))  # once per credential, no SDK retry


def test_first_secret_rejected_fails_over_to_the_second(gateway, mock):
    secrets = gateway.secrets("failover")
    mock.reject("openai", secrets[0])

    completion = chat(sdk(gateway, "failover"))

    assert completion.choices[0].message.content == up.TEXT
    assert_upstream_got(mock, AUTH, secrets, gateway.key("failover"))
