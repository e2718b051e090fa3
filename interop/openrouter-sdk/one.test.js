// OpenRouter's official TypeScript SDK (@openrouter/sdk, pinned in
// package.json) on byok-proxy's proxy listener (SPEC §11, issue 25): the SDK's
// serverURL is http://PROXY/api/v1 and its apiKey a gateway key, exactly as a
// user points it at OpenRouter. `chat.send` goes to a mock upstream (OpenAI's
// chat completions, harness.js) through the proxy; `models.list` and
// `apiKeys.getCurrentKeyMetadata` are answered by the proxy itself.
//
// The SDK validates every response against its own schemas (zod), so a
// passing call means the proxy's answer parses; a response it cannot parse
// fails here with the SDK's validation message and the raw body.
//
// Run with scripts/interop-openrouter-sdk.

import assert from "node:assert/strict";
import { after, before, beforeEach, describe, it } from "node:test";

import * as errors from "@openrouter/sdk/models/errors";

import {
    MOCK,
    randomHex,
    removeDir,
    sdkClient,
    sha256Hex,
    startGateway,
    startMockUpstream,
    tempDir,
    tomlString,
} from "./harness.js";

const WORKSPACE = "ws-one";
const USER = "user-one";
const GATEWAY_KEY = `gw-one-${randomHex(12)}`;
const SECRET = `sk-openai-one-${randomHex(8)}`;
const FAILING_SECRET = `sk-openai-one-failing-${randomHex(8)}`;
const CREDENTIAL_ID = "00000000-0000-4000-8000-000000000001";
const SLUG = "openai/gpt-4o";
const MODEL_ID = "gpt-4o-2024-08-06";
const MESSAGES = [{ role: "user", content: "hi" }];

/** The proxy's config: one gateway key, one OpenAI credential at the mock, one catalog model. */
function config(upstreamUrl) {
    return [
        "[server]",
        'listen = "127.0.0.1:0"',
        "drain_secs = 1",
        "",
        "[[api_keys]]",
        `hash = ${tomlString(sha256Hex(GATEWAY_KEY))}`,
        `workspace_id = ${tomlString(WORKSPACE)}`,
        `user_id = ${tomlString(USER)}`,
        'name = "one endpoint"',
        "",
        "[[credentials]]",
        `id = ${tomlString(CREDENTIAL_ID)}`,
        `workspace_id = ${tomlString(WORKSPACE)}`,
        'provider = "openai"',
        `key = ${tomlString(SECRET)}`,
        `base_url = ${tomlString(upstreamUrl)}`,
        'created_at = "2025-08-24T10:30:00Z"',
        "sort_order = 0",
        "",
        `[models.${tomlString(SLUG)}]`,
        'name = "GPT-4o"',
        `endpoints = [{ provider = "openai", model = ${tomlString(MODEL_ID)} }]`,
        "",
    ].join("\n");
}

/** Awaits an SDK call; a response the SDK could not parse becomes a clear failure. */
async function sdk(what, call) {
    try {
        return await call();
    } catch (error) {
        if (error instanceof errors.ResponseValidationError) {
            const detail = typeof error.pretty === "function" ? error.pretty() : error.message;
            throw new assert.AssertionError({
                message: `${what}: the SDK could not parse the ${error.statusCode} response:\n${detail}\n--- body: ${error.body}`,
            });
        }
        if (error instanceof errors.OpenRouterError) {
            throw new assert.AssertionError({
                message: `${what}: the SDK threw ${error.name} (${error.statusCode}): ${error.message}\n--- body: ${error.body}`,
            });
        }
        throw error;
    }
}

