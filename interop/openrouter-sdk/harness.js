// The harness for byok.test.js: the real byok-proxy binary with a database
// store (SQLite, or a throwaway PostgreSQL cluster), and OpenRouter's SDK
// pointed at its admin API with every HTTP exchange recorded; and for
// one.test.js: the binary with a config of the test's own (startGateway) in
// front of a recording mock upstream of OpenAI's chat completions
// (startMockUpstream), the SDK pointed at its proxy listener.
//
// * The binary is $BYOK_PROXY_BIN (scripts/interop-openrouter-sdk sets it;
//   default target/debug/byok-proxy from the repository root).
// * Every listener is 127.0.0.1:0; the admin address is read from the
//   proxy's stderr ("admin API listening on http://ADDR", or "byok-proxy
//   listening on http://ADDR" for the proxy listener), polled against a
//   deadline, never slept for.
// * PostgreSQL mirrors tests/stores/pg.rs: binaries from
//   $BYOK_PG_LIB_ROOT/*/bin (default /usr/lib/postgresql, highest version
//   first), else initdb on PATH; as root, initdb/pg_ctl run as the
//   `postgres` user (else `nobody`) through runuser (else setpriv, else su) in
//   a temporary directory owned by it; `trust` auth on 127.0.0.1 on a free
//   port; `pg_ctl -w`; stopped and removed at the end. Directories are named
//   byok-pg-* with an owner.pid, like pg.rs's, so either sweeper removes the
//   other's orphans (clusters whose owning process is gone).
// * Everything started here is stopped in `after` hooks, and also on exit,
//   SIGINT and SIGTERM (synchronously) if a run is cut short.

import { spawn, spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { HTTPClient, OpenRouter } from "@openrouter/sdk";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = path.resolve(HERE, "..", "..");

/** How long the proxy may take to print its admin address. */
const PROXY_START_DEADLINE_MS = 15_000;
/** How long the proxy may take to exit after SIGTERM before SIGKILL. */
const PROXY_STOP_DEADLINE_MS = 10_000;
/** The longest PostgreSQL may take to accept TCP after `pg_ctl -w start`. */
const PG_CONNECT_DEADLINE_MS = 30_000;
const PG_CTL_TIMEOUT_SECS = "60";
const PG_PORT_ATTEMPTS = 20;
const PG_DIR_PREFIX = "byok-pg-";
const PG_OWNER_FILE = "owner.pid";

// ---------------------------------------------------------------------------
// Cleanup of whatever is still running when the process ends.

const cleanups = new Set();

function runCleanupsSync() {
    for (const fn of [...cleanups].reverse()) {
        try {
            fn();
        } catch {
            // best effort
        }
    }
    cleanups.clear();
}

process.on("exit", runCleanupsSync);
for (const signal of ["SIGINT", "SIGTERM"]) {
    process.once(signal, () => {
        runCleanupsSync();
        process.exit(signal === "SIGINT" ? 130 : 143);
    });
}

// ---------------------------------------------------------------------------
// Small helpers.

export function sha256Hex(text) {
    return createHash("sha256").update(text, "utf8").digest("hex");
}

export function randomHex(bytes) {
    return randomBytes(bytes).toString("hex");
}

const tempDirs = new Map();

/** A fresh temporary directory; `removeDir` removes it, as does an exit. */
export function tempDir(prefix) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
    const remove = () => fs.rmSync(dir, { recursive: true, force: true });
    tempDirs.set(dir, remove);
    cleanups.add(remove);
    return dir;
}

export function removeDir(dir) {
    cleanups.delete(tempDirs.get(dir));
    tempDirs.delete(dir);
    fs.rmSync(dir, { recursive: true, force: true });
}

/** A TOML basic string. */
export function tomlString(value) {
    return JSON.stringify(value);
}

/** A port on 127.0.0.1 that was free a moment ago. */
function freePort() {
    return new Promise((resolve, reject) => {
        const server = net.createServer();
        server.unref();
        server.once("error", reject);
        server.listen(0, "127.0.0.1", () => {
            const { port } = server.address();
            server.close(() => resolve(port));
        });
    });
}

