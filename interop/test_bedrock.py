"""The official `boto3` bedrock-runtime client through byok-proxy's TLS listener
(endpoint_url = https://ADDR/amazon-bedrock, AWS_BEARER_TOKEN_BEDROCK = the gateway key).

botocore sends a bearer token over HTTPS only, so this module's proxy serves
TLS with the test certificate of tests/fixtures (signed by ca.pem).
"""

from __future__ import annotations

import datetime
import json
from unittest import mock as mock_module

import boto3
import pytest
import botocore.auth
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

import mock_upstream as up
from checks import assert_hits, assert_refusal, assert_upstream_got
from gateway import CA_FILE, FIXTURES, MAX_BODY_BYTES, Credential, Tenant
from mock_upstream import MockUpstream

AUTH = "authorization"  # Bedrock API keys: Bearer
MODEL = "anthropic.claude-3-haiku-20240307-v1:0"

AWS_KEY = {
    "accessKeyId": "AKIAIOSFODNN7EXAMPLE",
    "secretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYAWSSECRETKEY",
    "region": "us-west-2",
    "sessionToken": "FQoGZXIvYXdzEXAMPLESESSIONTOKEN",
}

TENANTS = [
    Tenant("ok", [Credential("ABSK-bedrock-ok-00000001")]),
    Tenant("restricted", [Credential("ABSK-bedrock-haiku-0002", allowed_models=[f"amazon-bedrock/{MODEL}"])]),
    Tenant("revoked", [Credential("ABSK-bedrock-revoked-03"), Credential("ABSK-bedrock-revoked-04")]),
    Tenant("failover", [Credential("ABSK-bedrock-revoked-05"), Credential("ABSK-bedrock-ok-00000006")]),
    Tenant("broke", [Credential("ABSK-bedrock-broke-0009")], limit=0),
    # SPEC §9: AWS access keys, each attempt signed with SigV4.
    Tenant("aws", [Credential(json.dumps(AWS_KEY))]),
]


@pytest.fixture(scope="module")
def gateway(start_proxy):
    return start_proxy("amazon-bedrock", TENANTS, tls=True)


class Bedrock:
    """A bedrock-runtime client, keeping the raw body of the last error answer it got."""

    def __init__(self, endpoint_url: str, *, sdk_retries: bool):
        retries = {} if sdk_retries else {"retries": {"max_attempts": 1}}
        config = Config(connect_timeout=5, read_timeout=10, **retries)
        self.client = boto3.client(
            "bedrock-runtime", region_name="us-east-1", endpoint_url=endpoint_url, verify=str(CA_FILE), config=config
        )
        self.client.meta.events.register("after-call.bedrock-runtime", self._keep_error_body)
        self.error_body = None

    def _keep_error_body(self, http_response, **_):
        if http_response.status_code >= 300:
            self.error_body = json.loads(http_response.content)

    def converse(self, model: str = MODEL, text: str = "hi"):
        return self.client.converse(modelId=model, messages=[{"role": "user", "content": [{"text": text}]}])

    def converse_stream(self, model: str = MODEL, text: str = "hi"):
        return self.client.converse_stream(modelId=model, messages=[{"role": "user", "content": [{"text": text}]}])


@pytest.fixture
def bedrock(gateway, monkeypatch):
    """bedrock(tenant="ok", key=None, sdk_retries=False) -> a Bedrock client of the proxy.

    Without `sdk_retries` it never retries (the test is about something else)."""

    def make(tenant: str = "ok", *, key: str | None = None, sdk_retries: bool = False) -> Bedrock:
        monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", key or gateway.key(tenant))
        return Bedrock(f"{gateway.url}/amazon-bedrock", sdk_retries=sdk_retries)

    return make


def assert_readable(e: ClientError, body, status: int, reason: str, code: str) -> str:
    """What a boto3 user reads: the proxy's message under the AWS error code."""
    message = assert_refusal(body, status, reason)
    assert e.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert e.response["Error"]["Code"] == code
    assert e.response["ResponseMetadata"]["HTTPHeaders"].get("x-amzn-errortype") == code
    assert e.response["Error"]["Message"] == message
    assert message in str(e)
    return message


def text_of(converse_response) -> str:
    return "".join(block["text"] for block in converse_response["output"]["message"]["content"])


# --- The harness itself -----------------------------------------------------------


def test_the_mock_event_stream_decodes_with_botocore(monkeypatch):
    """The mock's event-stream encoder, checked by botocore itself (CRCs included), no proxy."""
    direct = MockUpstream(tls=(FIXTURES / "upstream.pem", FIXTURES / "upstream.key")).start()
    try:
        monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", "token-direct")
        events = list(Bedrock(direct.url, sdk_retries=False).converse_stream()["stream"])
    finally:
        direct.stop()
    assert [next(iter(e)) for e in events] == (
        ["messageStart"] + ["contentBlockDelta"] * len(up.STREAM_PIECES) + ["contentBlockStop", "messageStop", "metadata"]
    )


# --- Success ------------------------------------------------------------------


def test_converse(gateway, mock, bedrock):
    result = bedrock().converse()

    assert text_of(result) == up.TEXT
    assert result["stopReason"] == "end_turn"
    assert result["usage"] == up.BEDROCK_USAGE
    assert_upstream_got(mock, AUTH, gateway.secrets("ok"), gateway.key("ok"))
    (request,) = mock.requests
    assert request.path == "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"