/** Awaits an SDK call that must fail with the SDK's `ErrorClass` and `status`, OpenRouter's error body. */
async function sdkRejects(what, call, ErrorClass, status, reason) {
    let result;
    try {
        result = await call();
    } catch (error) {
        if (!(error instanceof ErrorClass)) {
            assert.fail(
                `${what}: expected the SDK's ${ErrorClass.name} (${status}), got ${error?.name} ` +
                    `(${error?.statusCode}): ${error?.message}${error?.body ? `\n--- body: ${error.body}` : ""}`,
            );
        }
        assert.equal(error.statusCode, status, `${what}: status`);
        assert.equal(error.error.code, status, `${what}: error.code`);
        assert.equal(error.error.metadata?.reason, reason, `${what}: error.metadata.reason in ${error.body}`);
        assert.equal(error.headers.get("x-should-retry"), "false", `${what}: x-should-retry`);
        return error;
    }
    assert.fail(`${what}: expected the SDK's ${ErrorClass.name} (${status}), the call succeeded: ${JSON.stringify(result)}`);
}

describe("@openrouter/sdk on the proxy listener (SPEC §11)", () => {
    const log = [];
    let dir;
    let upstream;
    let proxy;
    let client;

    before(async () => {
        dir = tempDir("byok-orsdk-one-");
        upstream = await startMockUpstream();
        proxy = await startGateway({ dir, config: config(upstream.url) });
        client = sdkClient(proxy.url, GATEWAY_KEY, log);
    });

    after(async () => {
        await proxy?.stop();
        await upstream?.stop();
        if (dir) removeDir(dir);
    });

    beforeEach(() => upstream.reset());

    /** The one upstream request of a test: the credential's secret, never the gateway key. */
    function theUpstreamRequest() {
        assert.equal(upstream.requests.length, 1, `upstream requests: ${JSON.stringify(upstream.requests)}`);
        const [request] = upstream.requests;
        assert.equal(request.method, "POST");
        assert.equal(request.path, "/v1/chat/completions");
        assert.equal(request.headers.authorization, `Bearer ${SECRET}`);
        for (const name of ["x-api-key", "api-key", "x-goog-api-key"]) {
            assert.ok(!(name in request.headers), `${name} went upstream`);
        }
        assert.ok(!JSON.stringify(request).includes(GATEWAY_KEY), "the gateway key went upstream");
        return request;
    }

    /** The last exchange the SDK made, as recorded by the harness's fetcher. */
    function lastExchange() {
        return log[log.length - 1];
    }

    it("chat.send: a JSON completion, the slug's endpoint upstream, OpenRouter's fields removed", async () => {
        const result = await sdk("chat.send", () =>
            client.chat.send({
                chatRequest: { model: SLUG, messages: MESSAGES, temperature: 0.25, provider: { order: ["openai"] } },
            }),
        );

        assert.equal(result.choices[0].message.content, MOCK.text);
        assert.equal(result.choices[0].finishReason, "stop");
        assert.equal(result.model, SLUG);
        assert.deepEqual(
            [result.usage.promptTokens, result.usage.completionTokens],
            [MOCK.inputTokens, MOCK.outputTokens],
        );
        const exchange = lastExchange();
        assert.equal(exchange.url.pathname, "/api/v1/chat/completions");
        assert.equal(JSON.parse(exchange.responseBody).provider, "OpenAI");
        const request = theUpstreamRequest();
        const sent = JSON.parse(exchange.requestBody);
        assert.deepEqual(sent.provider, { order: ["openai"] });
        const { provider, ...rest } = sent;
        assert.deepEqual(JSON.parse(request.body), { ...rest, model: MODEL_ID });
    });

    it("chat.send: a streamed completion, relayed as the provider sent it", async () => {
        const stream = await sdk("chat.send stream", () =>
            client.chat.send({
                chatRequest: { model: SLUG, messages: MESSAGES, stream: true, streamOptions: { includeUsage: true } },
            }),
        );
        const chunks = [];
        await sdk("chat.send stream events", async () => {
            for await (const chunk of stream) chunks.push(chunk);
        });

        const text = chunks.map((c) => c.choices[0]?.delta?.content ?? "").join("");
        assert.equal(text, MOCK.streamPieces.join(""));
        const usage = chunks[chunks.length - 1].usage;
        assert.deepEqual([usage.promptTokens, usage.completionTokens], [MOCK.inputTokens, MOCK.outputTokens]);
        const request = theUpstreamRequest();
        assert.equal(JSON.parse(request.body).model, MODEL_ID);
        assert.equal(JSON.parse(request.body).stream, true);
    });

    it("chat.send: a bare model is OpenAI's", async () => {
        const result = await sdk("chat.send", () =>
            client.chat.send({ chatRequest: { model: "gpt-4o-mini", messages: MESSAGES } }),
        );

        assert.equal(result.choices[0].message.content, MOCK.text);
        assert.equal(JSON.parse(theUpstreamRequest().body).model, "gpt-4o-mini");
    });

    it("models.list parses the proxy's model list", async () => {
        const page = await sdk("models.list", () => client.models.list());
        const models = page.result.data;

        const gpt4o = models.find((m) => m.id === SLUG);
        assert.ok(gpt4o, `${SLUG} listed: ${JSON.stringify(models.map((m) => m.id))}`);
        assert.equal(gpt4o.name, "GPT-4o");
        assert.equal(gpt4o.canonicalSlug, SLUG);
        assert.ok(Number.isInteger(gpt4o.created), "created is an integer");
        assert.ok(Array.isArray(gpt4o.architecture.inputModalities), "architecture.input_modalities");
        assert.equal(lastExchange().url.pathname, "/api/v1/models");
        assert.equal(upstream.requests.length, 0);
    });

    it("apiKeys.getCurrentKeyMetadata parses the calling key's record", async () => {
        const { data } = await sdk("apiKeys.getCurrentKeyMetadata", () => client.apiKeys.getCurrentKeyMetadata());

        assert.equal(data.workspaceId, WORKSPACE);
        assert.equal(data.limit, null);
        assert.equal(data.limitRemaining, null);
        assert.equal(data.includeByokInLimit, false);
        assert.equal(typeof data.label, "string");
        assert.ok(!data.label.includes(GATEWAY_KEY.slice(7)), `the label shows the key: ${data.label}`);
        for (const field of ["usage", "usageDaily", "usageWeekly", "usageMonthly", "byokUsage"]) {
            assert.equal(typeof data[field], "number", field);
        }
        assert.equal(lastExchange().url.pathname, "/api/v1/key");
        assert.ok(!lastExchange().responseBody.includes(GATEWAY_KEY), "the key's record shows the raw key");
        assert.equal(upstream.requests.length, 0);
    });

    it("an unknown gateway key is the SDK's UnauthorizedResponseError", async () => {
        const stranger = sdkClient(proxy.url, `gw-nobody-${randomHex(8)}`, log);

        await sdkRejects(
            "chat.send with an unknown key",
            () => stranger.chat.send({ chatRequest: { model: SLUG, messages: MESSAGES } }),
            errors.UnauthorizedResponseError,
            401,
            "invalid_api_key",
        );
        assert.equal(upstream.requests.length, 0);
    });

    it("an unknown model is the SDK's BadRequestResponseError", async () => {
        await sdkRejects(
            "chat.send with an unknown slug",
            () => client.chat.send({ chatRequest: { model: "nosuchprovider/model", messages: MESSAGES } }),
            errors.BadRequestResponseError,
            400,
            "unknown_model",
        );
        assert.equal(upstream.requests.length, 0);
    });

    // @openrouter/sdk 1.3.19's ChatResult requires system_fingerprint (string
    // or null). OpenAI sends it, other OpenAI-format providers may not: the
    // proxy adds `null` where the answer has none, as OpenRouter's answers
    // carry it.
    it(
        "chat.send parses a completion whose provider sent no system_fingerprint",
        async () => {
            upstream.replyForSecret(SECRET, 200, {
                id: "chatcmpl-bare",
                object: "chat.completion",
                created: 1_700_000_000,
                model: MODEL_ID,
                choices: [{ index: 0, message: { role: "assistant", content: MOCK.text }, finish_reason: "stop" }],
            });

            const result = await sdk("chat.send", () => client.chat.send({ chatRequest: { model: SLUG, messages: MESSAGES } }));
            assert.equal(result.choices[0].message.content, MOCK.text);
        },
    );
});
