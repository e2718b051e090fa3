// OpenRouter's official TypeScript SDK (@openrouter/sdk, pinned in
// package.json) driving byok-proxy's management API (SPEC §2, §7) through
// the real binary, once with a SQLite store and once with PostgreSQL.
//
// Every call goes through the SDK exactly as a user would make it: the SDK
// validates each response against its own BYOKKey schema, so a passing call
// means the response parses. A response it cannot parse surfaces here as a
// failure naming the call, the SDK's validation message and the raw body.
//
// Run with scripts/interop-openrouter-sdk (it installs the SDK and starts
// nothing but what these tests start themselves).

import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import * as errors from "@openrouter/sdk/models/errors";

import {
    randomHex,
    removeDir,
    sdkClient,
    sha256Hex,
    startPostgres,
    startProxy,
    tempDir,
} from "./harness.js";

const OPERATOR_KEY = `byok-mgmt-operator-${randomHex(16)}`;
const SCOPED_KEY = `byok-mgmt-scoped-${randomHex(16)}`;
const MASTER_KEY = randomHex(32); // 64 hex chars
const DEFAULT_WORKSPACE = "ws-1";

/** Every secret any test sends (provider keys, management keys); none may come back. */
const SECRETS = new Set([OPERATOR_KEY, SCOPED_KEY, MASTER_KEY]);

function newSecret() {
    // A provider-looking key, unique per call: `sk-` + 32 hex.
    const secret = `sk-${randomHex(16)}`;
    SECRETS.add(secret);
    return secret;
}

/** SPEC §2: first 3 chars, `...`, last 4. */
function labelOf(secret) {
    return `${secret.slice(0, 3)}...${secret.slice(-4)}`;
}

const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const HASH_A = sha256Hex("gateway key a");
const HASH_B = sha256Hex("gateway key b");

/** The 15 camelCase fields of the SDK's parsed BYOKKey. */
const BYOK_FIELDS = [
    "allowedApiKeyHashes",
    "allowedModels",
    "allowedUserIds",
    "createdAt",
    "declaredZdr",
    "disabled",
    "id",
    "isByokOnly",
    "isFallback",
    "isRequired",
    "label",
    "name",
    "provider",
    "sortOrder",
    "workspaceId",
];

/**
 * Turns a failed SDK call into a short, clear failure: a response the SDK
 * could not parse (with its validation message and the raw body), or an
 * error status where success was expected.
 */
function explain(error, what) {
    if (error instanceof errors.ResponseValidationError) {
        const url = error.rawResponse?.url ?? "";
        const detail = typeof error.pretty === "function" ? error.pretty() : error.message;
        return new assert.AssertionError({
            message:
                `${what}: the SDK could not parse the ${error.statusCode} response${url ? ` from ${url}` : ""}:\n` +
                `${detail}\n--- body: ${error.body}`,
        });
    }
    if (error instanceof errors.OpenRouterError) {
        return new assert.AssertionError({
            message: `${what}: the SDK threw ${error.name} (${error.statusCode}): ${error.message}\n--- body: ${error.body}`,
        });
    }
    return error;
}

/** Awaits an SDK call; a response validation error becomes a clear failure. */
async function sdk(what, call) {
    try {
        return await call();
    } catch (error) {
        throw explain(error, what);
    }
}

/** Awaits an SDK call that must fail with `ErrorClass` and `status`. */
async function sdkRejects(what, call, ErrorClass, status) {
    let result;
    try {
        result = await call();
    } catch (error) {
        if (!(error instanceof ErrorClass)) {
            const detail =
                error instanceof errors.ResponseValidationError
                    ? `a response it could not parse (${error.statusCode}): ${error.pretty()}\n--- body: ${error.body}`
                    : `${error?.name} (${error?.statusCode}): ${error?.message}${error?.body ? `\n--- body: ${error.body}` : ""}`;
            assert.fail(`${what}: expected the SDK's ${ErrorClass.name} (${status}), got ${detail}`);
        }
        assert.equal(error.statusCode, status, `${what}: status`);
        // The typed error classes carry the parsed `error` object.
        if ("error" in error && error.error) {
            assert.equal(error.error.code, status, `${what}: error.code`);
            assert.equal(typeof error.error.message, "string", `${what}: error.message`);
        }
        return error;
    }
    assert.fail(`${what}: expected the SDK's ${ErrorClass.name} (${status}), the call succeeded: ${JSON.stringify(result)}`);
}

