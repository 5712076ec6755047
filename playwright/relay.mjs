// Starts the real relay binary for a test, and drives browser nodes through the SDK.
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { extname, join, normalize } from 'node:path';
import { createInterface } from 'node:readline';

import { expect } from '@playwright/test';

/**
 * The relay binary: `RELAY_BIN`, else the debug build. Read when used, not when this module is
 * imported: a script that sets `RELAY_BIN` after its imports (the bench picks the release
 * build) must get what it set.
 */
export function relayBinary() {
  return process.env.RELAY_BIN ?? 'target/debug/relay-server';
}

/** Starts a relay; resolves once it prints its READY line. */
export async function startRelay({
  httpHost = '127.0.0.1',
  httpPort = 0,
  listenHost = '127.0.0.1',
  wsPort = 0,
  identityDir,
  stateDir,
  args = [],
} = {}) {
  const dir = identityDir ?? mkdtempSync(join(tmpdir(), 'pc-relay-'));
  const pinning = stateDir ? ['--state-dir', stateDir] : [];
  const child = spawn(
    relayBinary(),
    ['--http', `${httpHost}:${httpPort}`, '--listen', `/ip4/${listenHost}/tcp/${wsPort}/ws`,
      '--identity', join(dir, 'relay.key'), '--web-root', 'dist/web', ...pinning, ...args],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn' } },
  );
  child.stderr.on('data', (d) => process.stderr.write(d));
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const ready = await new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout });
    lines.on('line', (line) => line.startsWith('READY ') && resolve(line));
    child.once('exit', (code) => reject(new Error(`relay exited with ${code} before READY`)));
  });
  const url = /http=(\S+)/.exec(ready)[1];
  const relays = /relays=(\S+)/.exec(ready)[1].split(',');
  return {
    url,
    relays,
    peerId: /peer_id=(\S+)/.exec(ready)[1],
    httpPort: Number(new URL(url).port),
    wsPort: Number(/\/tcp\/(\d+)\//.exec(relays[0])[1]),
    identityDir: dir,
    async status() {
      return (await fetch(`${url}/status`)).json();
    },
    /** Kills the process (SIGKILL: no goodbye to anyone) and waits for it to exit. */
    async kill() {
      child.kill('SIGKILL');
      await exited;
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        await exited;
      }
    },
  };
}

/**
 * Gives the tests of a file one relay: started before the first test, stopped after the last.
 * Returns a getter, since the relay exists only once `beforeAll` has run. `options` gives
 * startRelay's options (it may be async: it runs in `beforeAll`).
 */
export function useRelay(test, options = () => ({})) {
  let relay;
  test.beforeAll(async () => {
    relay = await startRelay(await options());
  });
  test.afterAll(async () => {
    await relay?.stop();
  });
  return () => relay;
}

/** Opens the sandbox page in `context` and connects its node. */
export async function openNode(context, relay, options = {}) {
  const page = await context.newPage();
  // Uncaught errors and unhandled rejections in the page; tests assert there are none.
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`${relay.url}/sandbox.html`);
  await page.waitForFunction(() => window.sdkReady === true);
  const peerId = await page.evaluate(async (opts) => {
    window.inbox = [];
    window.events = [];
    window.node = await window.PeerCompute.connect(opts);
    for (const ev of ['peer:join', 'peer:leave', 'status']) {
      window.node.on(ev, (value) => window.events.push({ ev, value }));
    }
    return window.node.peerId;
  }, options);
  return { page, peerId, errors };
}

/** Subscribes the page's node to `topic`, collecting messages into `window.inbox`. */
export async function subscribe(page, topic) {
  await page.evaluate(async (t) => {
    const off = window.node.subscribe(t, (m) => window.inbox.push(m));
    await off.ready;
  }, topic);
}

/** Waits until `page`'s node has a live connection to `peerId`. */
export async function waitForPeer(page, peerId, timeout = 20_000) {
  await expect
    .poll(() => page.evaluate(async (id) => (await window.node.peers()).some((p) => p.peerId === id && p.connected), peerId), {
      timeout,
      intervals: [50],
    })
    .toBe(true);
}

/** Polls the page node's status until `pick(status)` equals `value`. */
export async function waitForStatus(page, pick, value, timeout = 20_000) {
  await expect
    .poll(async () => pick(await page.evaluate(() => window.node.getStatus())), { timeout, intervals: [50] })
    .toEqual(value);
}

/**
 * Publishes `data` (tagged with a unique nonce) from `from` until `to` receives it. The first
 * publishes can precede gossipsub learning the other side's subscription; pubsub is
 * fire-and-forget, so the sender repeats like any app waiting for an ack would.
 */
export async function deliver(from, to, topic, data, timeout = 20_000) {
  const nonce = `${Date.now()}-${Math.random()}`;
  const deadline = Date.now() + timeout;
  while (Date.now() < deadline) {
    await from.page.evaluate(([t, d]) => window.node.publish(t, d), [topic, { ...data, nonce }]);
    try {
      return await to.page.waitForFunction(
        (n) => window.inbox.find((m) => m.data?.nonce === n),
        nonce,
        { timeout: 500, polling: 25 },
      ).then((h) => h.jsonValue());
    } catch {
      // not yet: publish again
    }
  }
  throw new Error(`message ${nonce} not delivered within ${timeout} ms`);
}

const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.wasm': 'application/wasm', '.json': 'application/json', '.css': 'text/css' };

/**
 * Serves dist/web on 127.0.0.1:`port` and nothing else: the app's files without a relay, as a
 * CDN or a service-worker cache would while the network is down. Same port, same origin: the
 * page sees the IndexedDB of the relay-served page it replaces.
 */
export async function serveStatic(port) {
  const server = createServer(async (req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url, 'http://x').pathname)).replace(/^(\.\.[/\\])+/, '');
    try {
      const body = await readFile(join('dist/web', path.endsWith('/') ? `${path}index.html` : path));
      res.writeHead(200, { 'content-type': TYPES[extname(path)] ?? 'application/octet-stream' });
      res.end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${port}`, close: () => new Promise((r) => server.close(r)) };
}

/**
 * Starts a native compute peer (`relay-server peer`) on `relay`; resolves with its peer id
 * once it prints READY. `args`: `--cpu-threads N`, `--gpu`, `--root-public-key HEX`.
 */
export async function startNativePeer(relay, args = []) {
  const child = spawn(relayBinary(), ['peer', '--relay', relay.relays[0], ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn' },
  });
  child.stderr.on('data', (d) => process.stderr.write(d));
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const ready = await new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout });
    lines.on('line', (line) => line.startsWith('READY ') && resolve(line));
    child.once('exit', (code) => reject(new Error(`relay-server peer exited with ${code} before READY`)));
  });
  return {
    peerId: /peer_id=(\S+)/.exec(ready)[1],
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        await exited;
      }
    },
  };
}
