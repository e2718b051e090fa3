"""Assertions shared by the SDK test modules."""

from __future__ import annotations

import datetime
import json
import re
from unittest import mock as mock_module

import botocore.auth
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from gateway import proxy_error
from mock_upstream import MockUpstream, everything_sent

# Where a client may put its gateway key; the proxy strips all four.
CLIENT_KEY_HEADERS = ("authorization", "x-api-key", "api-key", "x-goog-api-key")


def assert_upstream_got(mock: MockUpstream, auth_header: str, secrets: list[str], gateway_key: str):
    """The upstream got one request per secret, in this order, each carrying its secret in
    `auth_header` (and no other key header), and never the gateway key anywhere."""
    requests = mock.requests
    assert [r.secret for r in requests] == secrets, f"upstream hits: {[r.secret for r in requests]}"
    for request, secret in zip(requests, secrets):
        want = f"Bearer {secret}" if auth_header == "authorization" else secret
        assert request.headers.get(auth_header) == want
        others = {h: request.headers[h] for h in CLIENT_KEY_HEADERS if h != auth_header and h in request.headers}
        assert not others, f"key headers besides {auth_header}: {others}"
    assert_gateway_key_never_sent(mock, gateway_key)


def assert_gateway_key_never_sent(mock: MockUpstream, gateway_key: str):
    for request in mock.requests:
        leaked = [text for text in everything_sent(request) if gateway_key in text]
        assert not leaked, f"the gateway key reached the upstream in {request.method} {request.path}: {leaked}"


def assert_refusal(body, status: int, reason: str) -> str:
    """`body` is the proxy's own error for `status` with `reason`; returns its message."""
    code, got_reason, message = proxy_error(body)
    assert (code, got_reason) == (status, reason), f"proxy answered {body!r}"
    return message


def assert_hits(mock: MockUpstream, expected: int):
    hits = len(mock.requests)
    assert hits == expected, f"{hits} upstream requests, expected {expected}: {mock.secrets_seen()}"


# --- Bodies compared byte for byte, one top-level member at a time -------------------


def _members(text: str) -> list[tuple[str, int, int, int]]:
    """(key, member start, value start, value end) of each top-level member of a JSON object,
    as offsets into `text`."""
    decoder = json.JSONDecoder()
    ws = re.compile(r"[ \t\n\r]*")
    at = ws.match(text, 0).end()
    assert text[at : at + 1] == "{", f"not a JSON object: {text[:80]!r}"
    at = ws.match(text, at + 1).end()
    members = []
    if text[at : at + 1] == "}":
        return members
    while True:
        start = at
        key, at = decoder.raw_decode(text, at)
        at = ws.match(text, at).end()
        assert text[at] == ":", f"no ':' after {key!r} at {at}"
        value_start = ws.match(text, at + 1).end()
        _, value_end = decoder.raw_decode(text, value_start)
        members.append((key, start, value_start, value_end))
        at = ws.match(text, value_end).end()
        if text[at] == "}":
            return members
        assert text[at] == ",", f"no ',' after {key!r} at {at}"
        at = ws.match(text, at + 1).end()


def edit_members(body: bytes, *, drop=(), set: dict | None = None) -> bytes:
    """`body` with the top-level members named in `drop` removed (with the separator that follows
    them, or for the last one the separator before it) and the values of those in `set` replaced
    in place (JSON-encoded); every other byte as it was."""
    text = body.decode()
    for name, value in (set or {}).items():
        found = [m for m in _members(text) if m[0] == name]
        assert len(found) == 1, f"{len(found)} top-level {name!r} members in {text[:200]!r}"
        _, _, value_start, value_end = found[0]
        text = text[:value_start] + json.dumps(value) + text[value_end:]
    for name in drop:
        members = _members(text)
        for i, (key, start, _, value_end) in enumerate(members):
            if key != name:
                continue
            if i + 1 < len(members):
                text = text[:start] + text[members[i + 1][1] :]
            elif i > 0:
                text = text[: members[i - 1][3]] + text[value_end:]
            else:
                text = text[:start] + text[value_end:]
            break
    return text.encode()


def assert_same_bytes(got: bytes, want: bytes, what: str):
    assert got == want, f"{what}:\n got  {got[:600]!r}\n want {want[:600]!r}"


# --- AWS Signature Version 4, as botocore computes it -------------------------------------


def botocore_signature(request, aws_key: dict) -> str:
    """What botocore's own SigV4 signer makes of the request the mock received (a Recorded), signed
    with `aws_key` ({"accessKeyId", "secretAccessKey", "region", "sessionToken"?}) at the instant
    and over the headers the proxy's signature names: equal, or the proxy signed wrong."""
    auth = request.headers["authorization"]
    signed = auth.split("SignedHeaders=")[1].split(",")[0].split(";")
    headers = {name: request.headers[name] for name in signed if name not in ("host", "x-amz-date")}
    url = f"https://{request.headers['host']}{request.path}" + (f"?{request.query}" if request.query else "")
    aws = AWSRequest(method=request.method, url=url, data=request.body, headers=headers)
    at = datetime.datetime.strptime(request.headers["x-amz-date"], "%Y%m%dT%H%M%SZ")
    creds = Credentials(aws_key["accessKeyId"], aws_key["secretAccessKey"], aws_key.get("sessionToken"))
    with mock_module.patch.object(botocore.auth.datetime, "datetime", wraps=datetime.datetime) as dt:
        dt.utcnow.return_value = at
        dt.now.return_value = at.replace(tzinfo=datetime.timezone.utc)
        SigV4Auth(creds, "bedrock", aws_key["region"]).add_auth(aws)
    return aws.headers["Authorization"]
