"""Assertions shared by the four SDK test modules."""

from __future__ import annotations

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
