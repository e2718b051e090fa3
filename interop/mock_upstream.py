"""A recording mock of the providers' upstream APIs (and of Google's OAuth2 token endpoint).

It records every request it gets (method, path, query, lowercased headers,
body) and answers each route in that provider's own wire format, close enough
for the official SDKs to parse: JSON, server-sent events, and AWS's binary
event stream for Bedrock's ConverseStream and InvokeModelWithResponseStream.
A test can script the answer for requests carrying a given upstream secret
(`reply_for_secret`), e.g. to make a revoked key answer 401, or for a path
(`reply_for_path`) when the secret is minted or signed.

Every answer carries the same text and token counts (the constants below), so
a test compares what its SDK parsed with them.

Google Vertex: `/token` and `/token/{anything}` are a service account's
token_uri. They verify the JWT bearer grant the proxy sends (RS256 signature
against the public key of a registered service account, header and claims),
answer `{"access_token": "ya29.mock-N", ...}` and record each such request in
`token_requests`, apart from `requests` (which stay the model API's). A test
scripts a token path's lifetime, failure or latency with `script_token`.
"""

from __future__ import annotations

import base64
import json
import re
import ssl
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import parse_qs, unquote

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

# What every successful answer says.
TEXT = "Hello from the mock upstream."
STREAM_PIECES = ["Hello", " from", " the", " mock", " stream."]
STREAM_TEXT = "".join(STREAM_PIECES)
INPUT_TOKENS = 11
OUTPUT_TOKENS = 7
TOTAL_TOKENS = INPUT_TOKENS + OUTPUT_TOKENS
COUNT_TOKENS = 42
# Exactly representable as float32, so the base64 encoding round-trips.
EMBEDDING = [0.5, -0.25, 0.125, 1.0]

# Google's answer to a key it does not accept.
GOOGLE_API_KEY_INVALID = {
    "error": {
        "code": 400,
        "message": "API key not valid. Please pass a valid API key.",
        "status": "INVALID_ARGUMENT",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
            }
        ],
    }
}

# Each provider's own answer to a secret it does not accept: (status, body, headers).
REJECTED_SECRET = {
    "openai": (
        401,
        {
            "error": {
                "message": "Incorrect API key provided: sk-rev***. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_api_key",
            }
        },
        {},
    ),
    "anthropic": (
        401,
        {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}},
        {"request-id": "req_mock_rejected"},
    ),
    "google-ai-studio": (400, GOOGLE_API_KEY_INVALID, {}),
    "amazon-bedrock": (
        403,
        {"message": "The security token included in the request is invalid."},
        {"x-amzn-ErrorType": "UnrecognizedClientException:http://internal.amazon.com/coral/com.amazon.coral.service/"},
    ),
}


@dataclass(frozen=True)
class Recorded:
    """One request as the upstream received it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]  # lowercased names; repeated headers joined by ", "
    body: bytes

    def json(self):
        return json.loads(self.body)

    @property
    def secret(self) -> str | None:
        """The credential this request carries, in whichever auth header."""
        auth = self.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[len("bearer ") :]
        return self.headers.get("x-api-key") or self.headers.get("x-goog-api-key") or self.headers.get("api-key")


@dataclass(frozen=True)
class Reply:
    """A whole answer, framed with Content-Length."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, body, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
        return cls(status, json.dumps(body).encode(), {"content-type": "application/json", **(headers or {})})


@dataclass(frozen=True)
class Streamed:
    """An answer sent with chunked framing, one chunk per piece, flushed."""

    content_type: str
    chunks: list[bytes]
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


Answer = Reply | Streamed
Route = Callable[[Recorded, dict, re.Match], Answer]


# --- OpenAI -----------------------------------------------------------------


def sse(data, event: str | None = None) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


