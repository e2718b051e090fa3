"""OpenRouter's one endpoint on the proxy listener (SPEC §11), driven by the official SDKs:
`openai` with base_url http://ADDR/api/v1 (chat completions, embeddings, Responses, the model
list) and `anthropic` with base_url http://ADDR/api (messages, JSON and streamed).

Every provider has a mock upstream of its own (`mocks[provider]`), so that a test counts what
each one got. Two proxies run: `plain`, without a model catalog (a slug `{p}/{m}` goes to
provider p with model id m), and `gateway`, with the catalog below, where one Claude model has
three endpoints (Anthropic, Amazon Bedrock signed with SigV4 or a Bedrock API key, Google
Vertex with a service account whose token the Vertex mock mints) and fails over across them.

Each test has a tenant of its own (a gateway key, a workspace, its credentials in try order):
a credential that one test makes fail is quarantined or cooling down (SPEC §10), and must not
change another test's candidates.

What each upstream must get is spelled out byte for byte where SPEC §11 says "every other byte
as sent": the client's body (as its SDK serialised it) with only `model` replaced and
`models`/`provider`/`route` removed (checks.edit_members); for Bedrock and Vertex without
`model` (and Bedrock without `stream`), plus the members the proxy adds, checked one by one.
"""

from __future__ import annotations

import json
import tomllib
from urllib.parse import unquote

import anthropic
import boto3
import openai
import pytest
from botocore.config import Config
from cryptography.hazmat.primitives import serialization

import mock_upstream as up
from checks import (
    CLIENT_KEY_HEADERS,
    assert_gateway_key_never_sent,
    assert_refusal,
    assert_same_bytes,
    botocore_signature,
    edit_members,
)
from gateway import FIXTURES, CatalogModel, Credential, Tenant, render_config
from mock_upstream import MockUpstream

PROVIDERS = ("openai", "anthropic", "amazon-bedrock", "google-vertex", "azure", "google-ai-studio", "acme")
OPENROUTER_ONLY = ("models", "provider", "route")

# --- The catalog --------------------------------------------------------------------

SONNET = "anthropic/claude-sonnet-4"
SONNET_ID = {
    "anthropic": "claude-sonnet-4-20250514",
    "amazon-bedrock": "anthropic.claude-sonnet-4-20250514-v1:0",
    "google-vertex": "claude-sonnet-4@20250514",
}
HAIKU = "anthropic/claude-haiku-4-5"
OPUS = "anthropic/claude-opus-4"  # on Vertex only
OPUS_VERTEX_ID = "claude-opus-4@20250514"
GPT4O = "openai/gpt-4o"
GPT4O_ID = {"openai": "gpt-4o-2024-08-06", "azure": "gpt-4o"}
NOVA = "amazon/nova-pro"  # on Bedrock only: no OpenAI-format endpoint
GEMINI = "google/gemini-2.5-flash"

CATALOG = {
    SONNET: CatalogModel(
        [(p, SONNET_ID[p]) for p in ("anthropic", "amazon-bedrock", "google-vertex")], "Claude Sonnet 4"
    ),
    HAIKU: CatalogModel(
        [("anthropic", "claude-haiku-4-5-20251001"), ("amazon-bedrock", "anthropic.claude-haiku-4-5-20251001-v1:0")]
    ),
    OPUS: CatalogModel([("google-vertex", OPUS_VERTEX_ID)], "Claude Opus 4"),
    GPT4O: CatalogModel([("openai", GPT4O_ID["openai"]), ("azure", GPT4O_ID["azure"])], "GPT-4o"),
    NOVA: CatalogModel([("amazon-bedrock", "amazon.nova-pro-v1:0")]),
    GEMINI: CatalogModel([("google-ai-studio", "gemini-2.5-flash")]),
}

# OpenRouter's name of each provider, as a chat completion's top-level `provider` says it.
PROVIDER_NAME = {
    "openai": "OpenAI",
    "anthropic": "Anthropic",
    "amazon-bedrock": "Amazon Bedrock",
    "google-vertex": "Google",
    "google-ai-studio": "Google AI Studio",
    "azure": "Azure",
}

# --- Structured credentials (SPEC §9) -------------------------------------------------

AWS_KEY = {
    "accessKeyId": "AKIAIOSFODNN7ONEENDPT",
    "secretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYONEENDPOINTKEY",
    "region": "us-east-1",
}
PROJECT, REGION = "proj-one-endpoint", "us-east5"
CLIENT_EMAIL = "one-endpoint@proj-one-endpoint.iam.gserviceaccount.com"
KEY_ID = "kid-one"
PRIVATE_KEY_PEM = (FIXTURES / "vertex-test-key.pem").read_text()

ANTHROPIC_OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
ANTHROPIC_500 = {"type": "error", "error": {"type": "api_error", "message": "Internal server error"}}
BEDROCK_THROTTLED = {"message": "Too many requests, please wait before trying again."}
BEDROCK_500 = {"message": "The server encountered an internal error."}
OPENAI_500 = {"error": {"message": "The server had an error.", "type": "server_error", "param": None, "code": None}}


def anth(secret: str, **kw) -> Credential:
    return Credential(secret, provider="anthropic", **kw)


def absk(secret: str, **kw) -> Credential:
    """A Bedrock API key: sent as a bearer token."""
    return Credential(secret, provider="amazon-bedrock", **kw)


def aws(**kw) -> Credential:
    """AWS access keys: each attempt signed with SigV4."""
    return Credential(json.dumps(AWS_KEY), provider="amazon-bedrock", **kw)


def of(provider: str, secret: str, **kw) -> Credential:
    return Credential(secret, provider=provider, **kw)


# tenant -> its credentials in try order; `vertex` marks a service-account credential, made
# once the Vertex mock's URL is known (its token_uri is /token/{tenant}).
VERTEX = "vertex"
VERTEX_GLOBAL = "vertex without region"


