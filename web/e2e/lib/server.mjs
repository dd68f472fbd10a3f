// Starts the real `taskflow` binary for a test file: a free port, a fresh SQLite database in a
// temporary folder, rate limits off (tests sign in many times from one address).

import { spawn } from 'node:child_process';
import { mkdtempSync, openSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

function targetDir() {
  const dir = process.env.CARGO_TARGET_DIR || 'target';
  return isAbsolute(dir) ? dir : join(repoRoot, dir);
}

/** The binary under test: $TASKFLOW_BIN, else the debug build in the cargo target folder. */
export function binaryPath() {
  return process.env.TASKFLOW_BIN || join(targetDir(), 'debug', 'taskflow');
}

/** Where screenshots go (not committed): $E2E_ARTIFACTS or <target>/e2e-artifacts. */
export function artifactsDir() {
  return process.env.E2E_ARTIFACTS || join(targetDir(), 'e2e-artifacts');
}

function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

async function waitUntilHealthy(url, server, deadlineMs) {
  const { child } = server;
  const deadline = Date.now() + deadlineMs;
  while (Date.now() < deadline) {
    if (server.spawnError) throw new Error(`cannot start ${binaryPath()}: ${server.spawnError.message}`);
    if (child.exitCode !== null) throw new Error(`taskflow exited with ${child.exitCode} before listening`);
    try {
      const response = await fetch(`${url}/healthz`);
      if (response.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`taskflow did not answer ${url}/healthz within ${deadlineMs} ms`);
}

/** A running server with a small API client for arranging test data. */
export class TestServer {
  static async start() {
    const server = new TestServer();
    server.dir = mkdtempSync(join(tmpdir(), 'taskflow-e2e-'));
    server.port = await freePort();
    server.url = `http://127.0.0.1:${server.port}`;
    await server.launch();
    return server;
  }

  async launch() {
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('TASKFLOW_') && k !== 'RUST_LOG'));
    Object.assign(env, {
      TASKFLOW_LISTEN: `127.0.0.1:${this.port}`,
      TASKFLOW_DATA_DIR: this.dir,
      TASKFLOW_DATABASE__URL: `sqlite://${join(this.dir, 'taskflow.db')}`,
      TASKFLOW_DATABASE__SQLITE_SYNCHRONOUS: 'normal',
      TASKFLOW_RATE_LIMIT__ENABLED: 'false',
      TASKFLOW_LOG__FORMAT: 'json',
      TASKFLOW_SHUTDOWN_GRACE_SECS: '2',
    });
    const log = openSync(join(this.dir, 'server.log'), 'a');
    this.child = spawn(binaryPath(), ['serve'], { cwd: this.dir, env, stdio: ['ignore', log, log] });
    this.exited = new Promise((r) => this.child.once('exit', r));
    this.spawnError = null;
    this.child.once('error', (error) => {
      this.spawnError = error;
    });
    await waitUntilHealthy(this.url, this, 30_000);
  }

  /** Stops the server (SIGTERM, then SIGKILL after 5 s). */
  async halt() {
    if (!this.child || this.child.exitCode !== null) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    await this.exited;
    clearTimeout(timer);
  }

  /** Stops the server and removes its database. */
  async stop() {
    await this.halt();
    if (!process.env.E2E_KEEP_DATA) rmSync(this.dir, { recursive: true, force: true });
  }

  /** Calls the API as `token` (or anonymously); throws on an unexpected status. */
  async api(path, { method = 'GET', body, token, ifMatch, expect } = {}) {
    const headers = {};
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (ifMatch !== undefined) headers['if-match'] = `"${ifMatch}"`;
    const response = await fetch(`${this.url}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await response.text();
    const data = text ? JSON.parse(text) : null;
    const ok = expect === undefined ? response.ok : response.status === expect;
    if (!ok) throw new Error(`${method} ${path} → ${response.status}: ${text}`);
    return { status: response.status, data, headers: response.headers };
  }

  /** Registers an account; returns `{email, password, token}`. */
  async register(prefix = 'user') {
    const email = `${prefix}-${Date.now()}-${Math.floor(Math.random() * 1e6)}@example.com`;
    const password = 'correct horse battery';
    const { data } = await this.api('/api/v1/auth/register', { method: 'POST', body: { email, password, time_zone: 'Europe/Berlin' } });
    return { email, password, token: data.access_token };
  }
}
