#!/usr/bin/env node
// A byte bridge between network namespaces, for Chromium's loopback-only namespace: a
// unix socket on the filesystem is seen from every namespace, so two bridges carry a TCP
// connection from one namespace into another.
//
//   ip netns exec SERVER node bridge.mjs --listen unix:/tmp/x.sock --to tcp:10.200.100.1:8088
//   ip netns exec BROWSER node bridge.mjs --listen tcp:127.0.0.1:8088 --to unix:/tmp/x.sock
//
// Each accepted connection gets its own connection to --to; bytes are copied both ways
// until either side closes. At most 64 connections at a time. Prints "bridge: listening"
// once the listener is up; exits on SIGTERM/SIGINT.

import net from 'node:net';
import fs from 'node:fs';

function die(msg) {
  process.stderr.write(`bridge: ${msg}\n`);
  process.exit(2);
}

// "tcp:HOST:PORT" or "unix:PATH" as net.Server.listen / net.connect options
function endpoint(s, what) {
  if (typeof s !== 'string') die(`${what} is required`);
  if (s.startsWith('unix:') && s.length > 5) return { path: s.slice(5) };
  const m = /^tcp:(.+):(\d+)$/.exec(s);
  if (m) return { host: m[1].replace(/^\[|\]$/g, ''), port: Number(m[2]) };
  die(`${what} must be tcp:HOST:PORT or unix:PATH, not ${s}`);
}

const args = {};
for (let i = 2; i < process.argv.length; i += 2) {
  const k = process.argv[i];
  if (k !== '--listen' && k !== '--to') die(`unknown argument ${k}`);
  args[k.slice(2)] = process.argv[i + 1];
}
const listen = endpoint(args.listen, '--listen');
const to = endpoint(args.to, '--to');
if (listen.path) fs.rmSync(listen.path, { force: true });

const server = net.createServer(down => {
  const up = net.connect(to);
  const close = () => { down.destroy(); up.destroy(); };
  down.on('error', close);
  up.on('error', close);
  down.on('close', close);
  up.on('close', close);
  down.pipe(up);
  up.pipe(down);
});
server.maxConnections = 64;
server.on('error', e => die(`cannot listen on ${args.listen}: ${e.message}`));
server.listen(listen, () => process.stdout.write(`bridge: listening on ${args.listen}, to ${args.to}\n`));
const stop = () => {
  server.close();
  if (listen.path) fs.rmSync(listen.path, { force: true });
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