def tenant_credentials() -> dict[str, list]:
    t = {}
    # The plain proxy (no catalog).
    t["plain"] = [of("openai", "sk-openai-plain-0001"), anth("sk-ant-plain-0001")]
    t["plain-openai-only"] = [of("openai", "sk-openai-plain-only-0002")]
    # The catalog: Claude on three hosts.
    for name in ("json", "stream"):
        t[name] = [anth(f"sk-ant-{name}-01"), aws(), VERTEX]
    t["to-bedrock"] = [anth("sk-ant-to-bedrock-01"), aws(), VERTEX]
    t["to-bedrock-stream"] = [anth("sk-ant-to-bedrock-stream-01"), aws(), VERTEX]
    t["beta-query"] = [anth("sk-ant-beta-query-01"), aws()]
    t["to-vertex"] = [anth("sk-ant-to-vertex-01"), absk("ABSK-to-vertex-0001"), VERTEX]
    t["to-vertex-stream"] = [anth("sk-ant-to-vertex-stream-01"), absk("ABSK-to-vertex-stream-01"), VERTEX_GLOBAL]
    # OpenRouter's `provider` object and `models` list.
    for name in ("order", "only", "ignore"):
        t[name] = [anth(f"sk-ant-{name}-01"), absk(f"ABSK-{name}-0001"), VERTEX]
    t["order-names"] = [anth("sk-ant-order-names-01"), absk("ABSK-order-names-0001"), VERTEX]
    t["no-fallbacks"] = [anth("sk-ant-no-fallbacks-01"), anth("sk-ant-no-fallbacks-02"), absk("ABSK-no-fallbacks-01")]
    t["no-fallbacks-fail"] = [anth("sk-ant-no-fallbacks-fail-01"), absk("ABSK-no-fallbacks-fail-01")]
    t["zdr"] = [anth("sk-ant-zdr-01", declared_zdr=False), absk("ABSK-zdr-0001", declared_zdr=True)]
    t["models-failover"] = [anth("sk-ant-models-failover-01"), VERTEX]
    t["models-skip"] = [anth("sk-ant-models-skip-01", allowed_models=[SONNET]), VERTEX]
    # Allowlists name the slug or the provider's model id.
    t["allow-slug"] = [anth("sk-ant-allow-slug-01", allowed_models=[SONNET])]
    t["allow-id"] = [
        anth("sk-ant-allow-id-01", allowed_models=[HAIKU]),
        absk("ABSK-allow-id-0001", allowed_models=[SONNET_ID["amazon-bedrock"]]),
    ]
    t["refused"] = [
        anth("sk-ant-refused-01", allowed_models=[GPT4O]),
        absk("ABSK-refused-0001", allowed_models=[GPT4O]),
    ]
    # The OpenAI-format routes.
    t["chat"] = [of("openai", "sk-openai-chat-0001")]
    t["chat-azure"] = [of("openai", "sk-openai-chat-azure-01"), of("azure", "azure-key-chat-azure-0001")]
    t["chat-claude"] = [anth("sk-ant-chat-claude-01"), absk("ABSK-chat-claude-0001"), VERTEX]
    t["chat-gemini"] = [of("google-ai-studio", "AIza-chat-gemini-000000001")]
    t["chat-acme"] = [of("acme", "acme-key-chat-acme-0001")]
    t["chat-nova"] = [absk("ABSK-chat-nova-00001")]
    t["lister"] = [anth("sk-ant-lister-01")]
    return t


def service_account(mocks, tenant: str, region: str | None) -> Credential:
    key = {
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": KEY_ID,
        "private_key": PRIVATE_KEY_PEM,
        "client_email": CLIENT_EMAIL,
        "client_id": "100000000000000000002",
        "token_uri": f"{mocks['google-vertex'].url}/token/{tenant}",
    }
    if region:
        key["region"] = region
    return Credential(json.dumps(key), provider="google-vertex")


# --- Fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mocks():
    started = {p: MockUpstream().start() for p in PROVIDERS}
    private_key = serialization.load_pem_private_key(PRIVATE_KEY_PEM.encode(), password=None)
    started["google-vertex"].add_service_account(CLIENT_EMAIL, private_key.public_key(), KEY_ID)
    yield started
    for m in started.values():
        m.stop()


@pytest.fixture(autouse=True)
def fresh_mocks(mocks):
    for m in mocks.values():
        m.reset()
    yield


def _tenants(mocks, names) -> list[Tenant]:
    made = []
    for name, creds in tenant_credentials().items():
        if name not in names:
            continue
        creds = [
            service_account(mocks, name, REGION if c == VERTEX else None) if isinstance(c, str) else c for c in creds
        ]
        made.append(Tenant(name, creds))
    return made


@pytest.fixture(scope="module")
def plain(start_proxy, mocks):
    """A proxy without a model catalog."""
    names = {"plain", "plain-openai-only"}
    urls = {p: m.url for p, m in mocks.items()}
    return start_proxy("openai", _tenants(mocks, names), upstream_urls=urls)


@pytest.fixture(scope="module")
def gateway(start_proxy, mocks):
    """A proxy with the catalog, and `acme`: a provider of its own that speaks OpenAI's format."""
    names = set(tenant_credentials()) - {"plain", "plain-openai-only"}
    urls = {p: m.url for p, m in mocks.items()}
    providers = {"acme": {"base_url": mocks["acme"].url, "auth": "bearer", "openai_compatible": True}}
    return start_proxy("anthropic", _tenants(mocks, names), upstream_urls=urls, models=CATALOG, providers=providers)


# --- Clients -------------------------------------------------------------------------------


class Sent:
    """What an SDK put on the wire, request by request (its retries included)."""

    def __init__(self):
        self.requests = []

    def hook(self, request):
        self.requests.append(request)


def oai(
    proxy, tenant: str | None = None, *, key: str | None = None, sdk_retries: bool = False, sent: Sent | None = None
):
    hooks = {"request": [sent.hook]} if sent else {}
    return openai.OpenAI(
        base_url=f"{proxy.url}/api/v1",
        api_key=key or proxy.key(tenant),
        timeout=10,
        http_client=openai.DefaultHttpxClient(event_hooks=hooks),
        **({} if sdk_retries else {"max_retries": 0}),
    )


def claude(
    proxy, tenant: str | None = None, *, key: str | None = None, sdk_retries: bool = False, sent: Sent | None = None
):
    hooks = {"request": [sent.hook]} if sent else {}
    return anthropic.Anthropic(
        base_url=f"{proxy.url}/api",
        api_key=key or proxy.key(tenant),
        timeout=10,
        http_client=anthropic.DefaultHttpxClient(event_hooks=hooks),
        **({} if sdk_retries else {"max_retries": 0}),
    )


MESSAGES = [{"role": "user", "content": "hi"}]