/** Checks one parsed BYOKKey, and `expected`'s fields exactly. */
function assertKey(key, expected = {}) {
    for (const field of BYOK_FIELDS) {
        if (field === "name") continue; // may be absent
        assert.ok(field in key, `BYOKKey has ${field}: ${JSON.stringify(key)}`);
    }
    assert.match(key.id, UUID, "id is a UUID");
    assert.match(key.createdAt, RFC3339, "created_at is RFC 3339");
    assert.ok(!Number.isNaN(Date.parse(key.createdAt)), "created_at parses");
    assert.ok(Number.isInteger(key.sortOrder), "sort_order is an integer");
    for (const flag of ["disabled", "isFallback", "isRequired", "isByokOnly"]) {
        assert.equal(typeof key[flag], "boolean", `${flag} is a boolean`);
    }
    assert.ok(key.declaredZdr === null || typeof key.declaredZdr === "boolean", "declared_zdr is bool or null");
    assert.ok(key.workspaceId === null || typeof key.workspaceId === "string", "workspace_id is string or null");
    assert.ok(!("key" in key), "no key field");
    for (const [field, value] of Object.entries(expected)) {
        if (field === "name" && value === null) {
            assert.ok(key.name == null, `name is absent or null, got ${JSON.stringify(key.name)}`);
        } else {
            assert.deepEqual(key[field], value, `${field} of ${key.id}`);
        }
    }
}

/** None of `texts` (response bodies, the proxy's log, files) holds a secret sent. */
function assertNoSecretIn(texts, where) {
    for (const text of texts) {
        for (const secret of SECRETS) {
            const at = text.indexOf(secret);
            if (at >= 0) {
                const excerpt = text.slice(Math.max(0, at - 200), at + secret.length + 200);
                assert.fail(`${where} contains a secret the tests sent (${secret.slice(0, 6)}...): ${excerpt}`);
            }
        }
    }
}

/** The log entries for `method` on paths ending with `suffix`, since `from`. */
function requests(log, from, method, pathSuffix = "/byok") {
    return log.slice(from).filter((e) => e.method === method && e.url.pathname.endsWith(pathSuffix));
}

/** Collects every page the SDK's iterator yields. */
async function allPages(what, client, request) {
    return sdk(what, async () => {
        const pages = [];
        for await (const page of await client.byok.list(request)) {
            pages.push(page);
        }
        return pages;
    });
}

/** A POST the SDK cannot express: `workspace_id: null` (a global credential). */
async function rawCreate(adminUrl, apiKey, body) {
    const response = await fetch(`${adminUrl}/api/v1/byok`, {
        method: "POST",
        headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json" },
        body: JSON.stringify(body),
    });
    const text = await response.text();
    return { status: response.status, text, json: JSON.parse(text) };
}

const STORES = [
    {
        name: "sqlite",
        async open(dir) {
            return { url: `sqlite://${dir}/byok.db`, close: async () => {} };
        },
    },
    {
        name: "postgres",
        async open() {
            const pg = await startPostgres();
            return { url: pg.url, close: () => pg.stop() };
        },
    },
];