def test_converse_stream(gateway, mock, bedrock):
    events = list(bedrock().converse_stream()["stream"])

    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert text == up.STREAM_TEXT
    assert events[-2] == {"messageStop": {"stopReason": "end_turn"}}
    assert events[-1]["metadata"]["usage"] == up.BEDROCK_USAGE
    assert_upstream_got(mock, AUTH, gateway.secrets("ok"), gateway.key("ok"))
    assert mock.requests[0].path.endswith("/converse-stream")


def botocore_signature(request: up.Recorded) -> str:
    """What botocore's own SigV4 signer makes of the request the mock received, signed at the
    instant and over the headers the proxy's signature names: equal, or the proxy signed wrong."""
    auth = request.headers["authorization"]
    signed = auth.split("SignedHeaders=")[1].split(",")[0].split(";")
    headers = {name: request.headers[name] for name in signed if name not in ("host", "x-amz-date")}
    url = f"https://{request.headers['host']}{request.path}" + (f"?{request.query}" if request.query else "")
    aws = AWSRequest(method=request.method, url=url, data=request.body, headers=headers)
    at = datetime.datetime.strptime(request.headers["x-amz-date"], "%Y%m%dT%H%M%SZ")
    creds = Credentials(AWS_KEY["accessKeyId"], AWS_KEY["secretAccessKey"], AWS_KEY["sessionToken"])
    with mock_module.patch.object(botocore.auth.datetime, "datetime", wraps=datetime.datetime) as dt:
        dt.utcnow.return_value = at
        dt.now.return_value = at.replace(tzinfo=datetime.timezone.utc)
        SigV4Auth(creds, "bedrock", AWS_KEY["region"]).add_auth(aws)
    return aws.headers["Authorization"]


@pytest.mark.parametrize("streamed", [False, True])
def test_aws_access_keys_sign_each_attempt_as_botocore_does(gateway, mock, bedrock, streamed):
    client = bedrock("aws")
    if streamed:
        events = list(client.converse_stream()["stream"])
        assert events[-1]["metadata"]["usage"] == up.BEDROCK_USAGE
    else:
        assert text_of(client.converse()) == up.TEXT
    (request,) = mock.requests
    auth = request.headers["authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/")
    assert "/us-west-2/bedrock/aws4_request" in auth
    assert auth == botocore_signature(request)
    assert request.headers["x-amz-security-token"] == AWS_KEY["sessionToken"]
    sent = " ".join(up.everything_sent(request))
    for secret in (AWS_KEY["secretAccessKey"], gateway.key("aws"), "accessKeyId"):
        assert secret not in sent


# --- The proxy's own refusals: nothing goes upstream ---------------------------


def test_unknown_gateway_key_is_401(mock, bedrock):
    client = bedrock(key="gw-nobody-knows-this-key")
    with pytest.raises(ClientError) as caught:
        client.converse()

    assert_readable(caught.value, client.error_body, 401, "invalid_api_key", "AccessDeniedException")
    assert_hits(mock, 0)


def test_model_not_allowed_is_403(mock, bedrock):
    client = bedrock("restricted")
    with pytest.raises(ClientError) as caught:
        client.converse(model="anthropic.claude-3-5-sonnet-20240620-v1:0")

    message = assert_readable(caught.value, client.error_body, 403, "no_eligible_credential", "AccessDeniedException")
    assert "allowed_models" in message
    assert_hits(mock, 0)


def test_body_too_large_is_413(mock, bedrock):
    client = bedrock()
    with pytest.raises(ClientError) as caught:
        client.converse(text="x" * (MAX_BODY_BYTES + 1024))

    assert_readable(caught.value, client.error_body, 413, "body_too_large", "ValidationException")
    assert_hits(mock, 0)


def test_key_over_its_limit_is_402(mock, bedrock):
    client = bedrock("broke", sdk_retries=True)
    with pytest.raises(ClientError) as caught:
        client.converse()

    assert_readable(caught.value, client.error_body, 402, "key_limit_exceeded", "ServiceQuotaExceededException")
    assert_hits(mock, 0)  # botocore does not retry it


# --- Upstream rejections and failover -------------------------------------------


def test_every_secret_rejected_is_403_and_the_sdk_does_not_retry(gateway, mock, bedrock):
    """botocore retries every 5xx whatever the headers say, so on Bedrock's route the proxy
    answers upstream_rejected_credential with 403 AccessDeniedException, not 502."""
    secrets = gateway.secrets("revoked")
    mock.reject("amazon-bedrock", *secrets)
    client = bedrock("revoked", sdk_retries=True)  # botocore's default retries

    with pytest.raises(ClientError) as caught:
        client.converse()

    e = caught.value
    assert_readable(e, client.error_body, 403, "upstream_rejected_credential", "AccessDeniedException")
    assert "security token" not in str(e)  # the provider's words about the secret stay inside
    assert e.response["ResponseMetadata"]["RetryAttempts"] == 0
    assert_upstream_got(mock, AUTH, secrets, gateway.key("revoked"))  # once per credential, no SDK retry


def test_first_secret_rejected_fails_over_to_the_second(gateway, mock, bedrock):
    secrets = gateway.secrets("failover")
    mock.reject("amazon-bedrock", secrets[0])

    result = bedrock("failover").converse()

    assert text_of(result) == up.TEXT
    assert_upstream_got(mock, AUTH, secrets, gateway.key("failover"))