def create_message(client, model: str = SONNET, **options):
    """messages.create through with_raw_response: (parsed message, raw response)."""
    raw = client.messages.with_raw_response.create(model=model, max_tokens=64, messages=MESSAGES, **options)
    return raw.parse(), raw


def stream_message(client, model: str = SONNET, **options):
    """A streamed message: (events, raw response)."""
    raw = client.messages.with_raw_response.create(
        model=model, max_tokens=64, messages=MESSAGES, stream=True, **options
    )
    return list(raw.parse()), raw


def streamed_text(events) -> str:
    return "".join(e.delta.text for e in events if e.type == "content_block_delta")


def assert_streamed_message(events):
    """The Anthropic SDK parsed Anthropic's whole event sequence, text and usage."""
    assert [e.type for e in events if e.type != "ping"] == (
        ["message_start", "content_block_start"]
        + ["content_block_delta"] * len(up.STREAM_PIECES)
        + ["content_block_stop", "message_delta", "message_stop"]
    )
    assert streamed_text(events) == up.STREAM_TEXT
    assert events[0].message.usage.input_tokens == up.INPUT_TOKENS
    delta = next(e for e in events if e.type == "message_delta")
    assert delta.usage.output_tokens == up.OUTPUT_TOKENS
    assert delta.delta.stop_reason == "end_turn"


def chat(client, model: str, **options):
    raw = client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES, **options)
    return raw.parse(), raw


# --- What the upstreams got ------------------------------------------------------------------


def hits(mocks) -> dict[str, int]:
    return {p: len(m.requests) for p, m in mocks.items() if m.requests}


def assert_hits(mocks, **expected: int):
    """Upstream requests per provider (dashes as underscores); every other mock got none."""
    want = {p.replace("_", "-"): n for p, n in expected.items() if n}
    assert hits(mocks) == want, f"upstream hits {hits(mocks)}, expected {want}"


def assert_auth(request: up.Recorded, header: str, want: str, gateway_key: str):
    """The request carries `want` in `header` and no other client key header, nor the gateway key."""
    assert request.headers.get(header) == want, f"{header}: {request.headers.get(header)!r}, want {want!r}"
    others = {h: request.headers[h] for h in CLIENT_KEY_HEADERS if h != header and h in request.headers}
    assert not others, f"key headers besides {header}: {others}"
    leaked = [text for text in up.everything_sent(request) if gateway_key in text]
    assert not leaked, f"the gateway key reached {request.path}: {leaked}"


def assert_forwarded(request: up.Recorded, client_body: bytes, model_id: str):
    """OpenAI's and Anthropic's own format: the client's bytes, only `model` replaced and
    OpenRouter's fields removed."""
    want = edit_members(client_body, set={"model": model_id}, drop=OPENROUTER_ONLY)
    assert_same_bytes(request.body, want, f"the body {request.path} got")


def assert_bedrock_body(request: up.Recorded, client_body: bytes, betas: list[str] | None = None):
    """Bedrock's InvokeModel: the client's bytes without `model` and `stream` (and OpenRouter's
    fields), plus "anthropic_version": "bedrock-2023-05-31" and the anthropic-beta header's list."""
    body = request.json()
    assert body.get("anthropic_version") == up.BEDROCK_ANTHROPIC_VERSION, body
    if betas is None:
        assert "anthropic_beta" not in body, body
    else:
        assert body.get("anthropic_beta") == betas, body
    assert "model" not in body and "stream" not in body, body
    got = edit_members(request.body, drop=("anthropic_version", "anthropic_beta"))
    want = edit_members(client_body, drop=("model", "stream", *OPENROUTER_ONLY))
    assert_same_bytes(got, want, "Bedrock's body, less anthropic_version/anthropic_beta")


def assert_vertex_body(request: up.Recorded, client_body: bytes):
    """Vertex's rawPredict: the client's bytes without `model` (`stream` kept), plus
    "anthropic_version": "vertex-2023-10-16"."""
    body = request.json()
    assert body.get("anthropic_version") == "vertex-2023-10-16", body
    assert "model" not in body, body
    got = edit_members(request.body, drop=("anthropic_version",))
    want = edit_members(client_body, drop=("model", *OPENROUTER_ONLY))
    assert_same_bytes(got, want, "Vertex's body, less anthropic_version")


def bedrock_path(model_id: str, streamed: bool) -> str:
    encoded = model_id.replace(":", "%3A")
    return f"/model/{encoded}/{'invoke-with-response-stream' if streamed else 'invoke'}"


def vertex_path(model_id: str, streamed: bool, region: str = REGION) -> str:
    method = "streamRawPredict" if streamed else "rawPredict"
    return f"/v1/projects/{PROJECT}/locations/{region}/publishers/anthropic/models/{model_id}:{method}"


def minted(mocks, tenant: str) -> list[str]:
    """The tokens the Vertex mock issued for this tenant's service account; every grant verified."""
    grants = [t for t in mocks["google-vertex"].token_requests if t.path == f"/token/{tenant}"]
    assert not [t.error for t in grants if t.error], f"the mock refused the proxy's JWT grant: {grants}"
    return [t.access_token for t in grants if t.access_token]


def assert_byok_headers(headers, proxy, tenant: str, *, provider: str, model_id: str, credential: int, attempts: int):
    """x-byok-*: the endpoint that answered, the credential (its index in the tenant's list)."""
    got = {
        h: headers.get(h)
        for h in ("x-byok-provider", "x-byok-model", "x-byok-credential-id", "x-byok-attempts", "x-byok-tier")
    }
    assert got == {
        "x-byok-provider": provider,
        "x-byok-model": model_id,
        "x-byok-credential-id": proxy.tenants[tenant].credentials[credential].id,
        "x-byok-attempts": str(attempts),
        "x-byok-tier": "byok",
    }


def sdk_body(raw) -> bytes:
    """The request body the SDK sent (as it sent it)."""
    return raw.http_request.content


# --- The harness itself ----------------------------------------------------------------------