function canConnect(port) {
    return new Promise((resolve) => {
        const socket = net.connect({ host: "127.0.0.1", port });
        socket.setTimeout(1000);
        socket.once("connect", () => {
            socket.destroy();
            resolve(true);
        });
        socket.once("timeout", () => {
            socket.destroy();
            resolve(false);
        });
        socket.once("error", () => resolve(false));
    });
}

const tick = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------
// The proxy.

export function proxyBinary() {
    const bin = process.env.BYOK_PROXY_BIN
        ? path.resolve(process.env.BYOK_PROXY_BIN)
        : path.join(REPO_ROOT, "target", "debug", "byok-proxy");
    try {
        fs.accessSync(bin, fs.constants.X_OK);
    } catch {
        throw new Error(
            `no byok-proxy binary at ${bin}: build it first (cargo build --locked --bin byok-proxy) ` +
                "or set BYOK_PROXY_BIN to an executable byok-proxy",
        );
    }
    return bin;
}

/**
 * Starts `byok-proxy serve --config FILE` with a database store.
 *
 * @param {object} options
 * @param {string} options.storeUrl `sqlite:///…` or `postgres://…`
 * @param {string} options.dir where the config file goes
 * @param {string[]} options.operatorKeyHashes `admin.management_key_hashes`
 * @param {{hash: string, workspaces: string[]}[]} [options.scopedKeys] `[[admin.management_keys]]`
 * @param {string} options.masterKey `BYOK_MASTER_KEY`
 * @param {string} [options.defaultWorkspace]
 * @returns {Promise<{adminUrl: string, adminAddress: string, stderr: () => string, exited: () => object | null, stop: () => Promise<void>}>}
 */
export async function startProxy({
    storeUrl,
    dir,
    operatorKeyHashes,
    scopedKeys = [],
    masterKey,
    defaultWorkspace = "ws-1",
}) {
    const lines = [
        "[server]",
        'listen = "127.0.0.1:0"',
        "drain_secs = 1",
        "",
        "[admin]",
        'listen = "127.0.0.1:0"',
        `management_key_hashes = [${operatorKeyHashes.map(tomlString).join(", ")}]`,
        "",
    ];
    for (const key of scopedKeys) {
        lines.push(
            "[[admin.management_keys]]",
            `hash = ${tomlString(key.hash)}`,
            `workspaces = [${key.workspaces.map(tomlString).join(", ")}]`,
            "",
        );
    }
    lines.push(
        "[store]",
        `url = ${tomlString(storeUrl)}`,
        `default_workspace_id = ${tomlString(defaultWorkspace)}`,
        "",
    );
    const env = { BYOK_MASTER_KEY: masterKey };
    const { match, ...proxy } = await spawnProxy({
        dir,
        config: lines.join("\n"),
        env,
        pattern: /admin API listening on http:\/\/(\S+)/,
        what: "its admin API",
    });
    return { adminAddress: match[1], adminUrl: `http://${match[1]}`, ...proxy };
}

/**
 * Starts `byok-proxy serve --config FILE` with `config` (TOML text) as the
 * file, for the proxy listener itself (SPEC §4, §11): no store, no admin API
 * unless the config says so.
 *
 * @param {object} options
 * @param {string} options.dir where the config file goes
 * @param {string} options.config the config file's text
 * @returns {Promise<{url: string, stderr: () => string, exited: () => object | null, stop: () => Promise<void>}>}
 */
export async function startGateway({ dir, config }) {
    const { match, ...proxy } = await spawnProxy({
        dir,
        config,
        env: {},
        pattern: /byok-proxy listening on (http:\/\/\S+)/,
        what: "its proxy listener",
    });
    return { url: match[1], ...proxy };
}

/**
 * Writes `config` into `dir`, runs `byok-proxy serve` on it with `env` added
 * to this process's environment, and waits for `pattern` in its output: woken
 * by every chunk of output and by the exit, bounded by a deadline.
 */