def openai_chat(req: Recorded, body: dict, _m) -> Answer:
    model = body.get("model", "gpt-4o-mini")
    usage = {"prompt_tokens": INPUT_TOKENS, "completion_tokens": OUTPUT_TOKENS, "total_tokens": TOTAL_TOKENS}
    common = {"id": "chatcmpl-mock", "created": 1_700_000_000, "model": model, "system_fingerprint": "fp_mock"}
    if not body.get("stream"):
        message = {"role": "assistant", "content": TEXT, "refusal": None}
        choice = {"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}
        return Reply.json({**common, "object": "chat.completion", "choices": [choice], "usage": usage})

    def chunk(delta: dict, finish_reason=None, **extra) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        return sse({**common, "object": "chat.completion.chunk", "choices": [choice], **extra})

    chunks = [chunk({"role": "assistant", "content": ""})]
    chunks += [chunk({"content": piece}) for piece in STREAM_PIECES]
    chunks.append(chunk({}, "stop"))
    if (body.get("stream_options") or {}).get("include_usage"):
        chunks.append(sse({**common, "object": "chat.completion.chunk", "choices": [], "usage": usage}))
    chunks.append(sse("[DONE]"))
    return Streamed("text/event-stream", chunks)


def openai_embeddings(req: Recorded, body: dict, _m) -> Answer:
    if body.get("encoding_format") == "base64":
        vector = base64.b64encode(struct.pack(f"<{len(EMBEDDING)}f", *EMBEDDING)).decode()
    else:
        vector = EMBEDDING
    return Reply.json(
        {
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": vector}],
            "model": body.get("model"),
            "usage": {"prompt_tokens": INPUT_TOKENS, "total_tokens": INPUT_TOKENS},
        }
    )


def openai_response_object(model: str, text: str, status: str = "completed") -> dict:
    message = {
        "type": "message",
        "id": "msg_mock",
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}] if text else [],
    }
    return {
        "id": "resp_mock",
        "object": "response",
        "created_at": 1_700_000_000,
        "status": status,
        "model": model,
        "output": [message] if text else [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": INPUT_TOKENS,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": OUTPUT_TOKENS,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": TOTAL_TOKENS,
        }
        if status == "completed"
        else None,
    }


def openai_responses(req: Recorded, body: dict, _m) -> Answer:
    model = body.get("model", "gpt-4o-mini")
    if not body.get("stream"):
        return Reply.json(openai_response_object(model, TEXT))
    seq = iter(range(1_000))

    def event(kind: str, **fields) -> bytes:
        return sse({"type": kind, "sequence_number": next(seq), **fields}, event=kind)

    where = {"item_id": "msg_mock", "output_index": 0, "content_index": 0}
    chunks = [event("response.created", response=openai_response_object(model, "", "in_progress"))]
    chunks += [event("response.output_text.delta", delta=piece, logprobs=[], **where) for piece in STREAM_PIECES]
    chunks.append(event("response.output_text.done", text=STREAM_TEXT, logprobs=[], **where))
    chunks.append(event("response.completed", response=openai_response_object(model, STREAM_TEXT)))
    return Streamed("text/event-stream", chunks)


# --- Anthropic --------------------------------------------------------------


def anthropic_message(model: str, content: list, stop_reason, output_tokens: int) -> dict:
    return {
        "id": "msg_mock",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": INPUT_TOKENS, "output_tokens": output_tokens},
    }


def anthropic_messages(req: Recorded, body: dict, _m) -> Answer:
    model = body.get("model", "claude-3-5-haiku-latest")
    headers = {"request-id": "req_mock_upstream"}
    if not body.get("stream"):
        content = [{"type": "text", "text": TEXT}]
        return Reply.json(anthropic_message(model, content, "end_turn", OUTPUT_TOKENS), headers=headers)

    def event(kind: str, **fields) -> bytes:
        return sse({"type": kind, **fields}, event=kind)

    chunks = [
        event("message_start", message=anthropic_message(model, [], None, 1)),
        event("content_block_start", index=0, content_block={"type": "text", "text": ""}),
        event("ping"),
    ]
    chunks += [
        event("content_block_delta", index=0, delta={"type": "text_delta", "text": piece}) for piece in STREAM_PIECES
    ]
    chunks += [
        event("content_block_stop", index=0),
        event(
            "message_delta",
            delta={"stop_reason": "end_turn", "stop_sequence": None},
            usage={"output_tokens": OUTPUT_TOKENS},
        ),
        event("message_stop"),
    ]
    return Streamed("text/event-stream", chunks, headers=headers)