def test_the_mock_bedrock_invoke_stream_decodes_with_botocore(mocks):
    """The mock's InvokeModelWithResponseStream, read by boto3 itself (CRCs included), no proxy."""
    client = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=mocks["amazon-bedrock"].url,
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret",
        config=Config(retries={"max_attempts": 1}),
    )
    body = json.dumps({"anthropic_version": up.BEDROCK_ANTHROPIC_VERSION, "max_tokens": 8, "messages": MESSAGES})
    result = client.invoke_model_with_response_stream(modelId=SONNET_ID["amazon-bedrock"], body=body)
    events = [json.loads(e["chunk"]["bytes"]) for e in result["body"]]

    assert [e["type"] for e in events] == (
        ["message_start", "content_block_start"]
        + ["content_block_delta"] * len(up.STREAM_PIECES)
        + ["content_block_stop", "message_delta", "message_stop"]
    )
    message = json.loads(client.invoke_model(modelId=SONNET_ID["amazon-bedrock"], body=body)["body"].read())
    assert message["content"] == [{"type": "text", "text": up.TEXT}]
    assert [r.path for r in mocks["amazon-bedrock"].requests] == [
        bedrock_path(SONNET_ID["amazon-bedrock"], True),
        bedrock_path(SONNET_ID["amazon-bedrock"], False),
    ]


def test_the_catalog_renders_as_the_spec_writes_it(tmp_path):
    """The [models] tables parse as TOML into the shape SPEC §11 shows."""
    text = render_config(
        "anthropic",
        [],
        "http://127.0.0.1:9",
        tls=False,
        models=CATALOG,
        providers={"acme": {"base_url": "http://127.0.0.1:9", "openai_compatible": True}},
    )
    parsed = tomllib.loads(text)
    assert parsed["models"][SONNET] == {
        "name": "Claude Sonnet 4",
        "endpoints": [{"provider": p, "model": SONNET_ID[p]} for p in ("anthropic", "amazon-bedrock", "google-vertex")],
    }
    assert parsed["providers"]["acme"]["openai_compatible"] is True


# --- OpenAI's format, no catalog: {p}/{m} is provider p's model m ---------------------------------


def test_chat_completion(plain, mocks):
    completion, raw = chat(
        oai(plain, "plain"), "openai/gpt-4o-mini", temperature=0.25, extra_body={"provider": {"order": ["openai"]}}
    )

    assert completion.choices[0].message.content == up.TEXT
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (up.INPUT_TOKENS, up.OUTPUT_TOKENS)
    body = json.loads(raw.content)
    assert body["model"] == "openai/gpt-4o-mini"  # the slug asked for
    assert body["provider"] == "OpenAI"
    assert_byok_headers(
        raw.headers, plain, "plain", provider="openai", model_id="gpt-4o-mini", credential=0, attempts=1
    )
    assert_hits(mocks, openai=1)
    (request,) = mocks["openai"].requests
    assert (request.method, request.path, request.query) == ("POST", "/v1/chat/completions", "")
    assert_auth(request, "authorization", "Bearer sk-openai-plain-0001", plain.key("plain"))
    assert_forwarded(request, sdk_body(raw), "gpt-4o-mini")


def test_chat_completion_stream(plain, mocks):
    stream, raw = chat(oai(plain, "plain"), "openai/gpt-4o-mini", stream=True, stream_options={"include_usage": True})
    chunks = list(stream)

    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == up.STREAM_TEXT
    assert chunks[-1].usage.prompt_tokens == up.INPUT_TOKENS
    assert all(c.model == "gpt-4o-mini" for c in chunks)  # streamed events as the provider sent them
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert_byok_headers(
        raw.headers, plain, "plain", provider="openai", model_id="gpt-4o-mini", credential=0, attempts=1
    )
    assert_hits(mocks, openai=1)
    (request,) = mocks["openai"].requests
    assert request.path == "/v1/chat/completions"
    assert_forwarded(request, sdk_body(raw), "gpt-4o-mini")


def test_a_bare_model_is_openais_on_the_openai_routes(plain, mocks):
    completion, raw = chat(oai(plain, "plain"), "gpt-4o-mini")

    assert completion.choices[0].message.content == up.TEXT
    assert completion.model in ("gpt-4o-mini", "openai/gpt-4o-mini")
    assert raw.headers.get("x-byok-provider") == "openai"
    assert_hits(mocks, openai=1)
    assert_forwarded(mocks["openai"].requests[0], sdk_body(raw), "gpt-4o-mini")


def test_embeddings(plain, mocks):
    raw = oai(plain, "plain").embeddings.with_raw_response.create(
        model="openai/text-embedding-3-small", input="hello", encoding_format="float"
    )
    result = raw.parse()

    assert result.data[0].embedding == up.EMBEDDING
    assert result.model == "openai/text-embedding-3-small"
    assert raw.headers.get("x-byok-model") == "text-embedding-3-small"
    assert_hits(mocks, openai=1)
    (request,) = mocks["openai"].requests
    assert request.path == "/v1/embeddings"
    assert_auth(request, "authorization", "Bearer sk-openai-plain-0001", plain.key("plain"))
    assert_forwarded(request, sdk_body(raw), "text-embedding-3-small")


def test_responses(plain, mocks):
    raw = oai(plain, "plain").responses.with_raw_response.create(model="openai/gpt-4o-mini", input="hi")
    response = raw.parse()

    assert response.output_text == up.TEXT
    assert response.model == "openai/gpt-4o-mini"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (up.INPUT_TOKENS, up.OUTPUT_TOKENS)
    assert raw.headers.get("x-byok-provider") == "openai"
    assert_hits(mocks, openai=1)
    (request,) = mocks["openai"].requests
    assert request.path == "/v1/responses"
    assert_forwarded(request, sdk_body(raw), "gpt-4o-mini")


def test_a_bare_model_is_anthropics_on_messages(plain, mocks):
    message, raw = create_message(claude(plain, "plain"), model="claude-3-5-haiku-latest")

    assert [block.text for block in message.content] == [up.TEXT]
    assert raw.headers.get("x-byok-provider") == "anthropic"
    assert raw.headers.get("x-byok-model") == "claude-3-5-haiku-latest"
    assert_hits(mocks, anthropic=1)
    (request,) = mocks["anthropic"].requests
    assert request.path == "/v1/messages"
    assert_auth(request, "x-api-key", "sk-ant-plain-0001", plain.key("plain"))
    assert_forwarded(request, sdk_body(raw), "claude-3-5-haiku-latest")


# --- Anthropic's format: one Claude model on three hosts -------------------------------------------


