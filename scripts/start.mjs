// `npm start`: set up, build, start the relay (which serves the demo) and print the URL.
import { spawn, spawnSync } from 'node:child_process';
import { createInterface } from 'node:readline';

const run = (cmd, args, env = {}) => {
  const r = spawnSync(cmd, args, { stdio: 'inherit', env: { ...process.env, ...env } });
  if (r.status !== 0) process.exit(r.status ?? 1);
};

run('bash', ['scripts/setup.sh']);
run('bash', ['scripts/build-web.sh']);
run('cargo', ['build', '--release', '-p', 'relay-server']);

const http = process.env.PEERCOMPUTE_HTTP ?? '127.0.0.1:8080';
const ws = process.env.PEERCOMPUTE_WS ?? '/ip4/127.0.0.1/tcp/9090/ws';
const relay = spawn('target/release/relay-server', ['--http', http, '--listen', ws, '--web-root', 'dist/web'], {
  stdio: ['ignore', 'pipe', 'inherit'],
});
createInterface({ input: relay.stdout }).on('line', (line) => {
  if (line.startsWith('READY ')) {
    const url = /http=(\S+)/.exec(line)[1];
    // Listening on every interface: the page is opened at one of this machine's addresses.
    const everywhere = /^http:\/\/(0\.0\.0\.0|\[::\])/.test(url)
      ? `  (from another machine: http://<this machine's address>:${new URL(url).port}/)\n`
      : '';
    console.log(`\nPeerCompute relay is up.\n  Demo:    ${url}/\n${everywhere}  Status:  ${url}/status\n  Metrics: ${url}/metrics\n` +
      'Open the demo in two browser profiles (or a normal and a private window) to see two nodes meet.\n');
  } else {
    console.log(line);
  }
});
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => relay.kill('SIGTERM'));
relay.on('exit', (code) => process.exit(code ?? 0));