async function spawnProxy({ dir, config, env: extraEnv, pattern, what }) {
    const bin = proxyBinary();
    const configPath = path.join(dir, `byok-${randomHex(4)}.toml`);
    fs.writeFileSync(configPath, config);

    const env = { ...process.env, ...extraEnv };
    if (!("BYOK_MASTER_KEY" in extraEnv)) delete env.BYOK_MASTER_KEY;
    delete env.BYOK_MASTER_KEY_PREVIOUS;
    delete env.BYOK_PROXY_CONFIG;
    env.NO_COLOR = "1";
    const child = spawn(bin, ["serve", "--config", configPath], {
        env,
        stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    let exited = null;
    const exitPromise = new Promise((resolve) => {
        child.once("exit", (code, signal) => {
            exited = { code, signal };
            resolve(exited);
        });
    });
    let wake = () => {};
    const onData = (chunk) => {
        output += chunk.toString("utf8");
        wake();
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.once("exit", () => wake());
    child.once("error", (error) => {
        output += `\n[spawn error] ${error.message}\n`;
        exited ??= { code: null, signal: null, error };
        wake();
    });
    const killNow = () => {
        if (exited === null) child.kill("SIGKILL");
    };
    cleanups.add(killNow);

    const stop = async () => {
        cleanups.delete(killNow);
        if (exited === null) {
            child.kill("SIGTERM");
            const timer = setTimeout(() => {
                if (exited === null) child.kill("SIGKILL");
            }, PROXY_STOP_DEADLINE_MS);
            await exitPromise;
            clearTimeout(timer);
        }
    };

    const deadline = Date.now() + PROXY_START_DEADLINE_MS;
    const clean = () => output.replace(/\x1b\[[0-9;]*m/g, "");
    for (;;) {
        const match = pattern.exec(clean());
        if (match) {
            return { match, stderr: clean, exited: () => exited, stop };
        }
        if (exited !== null) {
            throw new Error(
                `byok-proxy exited (${JSON.stringify(exited)}) before announcing ${what}; ` +
                    `config ${configPath}:\n${config}\n--- output:\n${clean()}`,
            );
        }
        const remaining = deadline - Date.now();
        if (remaining <= 0) {
            await stop();
            throw new Error(`byok-proxy did not announce ${what} within ${PROXY_START_DEADLINE_MS} ms:\n${clean()}`);
        }
        await new Promise((resolve) => {
            const timer = setTimeout(resolve, remaining);
            wake = () => {
                clearTimeout(timer);
                resolve();
            };
        });
        wake = () => {};
    }
}

// ---------------------------------------------------------------------------
// A mock upstream: OpenAI's chat completions, recorded.

/** What every answer of the mock upstream says (as interop/mock_upstream.py's). */
export const MOCK = {
    text: "Hello from the mock upstream.",
    streamPieces: ["Hello", " from", " the", " mock", " stream."],
    inputTokens: 11,
    outputTokens: 7,
};

function chatAnswer(body) {
    const model = body.model ?? "gpt-4o-mini";
    const usage = {
        prompt_tokens: MOCK.inputTokens,
        completion_tokens: MOCK.outputTokens,
        total_tokens: MOCK.inputTokens + MOCK.outputTokens,
    };
    const common = { id: "chatcmpl-mock", created: 1_700_000_000, model, system_fingerprint: "fp_mock" };
    if (!body.stream) {
        const message = { role: "assistant", content: MOCK.text, refusal: null };
        const choice = { index: 0, message, finish_reason: "stop", logprobs: null };
        return { json: { ...common, object: "chat.completion", choices: [choice], usage } };
    }
    const chunk = (delta, finishReason = null) => ({
        ...common,
        object: "chat.completion.chunk",
        choices: [{ index: 0, delta, finish_reason: finishReason, logprobs: null }],
    });
    const events = [chunk({ role: "assistant", content: "" })];
    for (const piece of MOCK.streamPieces) events.push(chunk({ content: piece }));
    events.push(chunk({}, "stop"));
    if (body.stream_options?.include_usage) {
        events.push({ ...common, object: "chat.completion.chunk", choices: [], usage });
    }
    return { sse: [...events.map((e) => JSON.stringify(e)), "[DONE]"] };
}

/**
 * An upstream on 127.0.0.1:0 that answers `POST …/chat/completions` as
 * OpenAI does (JSON, or server-sent events when the body says `stream`) and
 * records every request: `{method, path, query, headers, body}` (headers
 * lowercased, body as text). `replyForSecret(secret, status, json)` scripts
 * the answer to requests carrying that secret as a bearer token;
 * `reset()` forgets requests and scripts.
 */
export async function startMockUpstream() {
    const requests = [];
    const scripted = new Map();
    const server = http.createServer((req, res) => {
        const parts = [];
        req.on("data", (part) => parts.push(part));
        req.on("end", () => {
            const [pathname, query = ""] = req.url.split("?", 2);
            const body = Buffer.concat(parts).toString("utf8");
            const auth = req.headers.authorization ?? "";
            const secret = auth.toLowerCase().startsWith("bearer ") ? auth.slice(7) : null;
            requests.push({ method: req.method, path: pathname, query, headers: { ...req.headers }, body, secret });
            const send = (status, json) => {
                const text = JSON.stringify(json);
                res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
                res.end(text);
            };
            if (secret !== null && scripted.has(secret)) {
                const { status, json } = scripted.get(secret);
                send(status, json);
                return;
            }
            if (req.method !== "POST" || !pathname.endsWith("/chat/completions")) {
                send(404, { error: { message: `mock upstream: no route for ${req.method} ${pathname}` } });
                return;
            }
            let parsed;
            try {
                parsed = JSON.parse(body);
            } catch {
                send(400, { error: { message: "mock upstream: body is not JSON" } });
                return;
            }
            const answer = chatAnswer(parsed);
            if (answer.json) {
                send(200, answer.json);
                return;
            }
            res.writeHead(200, { "content-type": "text/event-stream" });
            for (const data of answer.sse) res.write(`data: ${data}\n\n`);
            res.end();
        });
    });
    await new Promise((resolve, reject) => {
        server.once("error", reject);
        server.listen(0, "127.0.0.1", resolve);
    });
    const { port } = server.address();
    const close = () => server.close();
    cleanups.add(close);
    return {
        url: `http://127.0.0.1:${port}`,
        requests,
        replyForSecret: (secret, status, json) => scripted.set(secret, { status, json }),
        reset: () => {
            requests.length = 0;
            scripted.clear();
        },
        stop: async () => {
            cleanups.delete(close);
            server.closeAllConnections();
            await new Promise((resolve) => server.close(resolve));
        },
    };
}

// ---------------------------------------------------------------------------
// The SDK, recorded.

/**
 * OpenRouter's SDK as its README creates it (`new OpenRouter({apiKey,
 * serverURL})`), with an HTTPClient whose fetcher records every exchange
 * (method, url, request body, status, content type, response body) in `log`.
 * Retries are off (the SDK's default retries 5XX and connection errors with
 * backoff for up to an hour) and every call times out after 10 s. `options`
 * adds to or overrides the SDK's options (e.g. `appTitle`).
 */
export function sdkClient(adminUrl, apiKey, log, options = {}) {
    const httpClient = new HTTPClient({
        fetcher: async (input, init) => {
            const request = input instanceof Request ? input : new Request(input, init);
            const requestBody =
                request.body === null ? null : await request.clone().text();
            const response = await fetch(request);
            const responseBody = await response.clone().text();
            log.push({
                method: request.method,
                url: new URL(request.url),
                requestHeaders: Object.fromEntries(request.headers),
                requestBody,
                status: response.status,
                contentType: response.headers.get("content-type"),
                responseBody,
            });
            return response;
        },
    });
    return new OpenRouter({
        apiKey,
        serverURL: `${adminUrl}/api/v1`,
        httpClient,
        retryConfig: { strategy: "none" },
        timeoutMs: 10_000,
        ...options,
    });
}

// ---------------------------------------------------------------------------
// PostgreSQL.

function findPgBinDir() {
    const libRoot = process.env.BYOK_PG_LIB_ROOT || "/usr/lib/postgresql";
    let versions = [];
    try {
        versions = fs
            .readdirSync(libRoot)
            .filter((name) => /^\d+(\.\d+)*$/.test(name))
            .map((name) => ({
                version: name.split(".").map(Number),
                bin: path.join(libRoot, name, "bin"),
            }))
            .filter(({ bin }) => fs.existsSync(path.join(bin, "initdb")));
    } catch {
        // no such directory
    }
    versions.sort((a, b) => {
        for (let i = 0; i < Math.max(a.version.length, b.version.length); i++) {
            const d = (b.version[i] ?? 0) - (a.version[i] ?? 0);
            if (d !== 0) return d;
        }
        return 0;
    });
    let binDir = versions[0]?.bin;
    if (!binDir) {
        for (const dir of (process.env.PATH || "").split(path.delimiter)) {
            const candidate = path.join(dir || ".", "initdb");
            if (fs.existsSync(candidate)) {
                binDir = path.dirname(fs.realpathSync(candidate));
                break;
            }
        }
    }
    if (!binDir) {
        throw new Error(
            `no PostgreSQL server: no initdb in ${libRoot}/*/bin nor on PATH; ` +
                "run scripts/ensure-postgres (it installs Debian's postgresql package)",
        );
    }
    if (!fs.existsSync(path.join(binDir, "pg_ctl"))) {
        throw new Error(`${binDir} has initdb but no pg_ctl`);
    }
    return binDir;
}

function onPath(name) {
    const dirs = [...(process.env.PATH || "").split(path.delimiter), "/usr/sbin", "/usr/bin", "/sbin", "/bin"];
    for (const dir of dirs) {
        const candidate = path.join(dir || ".", name);
        if (fs.existsSync(candidate)) return candidate;
    }
    return null;
}

/** When root: the user PostgreSQL runs as, and how to switch to it. */
function findRunAs() {
    if (typeof process.getuid !== "function" || process.getuid() !== 0) return null;
    for (const user of ["postgres", "nobody"]) {
        const uid = spawnSync("id", ["-u", user], { encoding: "utf8" });
        const gid = spawnSync("id", ["-g", user], { encoding: "utf8" });
        if (uid.status !== 0 || gid.status !== 0) continue;
        const runuser = onPath("runuser");
        const setpriv = onPath("setpriv");
        const su = onPath("su");
        const ids = { user, uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
        if (runuser) return { ...ids, wrap: (program, args) => [runuser, ["-u", user, "--", program, ...args]] };
        if (setpriv) {
            return {
                ...ids,
                wrap: (program, args) => [
                    setpriv,
                    [`--reuid=${ids.uid}`, `--regid=${ids.gid}`, "--init-groups", "--", program, ...args],
                ],
            };
        }
        if (su) {
            return {
                ...ids,
                wrap: (program, args) => [su, ["-s", "/bin/sh", "-c", 'exec "$0" "$@"', "--", user, program, ...args]],
            };
        }
        throw new Error(`running as root, and none of runuser, setpriv, su exists to run PostgreSQL as ${user}`);
    }
    throw new Error("running as root, and neither a `postgres` nor a `nobody` user exists to run PostgreSQL as");
}

function traversableByOthers(dir) {
    let current = path.resolve(dir);
    for (;;) {
        try {
            if ((fs.statSync(current).mode & 0o001) === 0) return false;
        } catch {
            return false;
        }
        const parent = path.dirname(current);
        if (parent === current) return true;
        current = parent;
    }
}

class PgHost {
    constructor() {
        this.binDir = findPgBinDir();
        this.runAs = findRunAs();
        const tmp = os.tmpdir();
        this.tempBase = this.runAs === null || traversableByOthers(tmp) ? tmp : "/tmp";
    }

    /** Runs a server binary (as the server's user when root), synchronously. */
    run(program, args, cwd) {
        const full = path.join(this.binDir, program);
        const [command, argv] = this.runAs ? this.runAs.wrap(full, args) : [full, args];
        const env = { ...process.env, LC_ALL: "C" };
        for (const name of Object.keys(env)) {
            if (name.startsWith("PG")) delete env[name];
        }
        const result = spawnSync(command, argv, { cwd, env, encoding: "utf8", timeout: 120_000 });
        return {
            ok: result.status === 0,
            text:
                `$ ${command} ${argv.join(" ")}\n--- status ${result.status}${result.error ? ` (${result.error.message})` : ""}` +
                `\n--- stdout:\n${(result.stdout || "").trimEnd()}\n--- stderr:\n${(result.stderr || "").trimEnd()}`,
        };
    }

    /** Kills and removes clusters whose owning process is gone (Linux). */
    sweepOrphans() {
        if (!fs.existsSync("/proc/self")) return;
        let entries = [];
        try {
            entries = fs.readdirSync(this.tempBase);
        } catch {
            return;
        }
        for (const name of entries) {
            if (!name.startsWith(PG_DIR_PREFIX)) continue;
            const dir = path.join(this.tempBase, name);
            let owner;
            try {
                owner = fs.readFileSync(path.join(dir, PG_OWNER_FILE), "utf8").trim();
            } catch {
                continue;
            }
            if (!/^\d+$/.test(owner) || fs.existsSync(`/proc/${owner}`)) continue;
            const data = path.join(dir, "data");
            if (fs.existsSync(path.join(data, "postmaster.pid"))) {
                this.run("pg_ctl", ["-D", data, "-w", "-t", PG_CTL_TIMEOUT_SECS, "-m", "immediate", "stop"], dir);
            }
            removeDir(dir);
        }
    }
}

/**
 * A PostgreSQL server of its own: initdb into a temporary directory, start on
 * a free port of 127.0.0.1 with `trust` auth. `url` is
 * postgres://postgres@127.0.0.1:PORT/postgres; `stop()` kills it and removes
 * the directory.
 */
export async function startPostgres() {
    const host = new PgHost();
    host.sweepOrphans();
    const dir = fs.mkdtempSync(path.join(host.tempBase, PG_DIR_PREFIX));
    fs.writeFileSync(path.join(dir, PG_OWNER_FILE), String(process.pid));
    if (host.runAs) fs.chownSync(dir, host.runAs.uid, host.runAs.gid);
    const data = path.join(dir, "data");
    const log = path.join(dir, "postgres.log");
    let port = 0;

    const stopSync = () => {
        if (fs.existsSync(path.join(data, "postmaster.pid"))) {
            host.run("pg_ctl", ["-D", data, "-w", "-t", PG_CTL_TIMEOUT_SECS, "-m", "immediate", "stop"], dir);
        }
        removeDir(dir);
    };
    cleanups.add(stopSync);
    const fail = (what, detail = "") => {
        let serverLog = "";
        try {
            serverLog = fs.readFileSync(log, "utf8").slice(-8192);
        } catch {
            // no log yet
        }
        const message = `PostgreSQL in ${dir} (port ${port}): ${what}\n${detail}\n--- ${log} (last 8 KiB):\n${serverLog}`;
        cleanups.delete(stopSync);
        stopSync();
        return new Error(message);
    };

    const init = host.run(
        "initdb",
        ["-D", data, "-U", "postgres", "--auth=trust", "--no-sync", "--encoding=UTF8", "--locale=C"],
        dir,
    );
    if (!init.ok) throw fail("initdb failed", init.text);
    const socketDir = dir.length <= 90 && !dir.includes("'") ? dir : "";
    fs.appendFileSync(
        path.join(data, "postgresql.conf"),
        "\n# byok-proxy interop tests (interop/openrouter-sdk/harness.js)\n" +
            "listen_addresses = '127.0.0.1'\n" +
            `unix_socket_directories = '${socketDir}'\n` +
            "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nshared_buffers = 16MB\n",
    );

    for (let attempt = 0; attempt < PG_PORT_ATTEMPTS; attempt++) {
        port = await freePort();
        const logBefore = fs.existsSync(log) ? fs.statSync(log).size : 0;
        const start = host.run(
            "pg_ctl",
            ["-D", data, "-w", "-t", PG_CTL_TIMEOUT_SECS, "-o", `-p ${port}`, "-l", log, "start"],
            dir,
        );
        if (start.ok) {
            const deadline = Date.now() + PG_CONNECT_DEADLINE_MS;
            while (!(await canConnect(port))) {
                if (Date.now() >= deadline) throw fail(`postgres does not accept TCP on 127.0.0.1:${port}`);
                await tick(10); // a bounded poll on a condition
            }
            return {
                url: `postgres://postgres@127.0.0.1:${port}/postgres`,
                port,
                stop: async () => {
                    cleanups.delete(stopSync);
                    stopSync();
                },
            };
        }
        let newLog = "";
        try {
            newLog = fs.readFileSync(log, "utf8").slice(logBefore);
        } catch {
            // no log
        }
        const portTaken = ["Address already in use", "could not bind", "could not create any TCP/IP sockets"].some(
            (needle) => newLog.includes(needle),
        );
        if (!portTaken) throw fail("pg_ctl start failed", start.text);
    }
    throw fail(`pg_ctl start failed ${PG_PORT_ATTEMPTS} times: every chosen port was taken`);
}