def test_message_on_the_first_endpoint(gateway, mocks):
    message, raw = create_message(claude(gateway, "json"))

    assert [block.text for block in message.content] == [up.TEXT]
    assert message.model == SONNET
    assert (message.usage.input_tokens, message.usage.output_tokens) == (up.INPUT_TOKENS, up.OUTPUT_TOKENS)
    assert_byok_headers(
        raw.headers, gateway, "json", provider="anthropic", model_id=SONNET_ID["anthropic"], credential=0, attempts=1
    )
    assert_hits(mocks, anthropic=1)
    (request,) = mocks["anthropic"].requests
    assert request.path == "/v1/messages"
    assert request.headers.get("anthropic-version")
    assert_auth(request, "x-api-key", "sk-ant-json-01", gateway.key("json"))
    assert_forwarded(request, sdk_body(raw), SONNET_ID["anthropic"])
    assert mocks["google-vertex"].token_requests == []  # no token minted for an endpoint not tried


def test_message_stream_on_the_first_endpoint(gateway, mocks):
    events, raw = stream_message(claude(gateway, "stream"))

    assert_streamed_message(events)
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert_byok_headers(
        raw.headers, gateway, "stream", provider="anthropic", model_id=SONNET_ID["anthropic"], credential=0, attempts=1
    )
    assert_hits(mocks, anthropic=1)
    (request,) = mocks["anthropic"].requests
    assert_auth(request, "x-api-key", "sk-ant-stream-01", gateway.key("stream"))
    assert_forwarded(request, sdk_body(raw), SONNET_ID["anthropic"])


def test_anthropic_overloaded_fails_over_to_bedrock_signed_with_sigv4(gateway, mocks):
    mocks["anthropic"].reply_for_secret("sk-ant-to-bedrock-01", 529, ANTHROPIC_OVERLOADED)
    betas = ["context-1m-2025-08-07", "token-efficient-tools-2025-02-19"]

    message, raw = create_message(
        claude(gateway, "to-bedrock"), extra_headers={"anthropic-beta": ",".join(betas)}, system="Be brief."
    )

    assert [block.text for block in message.content] == [up.TEXT]
    assert message.model == SONNET
    assert (message.usage.input_tokens, message.usage.output_tokens) == (up.INPUT_TOKENS, up.OUTPUT_TOKENS)
    assert_byok_headers(
        raw.headers,
        gateway,
        "to-bedrock",
        provider="amazon-bedrock",
        model_id=SONNET_ID["amazon-bedrock"],
        credential=1,
        attempts=2,
    )
    assert_hits(mocks, anthropic=1, amazon_bedrock=1)
    (first,) = mocks["anthropic"].requests
    assert_forwarded(first, sdk_body(raw), SONNET_ID["anthropic"])
    (request,) = mocks["amazon-bedrock"].requests
    assert (request.method, request.path, request.query) == (
        "POST",
        bedrock_path(SONNET_ID["amazon-bedrock"], False),
        "",
    )
    auth = request.headers["authorization"]
    assert auth.startswith(f"AWS4-HMAC-SHA256 Credential={AWS_KEY['accessKeyId']}/")
    assert f"/{AWS_KEY['region']}/bedrock/aws4_request" in auth
    assert auth == botocore_signature(request, AWS_KEY)
    assert_bedrock_body(request, sdk_body(raw), betas)
    sent = " ".join(up.everything_sent(request))
    for secret in (AWS_KEY["secretAccessKey"], gateway.key("to-bedrock"), "sk-ant-to-bedrock-01"):
        assert secret not in sent


def test_a_streamed_message_fails_over_to_bedrocks_event_stream_as_sse(gateway, mocks):
    mocks["anthropic"].reply_for_secret("sk-ant-to-bedrock-stream-01", 500, ANTHROPIC_500)

    events, raw = stream_message(claude(gateway, "to-bedrock-stream"))

    assert_streamed_message(events)
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert_byok_headers(
        raw.headers,
        gateway,
        "to-bedrock-stream",
        provider="amazon-bedrock",
        model_id=SONNET_ID["amazon-bedrock"],
        credential=1,
        attempts=2,
    )
    assert_hits(mocks, anthropic=1, amazon_bedrock=1)
    (request,) = mocks["amazon-bedrock"].requests
    assert request.path == bedrock_path(SONNET_ID["amazon-bedrock"], True)
    assert request.headers["authorization"] == botocore_signature(request, AWS_KEY)
    assert_bedrock_body(request, sdk_body(raw))


def test_claude_codes_beta_query_is_taken_and_not_sent_to_bedrock(gateway, mocks):
    """Claude Code posts /v1/messages?beta=true (its SDK's beta client): the route takes the
    query; Bedrock's invoke URL gets none of it (Anthropic's may)."""
    mocks["anthropic"].reply_for_secret("sk-ant-beta-query-01", 529, ANTHROPIC_OVERLOADED)

    events, raw = stream_message(claude(gateway, "beta-query"), extra_query={"beta": "true"})

    assert_streamed_message(events)
    assert raw.headers.get("x-byok-provider") == "amazon-bedrock"
    assert mocks["anthropic"].requests[0].path == "/v1/messages"
    (request,) = mocks["amazon-bedrock"].requests
    assert (request.path, request.query) == (bedrock_path(SONNET_ID["amazon-bedrock"], True), "")
    assert request.headers["authorization"] == botocore_signature(request, AWS_KEY)


def test_anthropic_rejected_and_bedrock_throttled_fail_over_to_vertex(gateway, mocks):
    mocks["anthropic"].reject("anthropic", "sk-ant-to-vertex-01")
    mocks["amazon-bedrock"].reply_for_secret("ABSK-to-vertex-0001", 429, BEDROCK_THROTTLED)

    message, raw = create_message(claude(gateway, "to-vertex"))

    assert [block.text for block in message.content] == [up.TEXT]
    assert message.model == SONNET
    assert_byok_headers(
        raw.headers,
        gateway,
        "to-vertex",
        provider="google-vertex",
        model_id=SONNET_ID["google-vertex"],
        credential=2,
        attempts=3,
    )
    assert_hits(mocks, anthropic=1, amazon_bedrock=1, google_vertex=1)
    (bedrock,) = mocks["amazon-bedrock"].requests
    assert_auth(bedrock, "authorization", "Bearer ABSK-to-vertex-0001", gateway.key("to-vertex"))
    assert bedrock.path == bedrock_path(SONNET_ID["amazon-bedrock"], False)
    (request,) = mocks["google-vertex"].requests
    assert unquote(request.path) == vertex_path(SONNET_ID["google-vertex"], False)
    (token,) = minted(mocks, "to-vertex")
    assert_auth(request, "authorization", f"Bearer {token}", gateway.key("to-vertex"))
    assert_vertex_body(request, sdk_body(raw))


