"""The official `anthropic` SDK through byok-proxy (base_url = http://ADDR/anthropic)."""

from __future__ import annotations

import anthropic
import pytest

import mock_upstream as up
from checks import assert_hits, assert_refusal, assert_upstream_got
from gateway import MAX_BODY_BYTES, Credential, Tenant

AUTH = "x-api-key"  # Anthropic's upstream auth
MODEL = "claude-3-5-haiku-latest"

TENANTS = [
    Tenant("ok", [Credential("sk-ant-ok-00000000000001")]),
    Tenant("restricted", [Credential("sk-ant-haiku-0000000002", allowed_models=[f"anthropic/{MODEL}"])]),
    Tenant("revoked", [Credential("sk-ant-revoked-00000003"), Credential("sk-ant-revoked-00000004")]),
    Tenant("failover", [Credential("sk-ant-revoked-00000005"), Credential("sk-ant-ok-00000000000006")]),
    Tenant("broke", [Credential("sk-ant-broke-000000009")], limit=0),
]


@pytest.fixture(scope="module")
def gateway(start_proxy):
    return start_proxy("anthropic", TENANTS)


def sdk(gateway, tenant: str = "ok", *, key: str | None = None, sdk_retries: bool = False) -> anthropic.Anthropic:
    """A client of the proxy; without `sdk_retries`, one that never retries (the test is about something else)."""
    retries = {} if sdk_retries else {"max_retries": 0}
    return anthropic.Anthropic(
        base_url=f"{gateway.url}/anthropic", api_key=key or gateway.key(tenant), timeout=10, **retries
    )


def message(client: anthropic.Anthropic, model: str = MODEL, content: str = "hi", **options):
    return client.messages.create(
        model=model, max_tokens=64, messages=[{"role": "user", "content": content}], **options
    )


def assert_readable(e: anthropic.APIStatusError, status: int, reason: str, error_type: str) -> str:
    """What an Anthropic SDK user reads: the proxy's message, its type and a request id."""
    body = e.response.json()
    message = assert_refusal(body, status, reason)
    assert message in str(e)
    assert body["type"] == "error"
    assert e.type == error_type
    assert e.request_id is not None
    return message


# --- Success ------------------------------------------------------------------


def test_message(gateway, mock):
    result = message(sdk(gateway))

    assert [block.text for block in result.content] == [up.TEXT]
    assert result.stop_reason == "end_turn"
    assert (result.usage.input_tokens, result.usage.output_tokens) == (up.INPUT_TOKENS, up.OUTPUT_TOKENS)
    assert_upstream_got(mock, AUTH, gateway.secrets("ok"), gateway.key("ok"))
    (request,) = mock.requests
    assert request.path == "/v1/messages"
    assert request.headers.get("anthropic-version")


def test_message_stream(gateway, mock):
    with sdk(gateway).messages.stream(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()

    assert text == up.STREAM_TEXT
    assert [block.text for block in final.content] == [up.STREAM_TEXT]
    assert (final.usage.input_tokens, final.usage.output_tokens) == (up.INPUT_TOKENS, up.OUTPUT_TOKENS)
    assert final.stop_reason == "end_turn"
    assert_upstream_got(mock, AUTH, gateway.secrets("ok"), gateway.key("ok"))


def test_raw_event_stream(gateway, mock):
    events = list(message(sdk(gateway), stream=True))

    assert [e.type for e in events if e.type != "ping"] == (
        ["message_start", "content_block_start"]
        + ["content_block_delta"] * len(up.STREAM_PIECES)
        + ["content_block_stop", "message_delta", "message_stop"]
    )
    assert "".join(e.delta.text for e in events if e.type == "content_block_delta") == up.STREAM_TEXT
    assert_upstream_got(mock, AUTH, gateway.secrets("ok"), gateway.key("ok"))


def test_count_tokens(gateway, mock):
    result = sdk(gateway).messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "hi"}])

    assert result.input_tokens == up.COUNT_TOKENS
    assert_upstream_got(mock, AUTH, gateway.secrets("ok"), gateway.key("ok"))
    assert mock.requests[0].path == "/v1/messages/count_tokens"


# --- The proxy's own refusals: nothing goes upstream ---------------------------


def test_unknown_gateway_key_is_401(gateway, mock):
    with pytest.raises(anthropic.AuthenticationError) as caught:
        message(sdk(gateway, key="gw-nobody-knows-this-key"))

    assert_readable(caught.value, 401, "invalid_api_key", "authentication_error")
    assert_hits(mock, 0)


def test_model_not_allowed_is_403(gateway, mock):
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        message(sdk(gateway, "restricted"), model="claude-opus-4-1")

    text = assert_readable(caught.value, 403, "no_eligible_credential", "permission_error")
    assert "allowed_models" in text
    assert_hits(mock, 0)


def test_body_too_large_is_413(gateway, mock):
    with pytest.raises(anthropic.APIStatusError) as caught:
        message(sdk(gateway), content="x" * (MAX_BODY_BYTES + 1024))

    assert caught.value.status_code == 413
    assert_readable(caught.value, 413, "body_too_large", "request_too_large")
    assert_hits(mock, 0)


def test_key_over_its_limit_is_402(gateway, mock):
    with pytest.raises(anthropic.APIStatusError) as caught:
        message(sdk(gateway, "broke", sdk_retries=True))

    assert caught.value.status_code == 402
    assert_readable(caught.value, 402, "key_limit_exceeded", "billing_error")
    assert_hits(mock, 0)


# --- Upstream rejections and failover -------------------------------------------


def test_every_secret_rejected_is_502_and_the_sdk_does_not_retry(gateway, mock):
    secrets = gateway.secrets("revoked")
    mock.reject("anthropic", *secrets)

    with pytest.raises(anthropic.InternalServerError) as caught:
        message(sdk(gateway, "revoked", sdk_retries=True))  # the SDK's default retries

    assert caught.value.status_code == 502
    assert_readable(caught.value, 502, "upstream_rejected_credential", "api_error")
    assert "invalid x-api-key" not in str(caught.value)  # the provider's words about the secret stay inside
    assert caught.value.response.headers.get("x-should-retry") == "false"
    assert_upstream_got(mock, AUTH, secrets, gateway.key("revoked"))  # once per credential, no SDK retry


def test_first_secret_rejected_fails_over_to_the_second(gateway, mock):
    secrets = gateway.secrets("failover")
    mock.reject("anthropic", secrets[0])

    result = message(sdk(gateway, "failover"))

    assert [block.text for block in result.content] == [up.TEXT]
    assert_upstream_got(mock, AUTH, secrets, gateway.key("failover"))