for (const store of STORES) {
    describe(`@openrouter/sdk against byok-proxy, ${store.name} store`, () => {
        /** Every exchange any client of this store made. */
        const log = [];
        let dir;
        let storeHandle;

        before(async () => {
            dir = tempDir(`byok-orsdk-${store.name}-`);
            storeHandle = await store.open(dir);
        });

        after(async () => {
            await storeHandle?.close();
            if (dir) removeDir(dir);
        });

        describe("operator management key", () => {
            let proxy;
            let client;
            let adminUrl;

            before(async () => {
                proxy = await startProxy({
                    storeUrl: storeHandle.url,
                    dir,
                    operatorKeyHashes: [sha256Hex(OPERATOR_KEY)],
                    masterKey: MASTER_KEY,
                    defaultWorkspace: DEFAULT_WORKSPACE,
                });
                adminUrl = proxy.adminUrl;
                client = sdkClient(adminUrl, OPERATOR_KEY, log);
            });

            after(async () => {
                if (proxy) {
                    await proxy.stop();
                }
            });

            it("byok.create answers 201 with a BYOKKey the SDK parses, never the key", async () => {
                const secret = newSecret();
                const from = log.length;
                const created = await sdk("byok.create", () =>
                    client.byok.create({
                        createBYOKKeyRequest: {
                            provider: "openai",
                            key: secret,
                            name: "Production OpenAI Key",
                            allowedModels: ["openai/gpt-4o", "openai/gpt-4o-mini"],
                            allowedUserIds: ["user-1"],
                            allowedApiKeyHashes: [HASH_A],
                            disabled: false,
                            isFallback: false,
                            isRequired: true,
                            isByokOnly: false,
                            declaredZdr: true,
                        },
                    }),
                );
                const [exchange] = requests(log, from, "POST");
                assert.equal(exchange.status, 201);
                assert.equal(exchange.url.pathname, "/api/v1/byok");
                // What the SDK sends: snake_case, as SPEC §2 names the fields.
                assert.deepEqual(JSON.parse(exchange.requestBody), {
                    provider: "openai",
                    key: secret,
                    name: "Production OpenAI Key",
                    allowed_models: ["openai/gpt-4o", "openai/gpt-4o-mini"],
                    allowed_user_ids: ["user-1"],
                    allowed_api_key_hashes: [HASH_A],
                    disabled: false,
                    is_fallback: false,
                    is_required: true,
                    is_byok_only: false,
                    declared_zdr: true,
                });
                assertKey(created.data, {
                    provider: "openai",
                    name: "Production OpenAI Key",
                    label: labelOf(secret),
                    workspaceId: DEFAULT_WORKSPACE,
                    allowedModels: ["openai/gpt-4o", "openai/gpt-4o-mini"],
                    allowedUserIds: ["user-1"],
                    allowedApiKeyHashes: [HASH_A],
                    disabled: false,
                    isFallback: false,
                    isRequired: true,
                    isByokOnly: false,
                    declaredZdr: true,
                });
                // Every field is on the wire (name may be absent or null).
                const raw = JSON.parse(exchange.responseBody).data;
                for (const field of [
                    "id", "workspace_id", "provider", "label", "created_at", "disabled", "is_fallback",
                    "is_required", "is_byok_only", "declared_zdr", "sort_order", "allowed_api_key_hashes",
                    "allowed_models", "allowed_user_ids",
                ]) {
                    assert.ok(field in raw, `the response has ${field}: ${exchange.responseBody}`);
                }
                assert.ok(!("key" in raw), "the response has no key field");
                assertNoSecretIn([exchange.responseBody], "the create response");
            });

            it("byok.create with only provider and key takes the defaults", async () => {
                const secret = newSecret();
                const created = await sdk("byok.create", () =>
                    client.byok.create({ createBYOKKeyRequest: { provider: "anthropic", key: secret } }),
                );
                assertKey(created.data, {
                    provider: "anthropic",
                    name: null,
                    label: labelOf(secret),
                    workspaceId: DEFAULT_WORKSPACE,
                    allowedModels: null,
                    allowedUserIds: null,
                    allowedApiKeyHashes: null,
                    disabled: false,
                    isFallback: false,
                    isRequired: false,
                    isByokOnly: false,
                    declaredZdr: null,
                });
            });

            it("byok.get returns the record byok.create made", async () => {
                const secret = newSecret();
                const created = await sdk("byok.create", () =>
                    client.byok.create({
                        createBYOKKeyRequest: { provider: "openai", key: secret, name: "get me", workspaceId: "ws-get" },
                    }),
                );
                const got = await sdk("byok.get", () => client.byok.get({ id: created.data.id }));
                assert.deepEqual(got.data, created.data);
                assertKey(got.data, { workspaceId: "ws-get", name: "get me" });
            });

            it("the SDK's own headers (user agent, attribution) are accepted", async () => {
                const attributed = sdkClient(adminUrl, OPERATOR_KEY, log, {
                    httpReferer: "https://interop.example/app",
                    appTitle: "byok-proxy interop",
                    appCategories: "testing",
                });
                const from = log.length;
                const [page] = await allPages("byok.list", attributed, { limit: 1, offset: 0 });
                assert.ok(page.result.totalCount >= 1);
                const [exchange] = requests(log, from, "GET");
                assert.equal(exchange.requestHeaders.authorization, `Bearer ${OPERATOR_KEY}`);
                assert.equal(exchange.requestHeaders.accept, "application/json");
                assert.match(exchange.requestHeaders["user-agent"], /^speakeasy-sdk\/typescript 1\.3\.19 /);
                assert.equal(exchange.requestHeaders["http-referer"], "https://interop.example/app");
                assert.equal(exchange.requestHeaders["x-openrouter-title"], "byok-proxy interop");
                assert.equal(exchange.requestHeaders["x-openrouter-categories"], "testing");
            });

            describe("byok.list pages through the SDK's iterator", () => {
                const workspace = `ws-pages-${randomHex(4)}`;
                const ids = new Set();

                before(async () => {
                    // 4 openai + 3 anthropic, interleaved.
                    for (let i = 0; i < 7; i++) {
                        const provider = i % 2 === 0 ? "openai" : "anthropic";
                        const created = await sdk("byok.create", () =>
                            client.byok.create({
                                createBYOKKeyRequest: { provider, key: newSecret(), name: `page ${i}`, workspaceId: workspace },
                            }),
                        );
                        ids.add(created.data.id);
                    }
                });

                it("limit 3 over 7 credentials: pages of 3, 3, 1, then the iterator stops", async () => {
                    const from = log.length;
                    const pages = await allPages("byok.list", client, { workspaceId: workspace, limit: 3 });
                    assert.deepEqual(
                        pages.map((p) => p.result.data.length),
                        [3, 3, 1],
                    );
                    for (const page of pages) {
                        assert.equal(page.result.totalCount, 7, "total_count counts before paging");
                        page.result.data.forEach((key) => assertKey(key, { workspaceId: workspace }));
                    }
                    // What the SDK sent: offset and limit, as query parameters.
                    const sent = requests(log, from, "GET").map((e) => Object.fromEntries(e.url.searchParams));
                    assert.deepEqual(sent, [
                        { limit: "3", offset: "0", workspace_id: workspace },
                        { limit: "3", offset: "3", workspace_id: workspace },
                        { limit: "3", offset: "6", workspace_id: workspace },
                    ]);
                    const paged = pages.flatMap((p) => p.result.data.map((k) => k.id));
                    assert.equal(new Set(paged).size, 7, "no credential twice");
                    assert.deepEqual(new Set(paged), ids);

                    // The order is stable: one page of everything agrees.
                    const [whole] = await allPages("byok.list", client, { workspaceId: workspace, limit: 100 });
                    assert.deepEqual(
                        paged,
                        whole.result.data.map((k) => k.id),
                    );
                    // Grouped by provider, in order (docs/operating.md: workspace, provider, candidate order).
                    const providers = whole.result.data.map((k) => k.provider);
                    assert.deepEqual(providers, [...providers].sort());
                });

                it("a full last page makes the SDK ask once more and get an empty page", async () => {
                    const from = log.length;
                    const pages = await allPages("byok.list", client, { workspaceId: workspace, limit: 7 });
                    assert.deepEqual(
                        pages.map((p) => [p.result.data.length, p.result.totalCount]),
                        [
                            [7, 7],
                            [0, 7],
                        ],
                    );
                    const offsets = requests(log, from, "GET").map((e) => e.url.searchParams.get("offset"));
                    assert.deepEqual(offsets, ["0", "7"]);
                });

                it("provider filters the list", async () => {
                    const [page, ...rest] = await allPages("byok.list", client, {
                        workspaceId: workspace,
                        provider: "anthropic",
                        limit: 50,
                    });
                    assert.equal(rest.length, 0);
                    assert.equal(page.result.totalCount, 3);
                    assert.deepEqual(
                        page.result.data.map((k) => k.provider),
                        ["anthropic", "anthropic", "anthropic"],
                    );
                });

                it("without workspaceId it lists the default workspace", async () => {
                    const pages = await allPages("byok.list", client, {});
                    const keys = pages.flatMap((p) => p.result.data);
                    assert.ok(keys.length > 0, "the default workspace has the credentials created above");
                    for (const key of keys) assertKey(key, { workspaceId: DEFAULT_WORKSPACE });
                    assert.equal(pages[0].result.totalCount, keys.length);
                });
            });

            describe("byok.update", () => {
                let original;
                let secret;

                before(async () => {
                    secret = newSecret();
                    const created = await sdk("byok.create", () =>
                        client.byok.create({
                            createBYOKKeyRequest: {
                                provider: "openai",
                                key: secret,
                                name: "to update",
                                workspaceId: "ws-update",
                                allowedModels: ["openai/gpt-4o"],
                                allowedUserIds: ["user-1", "user-2"],
                                allowedApiKeyHashes: [HASH_A],
                            },
                        }),
                    );
                    original = created.data;
                });

                it("an omitted field stays unchanged", async () => {
                    const updated = await sdk("byok.update", () =>
                        client.byok.update({ id: original.id, updateBYOKKeyRequest: { name: "renamed" } }),
                    );
                    assert.deepEqual(updated.data, { ...original, name: "renamed" });
                    const got = await sdk("byok.get", () => client.byok.get({ id: original.id }));
                    assert.deepEqual(got.data, updated.data);
                    original = got.data;
                });

                it("null clears an allowlist and an array replaces one", async () => {
                    const from = log.length;
                    const updated = await sdk("byok.update", () =>
                        client.byok.update({
                            id: original.id,
                            updateBYOKKeyRequest: { allowedModels: null, allowedUserIds: ["user-3"] },
                        }),
                    );
                    const [exchange] = requests(log, from, "PATCH", `/byok/${original.id}`);
                    assert.deepEqual(JSON.parse(exchange.requestBody), {
                        allowed_models: null,
                        allowed_user_ids: ["user-3"],
                    });
                    assert.deepEqual(updated.data, { ...original, allowedModels: null, allowedUserIds: ["user-3"] });

                    const cleared = await sdk("byok.update", () =>
                        client.byok.update({ id: original.id, updateBYOKKeyRequest: { allowedApiKeyHashes: null } }),
                    );
                    assert.equal(cleared.data.allowedApiKeyHashes, null);
                    const replaced = await sdk("byok.update", () =>
                        client.byok.update({
                            id: original.id,
                            updateBYOKKeyRequest: { allowedApiKeyHashes: [HASH_B, HASH_A] },
                        }),
                    );
                    assert.deepEqual(replaced.data.allowedApiKeyHashes, [HASH_B, HASH_A]);
                    assert.deepEqual(replaced.data.allowedUserIds, ["user-3"]);
                    original = replaced.data;
                });

                it("flags and declared_zdr change, and null sets declared_zdr back to inherit", async () => {
                    let updated = await sdk("byok.update", () =>
                        client.byok.update({
                            id: original.id,
                            updateBYOKKeyRequest: { disabled: true, isFallback: true, declaredZdr: false },
                        }),
                    );
                    assert.deepEqual(updated.data, { ...original, disabled: true, isFallback: true, declaredZdr: false });
                    updated = await sdk("byok.update", () =>
                        client.byok.update({
                            id: original.id,
                            updateBYOKKeyRequest: { disabled: false, isFallback: false, isRequired: true, isByokOnly: true },
                        }),
                    );
                    assert.deepEqual(updated.data, {
                        ...original,
                        declaredZdr: false,
                        isRequired: true,
                        isByokOnly: true,
                    });
                    updated = await sdk("byok.update", () =>
                        client.byok.update({
                            id: original.id,
                            updateBYOKKeyRequest: { declaredZdr: null, isByokOnly: false, isRequired: false },
                        }),
                    );
                    assert.deepEqual(updated.data, { ...original, declaredZdr: null });
                    original = updated.data;
                });

                it("name null clears the name", async () => {
                    const updated = await sdk("byok.update", () =>
                        client.byok.update({ id: original.id, updateBYOKKeyRequest: { name: null } }),
                    );
                    assertKey(updated.data, { name: null });
                    const restored = await sdk("byok.update", () =>
                        client.byok.update({ id: original.id, updateBYOKKeyRequest: { name: original.name } }),
                    );
                    assert.deepEqual(restored.data, original);
                });

                it("a new key rotates the secret in place and renews the label, never returning it", async () => {
                    const rotated = newSecret();
                    assert.notEqual(labelOf(rotated), labelOf(secret));
                    const from = log.length;
                    const updated = await sdk("byok.update", () =>
                        client.byok.update({ id: original.id, updateBYOKKeyRequest: { key: rotated } }),
                    );
                    assert.deepEqual(updated.data, { ...original, label: labelOf(rotated) });
                    const got = await sdk("byok.get", () => client.byok.get({ id: original.id }));
                    assert.deepEqual(got.data, updated.data);
                    assertNoSecretIn(
                        log.slice(from).map((e) => e.responseBody),
                        "a rotate or get response",
                    );
                    original = got.data;
                });

                it("is_byok_only on a fallback credential is refused with 400 and changes nothing", async () => {
                    await sdk("byok.update", () =>
                        client.byok.update({ id: original.id, updateBYOKKeyRequest: { isFallback: true } }),
                    );
                    const error = await sdkRejects(
                        "byok.update is_byok_only on a fallback",
                        () => client.byok.update({ id: original.id, updateBYOKKeyRequest: { isByokOnly: true } }),
                        errors.BadRequestResponseError,
                        400,
                    );
                    assert.match(error.error.message, /is_byok_only|is_fallback/);
                    const got = await sdk("byok.get", () => client.byok.get({ id: original.id }));
                    assert.deepEqual(got.data, { ...original, isFallback: true });
                });
            });

            it("byok.delete answers {deleted: true}; the credential is then 404 and leaves the list", async () => {
                const workspace = `ws-delete-${randomHex(4)}`;
                const created = await sdk("byok.create", () =>
                    client.byok.create({
                        createBYOKKeyRequest: { provider: "openai", key: newSecret(), workspaceId: workspace },
                    }),
                );
                const keep = await sdk("byok.create", () =>
                    client.byok.create({
                        createBYOKKeyRequest: { provider: "openai", key: newSecret(), workspaceId: workspace },
                    }),
                );
                const { id } = created.data;
                const deleted = await sdk("byok.delete", () => client.byok.delete({ id }));
                assert.deepEqual(deleted, { deleted: true });
                const N = errors.NotFoundResponseError;
                await sdkRejects("byok.get after delete", () => client.byok.get({ id }), N, 404);
                await sdkRejects(
                    "byok.update after delete",
                    () => client.byok.update({ id, updateBYOKKeyRequest: { name: "x" } }),
                    N,
                    404,
                );
                await sdkRejects("byok.delete twice", () => client.byok.delete({ id }), N, 404);
                const [page] = await allPages("byok.list", client, { workspaceId: workspace });
                assert.deepEqual(
                    page.result.data.map((k) => k.id),
                    [keep.data.id],
                );
                assert.equal(page.result.totalCount, 1);
            });

            it("a wrong management key gets the SDK's UnauthorizedResponseError (401)", async () => {
                const wrongKey = `byok-mgmt-wrong-${randomHex(8)}`;
                SECRETS.add(wrongKey);
                const wrong = sdkClient(adminUrl, wrongKey, log);
                const { data } = await sdk("byok.create", () =>
                    client.byok.create({ createBYOKKeyRequest: { provider: "openai", key: newSecret() } }),
                );
                const U = errors.UnauthorizedResponseError;
                await sdkRejects("byok.list", () => wrong.byok.list({}), U, 401);
                await sdkRejects("byok.get", () => wrong.byok.get({ id: data.id }), U, 401);
                await sdkRejects(
                    "byok.create",
                    () => wrong.byok.create({ createBYOKKeyRequest: { provider: "openai", key: newSecret() } }),
                    U,
                    401,
                );
                await sdkRejects(
                    "byok.update",
                    () => wrong.byok.update({ id: data.id, updateBYOKKeyRequest: { name: "x" } }),
                    U,
                    401,
                );
                await sdkRejects("byok.delete", () => wrong.byok.delete({ id: data.id }), U, 401);
                const got = await sdk("byok.get", () => client.byok.get({ id: data.id }));
                assert.deepEqual(got.data, data, "nothing changed");
            });

            it("an unknown id gets the SDK's NotFoundResponseError (404)", async () => {
                const id = "00000000-0000-4000-8000-000000000000";
                const N = errors.NotFoundResponseError;
                await sdkRejects("byok.get", () => client.byok.get({ id }), N, 404);
                await sdkRejects(
                    "byok.update",
                    () => client.byok.update({ id, updateBYOKKeyRequest: { name: "x" } }),
                    N,
                    404,
                );
                await sdkRejects("byok.delete", () => client.byok.delete({ id }), N, 404);
            });

            it("a write that breaks a rule gets the SDK's BadRequestResponseError (400) naming the field", async () => {
                const workspace = `ws-refused-${randomHex(4)}`;
                const B = errors.BadRequestResponseError;
                const refused = [
                    ["allowed_api_key_hashes", { allowedApiKeyHashes: ["not-hex"] }],
                    ["allowed_api_key_hashes", { allowedApiKeyHashes: [HASH_A.toUpperCase()] }],
                    ["allowed_api_key_hashes", { allowedApiKeyHashes: [] }],
                    ["allowed_models", { allowedModels: [""] }],
                    ["allowed_user_ids", { allowedUserIds: Array.from({ length: 101 }, (_, i) => `user-${i}`) }],
                    ["is_byok_only|is_fallback", { isByokOnly: true, isFallback: true }],
                    ["name", { name: "n".repeat(256) }],
                    ["provider", { provider: "no-such-provider" }],
                ];
                for (const [field, fields] of refused) {
                    const what = `byok.create with ${JSON.stringify(fields).slice(0, 80)}`;
                    const error = await sdkRejects(
                        what,
                        () =>
                            client.byok.create({
                                createBYOKKeyRequest: { provider: "openai", key: newSecret(), workspaceId: workspace, ...fields },
                            }),
                        B,
                        400,
                    );
                    assert.match(error.error.message, new RegExp(field), `${what}: the message names ${field}`);
                }
                const [page] = await allPages("byok.list", client, { workspaceId: workspace });
                assert.equal(page.result.totalCount, 0, "no refused create left a credential");

                // And on the list: limit is 1-100.
                await sdkRejects("byok.list limit 0", () => client.byok.list({ limit: 0 }), B, 400);
                await sdkRejects("byok.list limit 101", () => client.byok.list({ limit: 101 }), B, 400);
            });

            it("a global credential (workspace_id null) parses with workspaceId null", async () => {
                // The SDK's create cannot send `workspace_id: null` (its
                // CreateBYOKKeyRequest.workspaceId is `string | undefined`),
                // so the operator creates it with a plain POST (SPEC §7).
                const secret = newSecret();
                const created = await rawCreate(adminUrl, OPERATOR_KEY, {
                    provider: "openai",
                    key: secret,
                    name: "global",
                    workspace_id: null,
                });
                assert.equal(created.status, 201, created.text);
                assertNoSecretIn([created.text], "the global create response");
                const { id } = created.json.data;
                try {
                    const got = await sdk("byok.get", () => client.byok.get({ id }));
                    assertKey(got.data, { workspaceId: null, name: "global", label: labelOf(secret) });
                    const updated = await sdk("byok.update", () =>
                        client.byok.update({ id, updateBYOKKeyRequest: { allowedModels: ["openai/gpt-4o"] } }),
                    );
                    assertKey(updated.data, { workspaceId: null, allowedModels: ["openai/gpt-4o"] });
                } finally {
                    // Leave no global credential behind for the other tests.
                    await sdk("byok.delete", () => client.byok.delete({ id }));
                }
            });

            describe("apiKeys: gateway keys in OpenRouter's shape (SPEC §7, §8)", () => {
                /** Checks one parsed API key: every field the SDK reads, and `expected`'s exactly. */
                function assertApiKey(key, expected = {}) {
                    assert.match(key.hash, /^[0-9a-f]{64}$/, "hash is SHA-256 hex");
                    assert.match(key.createdAt, RFC3339, "created_at is RFC 3339");
                    for (const field of [
                        "usage",
                        "usageDaily",
                        "usageWeekly",
                        "usageMonthly",
                        "byokUsage",
                        "byokUsageDaily",
                        "byokUsageWeekly",
                        "byokUsageMonthly",
                    ]) {
                        assert.equal(typeof key[field], "number", `${field} is a number`);
                    }
                    assert.ok(!("key" in key), "no key field in data");
                    for (const [field, value] of Object.entries(expected)) {
                        assert.deepEqual(key[field], value, `${field} of ${key.hash}`);
                    }
                }

                let limited;
                let bare;

                it("apiKeys.create answers 201 with the key once, and a record the SDK parses", async () => {
                    const created = await sdk("apiKeys.create", () =>
                        client.apiKeys.create({
                            requestBody: {
                                name: "limited",
                                limit: 5,
                                limitReset: "monthly",
                                includeByokInLimit: true,
                                creatorUserId: "user-7",
                                expiresAt: new Date("2030-01-01T00:00:00Z"),
                                external: { user: "ext-7" },
                            },
                        }),
                    );
                    assert.match(created.key, /^byok-/, "the raw key, once");
                    assert.equal(sha256Hex(created.key), created.data.hash);
                    assertApiKey(created.data, {
                        name: "limited",
                        workspaceId: DEFAULT_WORKSPACE,
                        limit: 5,
                        limitRemaining: 5,
                        limitReset: "monthly",
                        includeByokInLimit: true,
                        creatorUserId: "user-7",
                        externalUser: "ext-7",
                        disabled: false,
                        usage: 0,
                        byokUsageMonthly: 0,
                        label: `${created.key.slice(0, 7)}...${created.key.slice(-4)}`,
                    });
                    assert.equal(created.data.expiresAt.toISOString(), "2030-01-01T00:00:00.000Z");
                    limited = created.data.hash;

                    const plain = await sdk("apiKeys.create", () => client.apiKeys.create({ requestBody: { name: "bare" } }));
                    assertApiKey(plain.data, {
                        name: "bare",
                        limit: null,
                        limitRemaining: null,
                        limitReset: null,
                        includeByokInLimit: false,
                        creatorUserId: null,
                        externalUser: null,
                    });
                    bare = plain.data.hash;
                });

                it("apiKeys.get returns what apiKeys.create made", async () => {
                    const got = await sdk("apiKeys.get", () => client.apiKeys.get({ hash: limited }));
                    assertApiKey(got.data, { hash: limited, limit: 5, limitReset: "monthly", creatorUserId: "user-7" });
                });

                it("apiKeys.update changes the limit, its period and the flags; null clears", async () => {
                    const updated = await sdk("apiKeys.update", () =>
                        client.apiKeys.update({
                            hash: limited,
                            requestBody: { limit: 20, limitReset: "daily", includeByokInLimit: false, name: "renamed" },
                        }),
                    );
                    assertApiKey(updated.data, {
                        limit: 20,
                        limitRemaining: 20,
                        limitReset: "daily",
                        includeByokInLimit: false,
                        name: "renamed",
                    });
                    const cleared = await sdk("apiKeys.update", () =>
                        client.apiKeys.update({ hash: limited, requestBody: { limit: null, limitReset: null } }),
                    );
                    assertApiKey(cleared.data, { limit: null, limitRemaining: null, limitReset: null, name: "renamed" });
                    await sdkRejects(
                        "apiKeys.update with a negative limit",
                        () => client.apiKeys.update({ hash: limited, requestBody: { limit: -1 } }),
                        errors.BadRequestResponseError,
                        400,
                    );
                });

                it("apiKeys.list leaves disabled keys out unless includeDisabled", async () => {
                    await sdk("apiKeys.update", () => client.apiKeys.update({ hash: bare, requestBody: { disabled: true } }));
                    const listed = await sdk("apiKeys.list", () => client.apiKeys.list({ workspaceId: DEFAULT_WORKSPACE }));
                    const hashes = listed.data.map((k) => k.hash);
                    assert.ok(hashes.includes(limited), "the enabled key is listed");
                    assert.ok(!hashes.includes(bare), "the disabled key is not");
                    for (const key of listed.data) assertApiKey(key, { workspaceId: DEFAULT_WORKSPACE });
                    const all = await sdk("apiKeys.list", () =>
                        client.apiKeys.list({ workspaceId: DEFAULT_WORKSPACE, includeDisabled: true }),
                    );
                    const found = all.data.find((k) => k.hash === bare);
                    assertApiKey(found, { disabled: true });
                });

                it("apiKeys.delete answers {deleted: true}; the key is then 404", async () => {
                    for (const hash of [limited, bare]) {
                        const deleted = await sdk("apiKeys.delete", () => client.apiKeys.delete({ hash }));
                        assert.equal(deleted.deleted, true);
                        await sdkRejects(
                            "apiKeys.get of a deleted key",
                            () => client.apiKeys.get({ hash }),
                            errors.NotFoundResponseError,
                            404,
                        );
                    }
                });
            });

            it("every response was JSON, and none held a secret", () => {
                assert.ok(log.length > 0);
                for (const exchange of log) {
                    assert.match(
                        exchange.contentType ?? "",
                        /^application\/json\b/,
                        `${exchange.method} ${exchange.url.pathname} answered ${exchange.contentType}`,
                    );
                }
                assertNoSecretIn(
                    log.map((e) => e.responseBody),
                    "a response",
                );
                assertNoSecretIn([proxy.stderr()], "the proxy's log");
                if (store.name === "sqlite") {
                    // Secrets at rest are sealed (docs/configuration.md, "The master key").
                    for (const name of fs.readdirSync(dir).filter((n) => n.startsWith("byok.db"))) {
                        const bytes = fs.readFileSync(path.join(dir, name)).toString("latin1");
                        assertNoSecretIn([bytes], `the SQLite file ${name}`);
                    }
                }
            });
        });

        describe("workspace-scoped management key (SPEC §7)", () => {
            const wsA = `ws-scoped-a-${randomHex(4)}`;
            const wsB = `ws-scoped-b-${randomHex(4)}`;
            let proxy;
            let operator;
            let scoped;
            let adminUrl;
            let foreign;
            let globalId;

            before(async () => {
                proxy = await startProxy({
                    storeUrl: storeHandle.url,
                    dir,
                    operatorKeyHashes: [sha256Hex(OPERATOR_KEY)],
                    scopedKeys: [{ hash: sha256Hex(SCOPED_KEY), workspaces: [wsA, wsB] }],
                    masterKey: MASTER_KEY,
                    defaultWorkspace: DEFAULT_WORKSPACE,
                });
                adminUrl = proxy.adminUrl;
                operator = sdkClient(adminUrl, OPERATOR_KEY, log);
                scoped = sdkClient(adminUrl, SCOPED_KEY, log);
                foreign = (
                    await sdk("byok.create", () =>
                        operator.byok.create({
                            createBYOKKeyRequest: { provider: "openai", key: newSecret(), workspaceId: "ws-foreign" },
                        }),
                    )
                ).data;
                const global = await rawCreate(adminUrl, OPERATOR_KEY, {
                    provider: "openai",
                    key: newSecret(),
                    workspace_id: null,
                });
                assert.equal(global.status, 201, global.text);
                globalId = global.json.data.id;
            });

            after(async () => {
                if (proxy) {
                    if (globalId && proxy.exited() === null) {
                        await operator.byok.delete({ id: globalId }).catch(() => {});
                    }
                    await proxy.stop();
                }
            });

            it("creates in its first workspace by default, and in another of its own on request", async () => {
                const inA = await sdk("byok.create", () =>
                    scoped.byok.create({ createBYOKKeyRequest: { provider: "openai", key: newSecret() } }),
                );
                assertKey(inA.data, { workspaceId: wsA });
                const inB = await sdk("byok.create", () =>
                    scoped.byok.create({
                        createBYOKKeyRequest: { provider: "anthropic", key: newSecret(), workspaceId: wsB },
                    }),
                );
                assertKey(inB.data, { workspaceId: wsB });
                const pages = await allPages("byok.list", scoped, {});
                assert.deepEqual(
                    pages.flatMap((p) => p.result.data.map((k) => k.id)),
                    [inA.data.id],
                    "the default list is its first workspace, without global credentials",
                );
                const [inBPage] = await allPages("byok.list", scoped, { workspaceId: wsB });
                assert.deepEqual(
                    inBPage.result.data.map((k) => k.id),
                    [inB.data.id],
                );
            });

            it("another workspace's credential is 404 to it, and creating there is 403", async () => {
                const N = errors.NotFoundResponseError;
                await sdkRejects("byok.get foreign", () => scoped.byok.get({ id: foreign.id }), N, 404);
                await sdkRejects(
                    "byok.update foreign",
                    () => scoped.byok.update({ id: foreign.id, updateBYOKKeyRequest: { name: "x" } }),
                    N,
                    404,
                );
                await sdkRejects("byok.delete foreign", () => scoped.byok.delete({ id: foreign.id }), N, 404);
                await sdkRejects("byok.get global", () => scoped.byok.get({ id: globalId }), N, 404);
                await sdkRejects(
                    "byok.create in a foreign workspace",
                    () =>
                        scoped.byok.create({
                            createBYOKKeyRequest: { provider: "openai", key: newSecret(), workspaceId: "ws-foreign" },
                        }),
                    errors.ForbiddenResponseError,
                    403,
                );
                const [page] = await allPages("byok.list", scoped, { workspaceId: "ws-foreign" });
                assert.equal(page.result.totalCount, 0);
                assert.deepEqual(page.result.data, []);
                const still = await sdk("byok.get", () => operator.byok.get({ id: foreign.id }));
                assert.deepEqual(still.data, foreign);
            });

            it("no response and no log line held a secret", () => {
                assertNoSecretIn(
                    log.map((e) => e.responseBody),
                    "a response",
                );
                assertNoSecretIn([proxy.stderr()], "the proxy's log");
            });
        });
    });
}