def test_a_streamed_message_fails_over_to_vertex_stream_raw_predict_in_the_global_region(gateway, mocks):
    mocks["anthropic"].reply_for_secret("sk-ant-to-vertex-stream-01", 503, ANTHROPIC_500)
    mocks["amazon-bedrock"].reply_for_secret("ABSK-to-vertex-stream-01", 500, BEDROCK_500)

    events, raw = stream_message(claude(gateway, "to-vertex-stream"))

    assert_streamed_message(events)
    assert_byok_headers(
        raw.headers,
        gateway,
        "to-vertex-stream",
        provider="google-vertex",
        model_id=SONNET_ID["google-vertex"],
        credential=2,
        attempts=3,
    )
    assert_hits(mocks, anthropic=1, amazon_bedrock=1, google_vertex=1)
    assert mocks["amazon-bedrock"].requests[0].path == bedrock_path(SONNET_ID["amazon-bedrock"], True)
    (request,) = mocks["google-vertex"].requests
    assert unquote(request.path) == vertex_path(SONNET_ID["google-vertex"], True, region="global")
    assert_auth(
        request, "authorization", f"Bearer {minted(mocks, 'to-vertex-stream')[0]}", gateway.key("to-vertex-stream")
    )
    assert request.json()["stream"] is True  # Vertex keeps it
    assert_vertex_body(request, sdk_body(raw))


# --- OpenRouter's `provider` object ----------------------------------------------------------------


def test_provider_order_puts_those_endpoints_first(gateway, mocks):
    mocks["google-vertex"].reply_for_path(vertex_path(SONNET_ID["google-vertex"], False), 500, ANTHROPIC_500)
    provider = {"order": ["google-vertex", "amazon-bedrock"]}

    message, raw = create_message(claude(gateway, "order"), extra_body={"provider": provider})

    assert [block.text for block in message.content] == [up.TEXT]
    assert_byok_headers(
        raw.headers,
        gateway,
        "order",
        provider="amazon-bedrock",
        model_id=SONNET_ID["amazon-bedrock"],
        credential=1,
        attempts=2,
    )
    assert_hits(mocks, google_vertex=1, amazon_bedrock=1)
    (request,) = mocks["amazon-bedrock"].requests
    assert_auth(request, "authorization", "Bearer ABSK-order-0001", gateway.key("order"))
    assert_bedrock_body(request, sdk_body(raw))  # `provider` removed
    assert_vertex_body(mocks["google-vertex"].requests[0], sdk_body(raw))


def test_provider_order_by_openrouters_provider_names(gateway, mocks):
    """@openrouter/sdk types `provider.order` as OpenRouter's provider names ("Amazon Bedrock",
    "Google", …) or strings; OpenRouter takes its names and its slugs alike."""
    message, raw = create_message(
        claude(gateway, "order-names"), extra_body={"provider": {"order": ["Amazon Bedrock"]}}
    )

    assert [block.text for block in message.content] == [up.TEXT]
    assert raw.headers.get("x-byok-provider") == "amazon-bedrock"
    assert_hits(mocks, amazon_bedrock=1)


def test_provider_only(gateway, mocks):
    """Only Bedrock's endpoint: its 500 is the answer (the last upstream response as it came)."""
    mocks["amazon-bedrock"].reply_for_secret("ABSK-only-0001", 500, BEDROCK_500)

    with pytest.raises(anthropic.InternalServerError) as caught:
        create_message(claude(gateway, "only"), extra_body={"provider": {"only": ["amazon-bedrock"]}})

    assert caught.value.status_code == 500
    assert caught.value.response.headers.get("x-byok-provider") == "amazon-bedrock"
    assert_hits(mocks, amazon_bedrock=1)


def test_provider_ignore(gateway, mocks):
    message, raw = create_message(claude(gateway, "ignore"), extra_body={"provider": {"ignore": ["anthropic"]}})

    assert [block.text for block in message.content] == [up.TEXT]
    assert_byok_headers(
        raw.headers,
        gateway,
        "ignore",
        provider="amazon-bedrock",
        model_id=SONNET_ID["amazon-bedrock"],
        credential=1,
        attempts=1,
    )
    assert_hits(mocks, amazon_bedrock=1)


def test_allow_fallbacks_false_keeps_to_the_first_endpoints_provider_and_its_credentials(gateway, mocks):
    mocks["anthropic"].reply_for_secret("sk-ant-no-fallbacks-01", 529, ANTHROPIC_OVERLOADED)

    message, raw = create_message(claude(gateway, "no-fallbacks"), extra_body={"provider": {"allow_fallbacks": False}})

    assert [block.text for block in message.content] == [up.TEXT]
    assert_byok_headers(
        raw.headers,
        gateway,
        "no-fallbacks",
        provider="anthropic",
        model_id=SONNET_ID["anthropic"],
        credential=1,
        attempts=2,
    )
    assert [r.secret for r in mocks["anthropic"].requests] == ["sk-ant-no-fallbacks-01", "sk-ant-no-fallbacks-02"]
    assert_hits(mocks, anthropic=2)


def test_allow_fallbacks_false_returns_the_first_providers_failure(gateway, mocks):
    mocks["anthropic"].reply_for_secret("sk-ant-no-fallbacks-fail-01", 529, ANTHROPIC_OVERLOADED)

    with pytest.raises(anthropic.APIStatusError) as caught:
        create_message(claude(gateway, "no-fallbacks-fail"), extra_body={"provider": {"allow_fallbacks": False}})

    assert caught.value.status_code == 529
    assert caught.value.response.json() == ANTHROPIC_OVERLOADED
    assert_hits(mocks, anthropic=1)


def test_provider_zdr_uses_only_zero_retention_credentials(gateway, mocks):
    message, raw = create_message(claude(gateway, "zdr"), extra_body={"provider": {"zdr": True}})

    assert [block.text for block in message.content] == [up.TEXT]
    assert_byok_headers(
        raw.headers,
        gateway,
        "zdr",
        provider="amazon-bedrock",
        model_id=SONNET_ID["amazon-bedrock"],
        credential=1,
        attempts=1,
    )
    assert_hits(mocks, amazon_bedrock=1)