def anthropic_count_tokens(req: Recorded, body: dict, _m) -> Answer:
    return Reply.json({"input_tokens": COUNT_TOKENS})


# --- Google (Gemini Developer API) ------------------------------------------


def gemini_chunk(model: str, text: str, finished: bool) -> dict:
    candidate = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
    chunk = {"candidates": [candidate], "modelVersion": model, "responseId": "mock-response"}
    if finished:
        candidate["finishReason"] = "STOP"
        chunk["usageMetadata"] = {
            "promptTokenCount": INPUT_TOKENS,
            "candidatesTokenCount": OUTPUT_TOKENS,
            "totalTokenCount": TOTAL_TOKENS,
        }
    return chunk


def google_generate(req: Recorded, body: dict, m: re.Match) -> Answer:
    model, method = m["model"], m["method"]
    if method == "generateContent":
        return Reply.json(gemini_chunk(model, TEXT, finished=True))
    last = len(STREAM_PIECES) - 1
    chunks = [
        f"data: {json.dumps(gemini_chunk(model, piece, i == last))}\r\n\r\n".encode()
        for i, piece in enumerate(STREAM_PIECES)
    ]
    return Streamed("text/event-stream", chunks)


# --- Google Vertex AI ---------------------------------------------------------
#
# The Gemini routes answer as google_generate does; Anthropic's publisher answers
# Anthropic's Messages API (rawPredict, and streamRawPredict as SSE), its model
# taken from the path as Vertex does (the body names none).


def vertex_anthropic(req: Recorded, body: dict, m: re.Match) -> Answer:
    stream = m["method"] == "streamRawPredict"
    return anthropic_messages(req, {**body, "model": m["model"], "stream": stream}, m)


# --- Amazon Bedrock runtime -------------------------------------------------