# --- OpenRouter's `models` list ------------------------------------------------------------------


def test_the_models_list_is_tried_after_the_models_endpoints(gateway, mocks):
    mocks["google-vertex"].reply_for_path(vertex_path(OPUS_VERTEX_ID, False), 503, ANTHROPIC_500)

    message, raw = create_message(claude(gateway, "models-failover"), model=OPUS, extra_body={"models": [SONNET]})

    assert [block.text for block in message.content] == [up.TEXT]
    assert message.model == SONNET  # the model that served, as OpenRouter says it
    assert_byok_headers(
        raw.headers,
        gateway,
        "models-failover",
        provider="anthropic",
        model_id=SONNET_ID["anthropic"],
        credential=0,
        attempts=2,
    )
    assert_hits(mocks, google_vertex=1, anthropic=1)
    assert unquote(mocks["google-vertex"].requests[0].path) == vertex_path(OPUS_VERTEX_ID, False)
    assert_vertex_body(mocks["google-vertex"].requests[0], sdk_body(raw))
    assert_forwarded(mocks["anthropic"].requests[0], sdk_body(raw), SONNET_ID["anthropic"])  # no `models`


def test_a_model_of_the_list_that_no_credential_admits_is_skipped(gateway, mocks):
    message, raw = create_message(claude(gateway, "models-skip"), model=HAIKU, extra_body={"models": [OPUS, SONNET]})

    assert [block.text for block in message.content] == [up.TEXT]
    # HAIKU: the anthropic credential admits only SONNET, no Bedrock credential; OPUS: Vertex's
    # credential admits it, and answers.
    assert raw.headers.get("x-byok-provider") == "google-vertex"
    assert raw.headers.get("x-byok-model") == OPUS_VERTEX_ID
    assert_hits(mocks, google_vertex=1)


# --- Allowlists see the slug and the provider's model id -------------------------------------------


def test_an_allowlist_naming_the_slug_admits_the_model(gateway, mocks):
    message, raw = create_message(claude(gateway, "allow-slug"))

    assert [block.text for block in message.content] == [up.TEXT]
    assert raw.headers.get("x-byok-credential-id") == gateway.tenants["allow-slug"].credentials[0].id
    assert_hits(mocks, anthropic=1)


def test_an_allowlist_naming_the_providers_id_admits_that_endpoint(gateway, mocks):
    message, raw = create_message(claude(gateway, "allow-id"))

    assert [block.text for block in message.content] == [up.TEXT]
    assert_byok_headers(
        raw.headers,
        gateway,
        "allow-id",
        provider="amazon-bedrock",
        model_id=SONNET_ID["amazon-bedrock"],
        credential=1,
        attempts=1,
    )
    assert_hits(mocks, amazon_bedrock=1)  # the anthropic credential (HAIKU only) was never tried


def test_nothing_admitted_is_403_with_nothing_upstream(gateway, mocks):
    sent = Sent()
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        create_message(claude(gateway, "refused", sdk_retries=True, sent=sent))

    body = caught.value.response.json()
    message = assert_refusal(body, 403, "no_eligible_credential")
    assert "allowed_models" in message
    assert body["type"] == "error" and body["error"]["type"] == "permission_error"
    assert caught.value.response.headers.get("x-should-retry") == "false"
    assert len(sent.requests) == 1
    assert_hits(mocks)
    assert mocks["google-vertex"].token_requests == []


def test_no_credential_for_the_provider_is_403(plain, mocks):
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        create_message(claude(plain, "plain-openai-only"), model="anthropic/claude-3-5-haiku-latest")

    assert_refusal(caught.value.response.json(), 403, "no_credential")
    assert_hits(mocks)


# --- OpenAI's format to other providers --------------------------------------------------------------


def test_chat_with_a_catalog_slug(gateway, mocks):
    completion, raw = chat(oai(gateway, "chat"), GPT4O)

    assert completion.choices[0].message.content == up.TEXT
    body = json.loads(raw.content)
    assert (body["model"], body["provider"]) == (GPT4O, "OpenAI")
    assert_byok_headers(
        raw.headers, gateway, "chat", provider="openai", model_id=GPT4O_ID["openai"], credential=0, attempts=1
    )
    assert_hits(mocks, openai=1)
    assert_forwarded(mocks["openai"].requests[0], sdk_body(raw), GPT4O_ID["openai"])


def test_chat_fails_over_from_openai_to_azure(gateway, mocks):
    mocks["openai"].reply_for_secret("sk-openai-chat-azure-01", 500, OPENAI_500)

    completion, raw = chat(oai(gateway, "chat-azure"), GPT4O)

    assert completion.choices[0].message.content == up.TEXT
    body = json.loads(raw.content)
    assert (body["model"], body["provider"]) == (GPT4O, "Azure")
    assert_byok_headers(
        raw.headers, gateway, "chat-azure", provider="azure", model_id=GPT4O_ID["azure"], credential=1, attempts=2
    )
    assert_hits(mocks, openai=1, azure=1)
    (request,) = mocks["azure"].requests
    assert (request.path, request.query) == ("/openai/deployments/gpt-4o/chat/completions", "api-version=2024-10-21")
    assert_auth(request, "api-key", "azure-key-chat-azure-0001", gateway.key("chat-azure"))
    assert_forwarded(request, sdk_body(raw), GPT4O_ID["azure"])


def test_chat_with_a_claude_slug_goes_to_anthropics_openai_compatible_endpoint(gateway, mocks):
    completion, raw = chat(oai(gateway, "chat-claude"), SONNET)

    assert completion.choices[0].message.content == up.TEXT
    body = json.loads(raw.content)
    assert (body["model"], body["provider"]) == (SONNET, "Anthropic")
    assert_byok_headers(
        raw.headers,
        gateway,
        "chat-claude",
        provider="anthropic",
        model_id=SONNET_ID["anthropic"],
        credential=0,
        attempts=1,
    )
    assert_hits(mocks, anthropic=1)
    (request,) = mocks["anthropic"].requests
    assert request.path == "/v1/chat/completions"
    assert_auth(request, "x-api-key", "sk-ant-chat-claude-01", gateway.key("chat-claude"))
    assert_forwarded(request, sdk_body(raw), SONNET_ID["anthropic"])


def test_chat_to_google_ai_studio(gateway, mocks):
    completion, raw = chat(oai(gateway, "chat-gemini"), GEMINI)

    assert completion.choices[0].message.content == up.TEXT
    body = json.loads(raw.content)
    assert (body["model"], body["provider"]) == (GEMINI, "Google AI Studio")
    assert_hits(mocks, google_ai_studio=1)
    (request,) = mocks["google-ai-studio"].requests
    assert request.path == "/v1beta/openai/chat/completions"
    assert request.secret == "AIza-chat-gemini-000000001"
    assert_gateway_key_never_sent(mocks["google-ai-studio"], gateway.key("chat-gemini"))
    assert_forwarded(request, sdk_body(raw), "gemini-2.5-flash")


def test_chat_to_a_provider_declared_openai_compatible(gateway, mocks):
    completion, raw = chat(oai(gateway, "chat-acme"), "acme/llama-3.3-70b")

    assert completion.choices[0].message.content == up.TEXT
    assert json.loads(raw.content)["model"] == "acme/llama-3.3-70b"
    assert raw.headers.get("x-byok-provider") == "acme"
    assert_hits(mocks, acme=1)
    (request,) = mocks["acme"].requests
    assert request.path == "/v1/chat/completions"
    assert_auth(request, "authorization", "Bearer acme-key-chat-acme-0001", gateway.key("chat-acme"))
    assert_forwarded(request, sdk_body(raw), "llama-3.3-70b")


def test_a_model_without_an_endpoint_of_the_routes_format_is_400(gateway, mocks):
    with pytest.raises(openai.BadRequestError) as caught:
        chat(oai(gateway, "chat-nova", sdk_retries=True), NOVA)

    assert_openai_refusal(caught.value, 400, "no_compatible_endpoint", "invalid_request_error")
    assert_hits(mocks)


# --- GET /api/v1/models: a list every SDK parses ------------------------------------------------------


def test_the_model_list_through_the_openai_and_anthropic_sdks(gateway, mocks):
    listed = [m.id for m in oai(gateway, "lister").models.list()]
    also = [m.id for m in claude(gateway, "lister").models.list()]

    # The catalog's models that this key's credentials (Anthropic's only) can serve.
    assert {SONNET, HAIKU} <= set(listed), listed
    assert NOVA not in listed and GPT4O not in listed and OPUS not in listed, listed
    assert set(also) == set(listed)
    raw = oai(gateway, "lister").models.with_raw_response.list()
    (sonnet,) = [m for m in json.loads(raw.content)["data"] if m["id"] == SONNET]
    assert sonnet["name"] == "Claude Sonnet 4"
    assert sonnet["canonical_slug"] and isinstance(sonnet["created"], int)
    assert "context_length" in sonnet and isinstance(sonnet["architecture"], dict)
    assert_hits(mocks)


# --- The proxy's own refusals: OpenRouter's error, each SDK's fields, never retried ------------------


def assert_openai_refusal(e: openai.APIStatusError, status: int, reason: str, error_type: str) -> str:
    body = e.response.json()
    message = assert_refusal(body, status, reason)
    assert e.status_code == status
    assert body["error"]["type"] == error_type == e.type
    assert "param" in body["error"]
    assert e.response.headers.get("x-should-retry") == "false"
    return message


def assert_anthropic_refusal(e: anthropic.APIStatusError, status: int, reason: str, error_type: str) -> str:
    body = e.response.json()
    message = assert_refusal(body, status, reason)
    assert e.status_code == status
    assert body["type"] == "error" and body["error"]["type"] == error_type
    assert e.response.headers.get("x-should-retry") == "false"
    return message


BAD_BODIES = {
    "models over 10": ({"models": [f"openai/gpt-4o-mini-{i}" for i in range(11)]}, "models"),
    "models not strings": ({"models": ["openai/gpt-4o-mini", 7]}, "models"),
    "provider not an object": ({"provider": ["openai"]}, "provider"),
    "provider.order not strings": ({"provider": {"order": "openai"}}, "order"),
}


@pytest.mark.parametrize("what", list(BAD_BODIES))
def test_a_malformed_openrouter_field_is_400_on_chat(plain, mocks, what):
    extra, field = BAD_BODIES[what]
    sent = Sent()
    with pytest.raises(openai.BadRequestError) as caught:
        chat(oai(plain, "plain", sdk_retries=True, sent=sent), "openai/gpt-4o-mini", extra_body=extra)

    message = assert_openai_refusal(caught.value, 400, "invalid_body", "invalid_request_error")
    assert field in message, message
    assert len(sent.requests) == 1
    assert_hits(mocks)


@pytest.mark.parametrize("what", list(BAD_BODIES))
def test_a_malformed_openrouter_field_is_400_on_messages(plain, mocks, what):
    extra, field = BAD_BODIES[what]
    sent = Sent()
    with pytest.raises(anthropic.BadRequestError) as caught:
        create_message(
            claude(plain, "plain", sdk_retries=True, sent=sent), model="claude-3-5-haiku-latest", extra_body=extra
        )

    message = assert_anthropic_refusal(caught.value, 400, "invalid_body", "invalid_request_error")
    assert field in message, message
    assert len(sent.requests) == 1
    assert_hits(mocks)


def test_an_unknown_slug_is_400(plain, mocks):
    with pytest.raises(openai.BadRequestError) as on_chat:
        chat(oai(plain, "plain", sdk_retries=True), "nosuchprovider/some-model")
    with pytest.raises(anthropic.BadRequestError) as on_messages:
        create_message(claude(plain, "plain", sdk_retries=True), model="nosuchprovider/some-model")

    assert_openai_refusal(on_chat.value, 400, "unknown_model", "invalid_request_error")
    assert_anthropic_refusal(on_messages.value, 400, "unknown_model", "invalid_request_error")
    assert_hits(mocks)


def test_an_unknown_gateway_key_is_401(plain, mocks):
    with pytest.raises(openai.AuthenticationError) as on_chat:
        chat(oai(plain, key="gw-nobody-knows-this-key", sdk_retries=True), "openai/gpt-4o-mini")
    with pytest.raises(anthropic.AuthenticationError) as on_messages:
        create_message(claude(plain, key="gw-nobody-knows-this-key", sdk_retries=True), model="claude-3-5-haiku-latest")

    assert_openai_refusal(on_chat.value, 401, "invalid_api_key", "authentication_error")
    assert_anthropic_refusal(on_messages.value, 401, "invalid_api_key", "authentication_error")
    assert_hits(mocks)