def eventstream_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One message of AWS's binary event stream (application/vnd.amazon.eventstream).

    prelude: total length, headers length (both u32 BE) and the prelude's CRC32;
    then the headers (name length u8, name, type 7 = string, value length u16 BE,
    value), the payload, and the CRC32 of everything before it.
    """
    encoded = b"".join(
        struct.pack(">B", len(name)) + name.encode() + struct.pack(">BH", 7, len(value)) + value.encode()
        for name, value in headers.items()
    )
    total = 4 + 4 + 4 + len(encoded) + len(payload) + 4
    prelude = struct.pack(">II", total, len(encoded))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + encoded + payload
    return message + struct.pack(">I", zlib.crc32(message))


def bedrock_event(event_type: str, payload: dict) -> bytes:
    headers = {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"}
    return eventstream_message(headers, json.dumps(payload).encode())


BEDROCK_USAGE = {"inputTokens": INPUT_TOKENS, "outputTokens": OUTPUT_TOKENS, "totalTokens": TOTAL_TOKENS}


def bedrock_converse(req: Recorded, body: dict, m: re.Match) -> Answer:
    if m["op"] == "converse":
        return Reply.json(
            {
                "output": {"message": {"role": "assistant", "content": [{"text": TEXT}]}},
                "stopReason": "end_turn",
                "usage": BEDROCK_USAGE,
                "metrics": {"latencyMs": 12},
            }
        )
    chunks = [bedrock_event("messageStart", {"role": "assistant"})]
    chunks += [
        bedrock_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}})
        for piece in STREAM_PIECES
    ]
    chunks += [
        bedrock_event("contentBlockStop", {"contentBlockIndex": 0}),
        bedrock_event("messageStop", {"stopReason": "end_turn"}),
        bedrock_event("metadata", {"usage": BEDROCK_USAGE, "metrics": {"latencyMs": 12}}),
    ]
    return Streamed("application/vnd.amazon.eventstream", chunks)


# InvokeModel with an Anthropic model: the body is Anthropic's Messages request without `model`
# and `stream`, with "anthropic_version": "bedrock-2023-05-31"; the answer is Anthropic's message
# JSON, or (invoke-with-response-stream) an event stream whose `chunk` events carry each Anthropic
# SSE event's JSON, base64, in {"bytes": ..., "p": padding} (Bedrock pads payloads so that their
# length says nothing); the last event adds Bedrock's invocation metrics.
BEDROCK_ANTHROPIC_VERSION = "bedrock-2023-05-31"
BEDROCK_PADDING = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0"


def bedrock_anthropic_model(model_id: str) -> str:
    """Anthropic's name of a Bedrock model id, as Bedrock's answers carry it:
    anthropic.claude-sonnet-4-20250514-v1:0 -> claude-sonnet-4-20250514."""
    name = re.sub(r"^([a-z]{2,4}\.)?anthropic\.", "", model_id)
    return re.sub(r"-v\d+(:\d+)?$", "", name)


def bedrock_chunk(event: dict, n: int) -> bytes:
    payload = {"bytes": base64.b64encode(json.dumps(event).encode()).decode(), "p": BEDROCK_PADDING[: 1 + n % 40]}
    headers = {":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"}
    return eventstream_message(headers, json.dumps(payload).encode())


def bedrock_invoke(req: Recorded, body: dict, m: re.Match) -> Answer:
    model = bedrock_anthropic_model(unquote(m["model"]))
    headers = {"x-amzn-requestid": "00000000-mock-bedrock-request"}
    if m["op"] == "invoke":
        content = [{"type": "text", "text": TEXT}]
        message = {**anthropic_message(model, content, "end_turn", OUTPUT_TOKENS), "id": "msg_bdrk_mock"}
        counts = {
            "x-amzn-bedrock-input-token-count": str(INPUT_TOKENS),
            "x-amzn-bedrock-output-token-count": str(OUTPUT_TOKENS),
        }
        return Reply.json(message, headers={**headers, **counts})
    events = [
        {"type": "message_start", "message": {**anthropic_message(model, [], None, 1), "id": "msg_bdrk_mock"}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ]
    events += [
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}
        for piece in STREAM_PIECES
    ]
    events += [
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": OUTPUT_TOKENS},
        },
        {
            "type": "message_stop",
            "amazon-bedrock-invocationMetrics": {
                "inputTokenCount": INPUT_TOKENS,
                "outputTokenCount": OUTPUT_TOKENS,
                "invocationLatency": 321,
                "firstByteLatency": 123,
            },
        },
    ]
    chunks = [bedrock_chunk(event, n) for n, event in enumerate(events)]
    return Streamed(
        "application/vnd.amazon.eventstream",
        chunks,
        headers={**headers, "x-amzn-bedrock-content-type": "application/json"},
    )


ROUTES: list[tuple[str, re.Pattern, Route]] = [
    ("POST", re.compile(r"/v1/chat/completions"), openai_chat),
    ("POST", re.compile(r"/v1/embeddings"), openai_embeddings),
    ("POST", re.compile(r"/v1/responses"), openai_responses),
    ("POST", re.compile(r"/v1/messages"), anthropic_messages),
    ("POST", re.compile(r"/v1/messages/count_tokens"), anthropic_count_tokens),
    # google-genai's default API version was v1beta, and is v1 since 2.x: both are served.
    ("POST", re.compile(r"/v1(beta)?/models/(?P<model>[^/:]+):(?P<method>generateContent|streamGenerateContent)"),
     google_generate),
    ("POST", re.compile(r"/model/(?P<model>[^/]+)/(?P<op>converse|converse-stream)"), bedrock_converse),
    ("POST", re.compile(r"/model/(?P<model>[^/]+)/(?P<op>invoke|invoke-with-response-stream)"), bedrock_invoke),
    # Google AI Studio's OpenAI-compatible endpoint.
    ("POST", re.compile(r"/v1beta/openai/chat/completions"), openai_chat),
    # Vertex AI (google-genai sends v1beta1 by default, AnthropicVertex v1).
    ("POST", re.compile(r"/v1(beta1)?/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/publishers/google"
                        r"/models/(?P<model>[^/:]+):(?P<method>generateContent|streamGenerateContent)"), google_generate),
    ("POST", re.compile(r"/v1(beta1)?/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/publishers/anthropic"
                        r"/models/(?P<model>[^/:]+):(?P<method>rawPredict|streamRawPredict)"), vertex_anthropic),
    # Azure OpenAI: a deployment's chat completions, under any path prefix.
    ("POST", re.compile(r"(?P<prefix>(/[^/]+)*?)/openai/deployments/(?P<deployment>[^/]+)/chat/completions"),
     openai_chat),
]


def route(req: Recorded) -> Answer:
    for method, pattern, handler in ROUTES:
        match = pattern.fullmatch(req.path)
        if method == req.method and match:
            try:
                body = json.loads(req.body) if req.body else {}
            except ValueError:
                return Reply.json({"error": {"message": "mock upstream: body is not JSON"}}, status=400)
            return handler(req, body, match)
    return Reply.json({"error": {"message": f"mock upstream: no route for {req.method} {req.path}"}}, status=404)


# --- Google's OAuth2 token endpoint (a service account's token_uri) ----------

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
TOKEN_PATH = re.compile(r"/token(/[A-Za-z0-9._-]+)?")
# How far a JWT's iat may be from the mock's clock.
IAT_SKEW_SECS = 300


@dataclass(frozen=True)
class ServiceAccount:
    client_email: str
    public_key: rsa.RSAPublicKey
    private_key_id: str | None


@dataclass
class TokenScript:
    """How a token path answers: `expires_in` of each token, or `status` (not 200: a failing
    endpoint), holding its first answer `hold_first_secs` (a slow endpoint)."""

    expires_in: int = 3600
    status: int = 200
    hold_first_secs: float = 0.0
    answered: int = 0


@dataclass(frozen=True)
class TokenRequest:
    """One request to a token path: what came, what the mock made of it, what it answered."""

    request: Recorded
    jwt_header: dict | None
    claims: dict | None
    error: str | None  # why the grant was refused (400 invalid_grant); None when it verified
    status: int
    access_token: str | None  # the token issued, when one was
    received_at: float  # time.monotonic()
    answered_at: float

    @property
    def path(self) -> str:
        return self.request.path


def _b64url_json(part: str) -> dict:
    decoded = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    if not isinstance(decoded, dict):
        raise ValueError("not a JSON object")
    return decoded


def verify_jwt_grant(
    req: Recorded, token_uri: str, accounts: dict[str, ServiceAccount]
) -> tuple[dict | None, dict | None, str | None]:
    """(JWT header, claims, error) of a token request: error None when it is a JWT bearer grant
    (RFC 7523) signed RS256 by a registered service account, for the cloud-platform scope, with
    `aud` = the token_uri it was sent to and a one-hour lifetime starting now."""
    content_type = req.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return None, None, f"content-type {content_type!r}, not application/x-www-form-urlencoded"
    try:
        form = parse_qs(req.body.decode(), keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError) as e:
        return None, None, f"body is not a form: {e}"
    if form.get("grant_type") != [JWT_BEARER_GRANT]:
        return None, None, f"grant_type {form.get('grant_type')!r}"
    if len(form.get("assertion", [])) != 1 or set(form) != {"grant_type", "assertion"}:
        return None, None, f"form fields {sorted(form)}, want exactly grant_type and one assertion"
    parts = form["assertion"][0].split(".")
    if len(parts) != 3:
        return None, None, "assertion is not a JWS compact serialization"
    try:
        header, claims = _b64url_json(parts[0]), _b64url_json(parts[1])
        signature = base64.urlsafe_b64decode(parts[2] + "=" * (-len(parts[2]) % 4))
    except ValueError as e:
        return None, None, f"undecodable JWT: {e}"
    if header.get("alg") != "RS256" or header.get("typ") != "JWT":
        return header, claims, f"JWT header {header}"
    account = accounts.get(claims.get("iss"))
    if account is None:
        return header, claims, f"iss {claims.get('iss')!r} is no registered service account"
    if account.private_key_id is not None and header.get("kid") != account.private_key_id:
        return header, claims, f"kid {header.get('kid')!r}, want {account.private_key_id!r}"
    try:
        account.public_key.verify(
            signature, f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(), hashes.SHA256()
        )
    except InvalidSignature:
        return header, claims, "bad signature"
    if claims.get("scope") != CLOUD_PLATFORM_SCOPE:
        return header, claims, f"scope {claims.get('scope')!r}"
    if claims.get("aud") != token_uri:
        return header, claims, f"aud {claims.get('aud')!r}, want {token_uri!r}"
    iat, exp = claims.get("iat"), claims.get("exp")
    if type(iat) is not int or type(exp) is not int:
        return header, claims, f"iat {iat!r} / exp {exp!r} are not integers"
    if abs(iat - time.time()) > IAT_SKEW_SECS:
        return header, claims, f"iat {iat} is not now ({int(time.time())})"
    if exp != iat + 3600:
        return header, claims, f"exp - iat = {exp - iat}, want 3600"
    return header, claims, None


# --- The server -------------------------------------------------------------


class MockUpstream:
    """Serves ROUTES on 127.0.0.1 (ephemeral port) from a thread, recording every request.

    With `tls=(cert_file, key_file)` it serves HTTPS, for SDKs that insist on it.
    """

    def __init__(self, tls: tuple[Path, Path] | None = None):
        self._lock = threading.Lock()
        self._requests: list[Recorded] = []
        self._scripted: dict[str, Reply] = {}
        self._scripted_paths: dict[str, Reply] = {}
        # Google's token endpoint: accounts and the token counter survive reset(), so that no
        # two tokens of a module are equal; the rest is per test.
        self._accounts: dict[str, ServiceAccount] = {}
        self._tokens_issued = 0
        self._token_scripts: dict[str, TokenScript] = {}
        self._token_requests: list[TokenRequest] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="mock-upstream", daemon=True
        )
        host, port = self._server.server_address[:2]
        self.url = f"{'https' if tls else 'http'}://{host}:{port}"

    def start(self) -> MockUpstream:
        self._thread.start()
        return self

    def stop(self):
        self._server.shutdown()
        self._server.server_close()

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._requests)

    def secrets_seen(self) -> list[str | None]:
        return [r.secret for r in self.requests]

    def reset(self):
        """Forget every request and every scripted reply (service accounts stay registered)."""
        with self._lock:
            self._requests.clear()
            self._scripted.clear()
            self._scripted_paths.clear()
            self._token_requests.clear()
            self._token_scripts.clear()

    # --- Google's token endpoint ---

    def add_service_account(self, client_email: str, public_key: rsa.RSAPublicKey, private_key_id: str | None):
        """Accept JWTs from this account (iss), signed by the key of `public_key`, with this kid."""
        with self._lock:
            self._accounts[client_email] = ServiceAccount(client_email, public_key, private_key_id)

    def script_token(self, path: str, *, expires_in: int = 3600, status: int = 200, hold_first_secs: float = 0.0):
        """How the token path `path` (/token or /token/NAME) answers until the next reset()."""
        assert TOKEN_PATH.fullmatch(path), path
        with self._lock:
            self._token_scripts[path] = TokenScript(expires_in, status, hold_first_secs)

    @property
    def token_requests(self) -> list[TokenRequest]:
        with self._lock:
            return list(self._token_requests)

    def _token_answer(self, req: Recorded) -> Reply:
        received_at = time.monotonic()
        with self._lock:
            accounts = dict(self._accounts)
            script = self._token_scripts.setdefault(req.path, TokenScript())
            hold = script.hold_first_secs if script.answered == 0 else 0.0
            script.answered += 1
        header, claims, error = verify_jwt_grant(req, f"{self.url}{req.path}", accounts)
        if hold:
            time.sleep(hold)  # the endpoint's latency, scripted: the proxy's requests wait meanwhile
        token = None
        if req.method != "POST":
            status, reply = 405, Reply.json({"error": "invalid_request"}, 405)
        elif error is not None:
            status, reply = 400, Reply.json({"error": "invalid_grant", "error_description": error}, 400)
        elif script.status != 200:
            status, reply = script.status, Reply.json({"error": "internal_failure"}, script.status)
        else:
            with self._lock:
                self._tokens_issued += 1
                token = f"ya29.mock-{self._tokens_issued}"
            status = 200
            reply = Reply.json({"access_token": token, "expires_in": script.expires_in, "token_type": "Bearer"})
        with self._lock:
            self._token_requests.append(
                TokenRequest(req, header, claims, error, status, token, received_at, time.monotonic())
            )
        return reply

    def reply_for_secret(self, secret: str, status: int, body, headers: dict[str, str] | None = None):
        """Answer requests carrying `secret` with this status and body (dict: JSON) instead of the route."""
        if isinstance(body, (bytes, str)):
            raw = body.encode() if isinstance(body, str) else body
            reply = Reply(status, raw, headers or {})
        else:
            reply = Reply.json(body, status, headers)
        with self._lock:
            self._scripted[secret] = reply

    def reply_for_path(self, path: str, status: int, body, headers: dict[str, str] | None = None):
        """Answer requests to `path` with this status and body (dict: JSON) instead of the route, for
        credentials whose secret a test cannot know in advance (a minted token, a SigV4 signature)."""
        with self._lock:
            self._scripted_paths[path] = Reply.json(body, status, headers)

    def reject(self, provider: str, *secrets: str):
        """Answer these secrets as `provider` answers a key it does not accept."""
        status, body, headers = REJECTED_SECRET[provider]
        for secret in secrets:
            self.reply_for_secret(secret, status, body, headers)

    def _answer(self, req: Recorded) -> Answer:
        if TOKEN_PATH.fullmatch(req.path):
            return self._token_answer(req)
        with self._lock:
            self._requests.append(req)
            scripted = self._scripted.get(req.secret) if req.secret else None
            scripted = scripted or self._scripted_paths.get(req.path)
        return scripted or route(req)


def _handler_for(mock: MockUpstream) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive; every answer is framed

        def log_message(self, format, *args):  # quiet: pytest shows what failed
            pass

        def do_request(self):
            path, _, query = self.path.partition("?")
            headers: dict[str, str] = {}
            for name, value in self.headers.items():
                name = name.lower()
                headers[name] = f"{headers[name]}, {value}" if name in headers else value
            req = Recorded(self.command, path, query, headers, self._read_body(headers))
            self._send(mock._answer(req))

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_request

        def _read_body(self, headers: dict[str, str]) -> bytes:
            if "chunked" in headers.get("transfer-encoding", "").lower():
                parts = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        return b"".join(parts)
                    parts.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(headers.get("content-length", 0)))

        def _send(self, answer: Answer):
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            if isinstance(answer, Reply):
                self.send_header("content-length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)
            else:
                self.send_header("content-type", answer.content_type)
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                for chunk in answer.chunks:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    return Handler


def everything_sent(req: Recorded) -> Iterable[str]:
    """Every header value, the query and the body of a request, as text, for leak checks."""
    yield from req.headers.values()
    yield from req.headers.keys()
    yield req.path
    yield req.query
    yield req.body.decode("utf-8", "replace")
