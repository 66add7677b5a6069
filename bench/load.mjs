// The load generator for bench/run: WebSocket clients (Node `ws`) against an
// echo server, directly or through a proxy.  Prints one line of JSON.
//
//   node bench/load.mjs --mode throughput --url ws://127.0.0.1:PORT/bench \
//       [--connections 100] [--inflight 8] [--duration 10] [--warmup 1] [--size 64]
//     N connections, W messages in flight on each: every echo is answered
//     with the next message.  Counts echoes (round trips) for D seconds
//     after a warm-up.  -> {"roundTripsPerSecond": ...}
//
//   node bench/load.mjs --mode latency --url ... [--rate 2000] [--connections 100]
//       [--duration 10] [--warmup 1]
//     Open loop: R messages/s in all, spread round-robin over N connections,
//     sent on schedule whether or not earlier echoes have come back.  Each
//     message carries its sequence number; latency is echo arrival minus
//     the moment it was sent.  -> {"p50": ms, "p90": ms, "p99": ms, "max": ms}
//
//   node bench/load.mjs --mode connect --url ... [--count 5000] [--concurrency 100]
//       [--client lean|ws]
//     C WebSocket connections, at most K at a time, each opened (full
//     handshake), then closed with a close handshake (1000) before its slot
//     is reused.  -> {"connectsPerSecond": ...}  The default "lean" client
//     does the same exchange as ws on a bare socket, at about half the CPU
//     cost (see bench/README.md); --client ws uses ws itself.
//
//   node bench/load.mjs --mode hold --url ... [--count 5000] [--concurrency 100]
//     Opens C connections and keeps them open and silent.  Prints its JSON
//     line once all are open, then waits until stdin closes (or SIGTERM).
//
// Every message is a --size byte (64) text message.  Every mode is bounded:
// --timeout (seconds, default generous for the mode) ends the run, and the
// JSON then says "timedOut": true.

import net from "node:net";
import { WebSocket } from "ws";
import { performance } from "node:perf_hooks";

const args = {};
for (let i = 2; i < process.argv.length; i += 2) {
  args[process.argv[i].replace(/^--/, "")] = process.argv[i + 1];
}
const mode = args.mode ?? "throughput";
const url = args.url;
const connections = Number(args.connections ?? 100);
const inflight = Number(args.inflight ?? 8);
const duration = Number(args.duration ?? 10);
const warmup = Number(args.warmup ?? 1);
const size = Number(args.size ?? 64);
const rate = Number(args.rate ?? 2000);
const count = Number(args.count ?? 5000);
const concurrency = Number(args.concurrency ?? 100);
const timeout = Number(args.timeout ?? (mode === "throughput" || mode === "latency"
  ? warmup + duration + 60 : mode === "hold" ? 3600 : 120));

if (!url) {
  console.error("load.mjs: --url is required");
  process.exit(2);
}

const wsOptions = { perMessageDeflate: false, handshakeTimeout: 30000 };
let errors = 0;
let unexpectedCloses = 0;
let finished = false;

// Marks the edges of the measured window, so that whoever runs this can read
// the proxy's CPU time at the same moments.
function mark(event) {
  process.stdout.write(JSON.stringify({ event }) + "\n");
}

function emit(result) {
  process.stdout.write(JSON.stringify({ mode, errors, unexpectedCloses, ...result }) + "\n");
}

const deadline = setTimeout(() => {
  if (!finished) {
    emit({ timedOut: true });
    process.exit(1);
  }
}, timeout * 1000);
deadline.unref();

// A text message of `size` bytes that starts with its sequence number.
function payload(seq) {
  const head = `${seq} `;
  return Buffer.from(head + "x".repeat(Math.max(0, size - head.length)));
}

// The sequence number at the start of an echoed payload.
function sequenceOf(data) {
  let n = 0;
  for (let i = 0; i < data.length; i++) {
    const c = data[i];
    if (c < 48 || c > 57) break;
    n = n * 10 + (c - 48);
  }
  return n;
}

// Open `n` connections, at most `limit` handshakes at a time.
function openMany(n, limit, onMessage) {
  return new Promise((resolve, reject) => {
    const sockets = [];
    let started = 0;
    let opened = 0;
    let failed = false;
    const next = () => {
      if (failed || started >= n) return;
      const index = started++;
      const ws = new WebSocket(url, wsOptions);
      ws.index = index;
      ws.on("open", () => {
        sockets[index] = ws;
        opened++;
        if (opened === n) resolve(sockets);
        else next();
      });
      ws.on("message", onMessage ? (data) => onMessage(ws, data) : () => {});
      ws.on("error", (error) => {
        errors++;
        if (!sockets[index] && !failed) {
          failed = true;
          reject(error);
        }
      });
      ws.on("close", () => {
        if (!finished) unexpectedCloses++;
      });
    };
    for (let i = 0; i < Math.min(limit, n); i++) next();
  });
}

function closeAll(sockets) {
  finished = true;
  for (const ws of sockets) ws?.terminate();
}

// Batch the frames sent in one turn of the event loop into one write per
// socket (cork now, uncork on the next tick): without this, every ws.send()
// is a system call of its own, and the load generator, not the proxy, is
// what a throughput run measures.
const corked = [];
function flushCorked() {
  for (const socket of corked) {
    socket.benchCorked = false;
    socket.uncork();
  }
  corked.length = 0;
}
function sendBatched(ws, data) {
  const socket = ws._socket;
  if (!socket.benchCorked) {
    socket.benchCorked = true;
    socket.cork();
    if (corked.push(socket) === 1) process.nextTick(flushCorked);
  }
  ws.send(data, { binary: false });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  const index = Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1);
  return sorted[Math.max(0, index)];
}

async function throughput() {
  const message = payload(0);
  let running = true;
  let echoes = 0;
  const sockets = await openMany(connections, concurrency, (ws) => {
    echoes++;
    if (running) sendBatched(ws, message);
  });
  for (const ws of sockets) {
    for (let i = 0; i < inflight; i++) sendBatched(ws, message);
  }
  await sleep(warmup * 1000);
  mark("start");
  const startCount = echoes;
  const started = performance.now();
  await sleep(duration * 1000);
  const counted = echoes - startCount;
  const seconds = (performance.now() - started) / 1000;
  mark("stop");
  running = false;
  closeAll(sockets);
  emit({
    connections, inflight, size, seconds,
    roundTrips: counted,
    roundTripsPerSecond: counted / seconds,
  });
}

async function latency() {
  const total = Math.ceil(rate * (warmup + duration));
  const sentAt = new Float64Array(total);
  const latencies = new Float64Array(total);
  let received = 0;
  let measured = 0;
  const firstMeasured = Math.ceil(rate * warmup);
  const sockets = await openMany(connections, concurrency, (ws, data) => {
    const now = performance.now();
    const seq = sequenceOf(data);
    received++;
    if (seq >= firstMeasured && seq < total) latencies[measured++] = now - sentAt[seq];
  });
  const start = performance.now();
  let seq = 0;
  let startMarked = false;
  await new Promise((resolve) => {
    const tick = () => {
      const now = performance.now();
      const due = Math.min(total, Math.floor(((now - start) / 1000) * rate) + 1);
      if (!startMarked && due > firstMeasured) {
        startMarked = true;
        mark("start");
      }
      while (seq < due) {
        const ws = sockets[seq % connections];
        sentAt[seq] = performance.now();
        ws.send(payload(seq), { binary: false });
        seq++;
      }
      if (seq >= total) resolve();
      else setTimeout(tick, 1);
    };
    tick();
  });
  const sendSeconds = (performance.now() - start) / 1000;
  mark("stop");
  // Wait for the last echoes (5 s at most).
  for (let i = 0; i < 500 && received < total; i++) await sleep(10);
  closeAll(sockets);
  const sorted = latencies.subarray(0, measured).sort();
  emit({
    connections, rate, size,
    sent: total, received, lost: total - received,
    measured,
    achievedRate: total / sendSeconds,
    p50: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    p99: percentile(sorted, 99),
    max: sorted.length ? sorted[sorted.length - 1] : null,
  });
}

// One connection of the lean client: the same RFC 6455 exchange as ws
// (handshake with a Sec-WebSocket-Key, check of the 101 and of
// Sec-WebSocket-Accept, masked close frame 1000, wait for the server's close
// frame and end of stream), written on a bare net.Socket.  It costs the load
// generator about half of what a ws client's handshake does.
const KEY = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
const CLOSE_FRAME = Buffer.from([0x88, 0x82, 0x12, 0x34, 0x56, 0x78, 0x03 ^ 0x12, 0xe8 ^ 0x34]);

function leanConnection(target, onOpen, onClose) {
  const socket = net.connect(target.port, target.hostname);
  socket.setNoDelay(true);
  let head = "";
  let open = false;
  let answered = false;
  socket.on("connect", () => socket.write(target.request));
  socket.on("data", (data) => {
    if (open) return;
    head += data.toString("latin1");
    if (head.indexOf("\r\n\r\n") < 0) return;
    const lower = head.toLowerCase();
    if (head.startsWith("HTTP/1.1 101") && lower.includes(`sec-websocket-accept: ${ACCEPT.toLowerCase()}`)) {
      open = true;
      onOpen();
      socket.write(CLOSE_FRAME);
    } else {
      errors++;
      socket.destroy();
    }
  });
  socket.on("end", () => socket.end());
  socket.on("error", () => { errors++; });
  socket.on("close", () => {
    if (answered) return;
    answered = true;
    onClose(open);
  });
}

function wsConnection(onOpen, onClose) {
  const ws = new WebSocket(url, wsOptions);
  let open = false;
  ws.on("open", () => {
    open = true;
    onOpen();
    ws.close(1000);
  });
  ws.on("error", () => { errors++; });
  ws.on("close", () => onClose(open));
}

async function connect() {
  const client = args.client ?? "lean";
  const parsed = new URL(url);
  const target = {
    hostname: parsed.hostname,
    port: Number(parsed.port || 80),
    request: Buffer.from(
      `GET ${parsed.pathname}${parsed.search} HTTP/1.1\r\nHost: ${parsed.host}\r\n` +
      `Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${KEY}\r\n` +
      `Sec-WebSocket-Version: 13\r\n\r\n`, "latin1"),
  };
  const handshakes = new Float64Array(count);
  let started = 0;
  let done = 0;
  let opened = 0;
  mark("start");
  const begin = performance.now();
  await new Promise((resolve) => {
    const next = () => {
      if (started >= count) return;
      started++;
      const t0 = performance.now();
      const onOpen = () => { handshakes[opened++] = performance.now() - t0; };
      const onClose = (wasOpen) => {
        if (!wasOpen) unexpectedCloses++;
        done++;
        if (done === count) resolve();
        else next();
      };
      if (client === "ws") wsConnection(onOpen, onClose);
      else leanConnection(target, onOpen, onClose);
    };
    for (let i = 0; i < Math.min(concurrency, count); i++) next();
  });
  const seconds = (performance.now() - begin) / 1000;
  mark("stop");
  finished = true;
  const sorted = handshakes.subarray(0, opened).sort();
  emit({
    client, count, concurrency, opened, seconds,
    connectsPerSecond: opened / seconds,
    handshakeP50: percentile(sorted, 50),
    handshakeP99: percentile(sorted, 99),
    handshakeMax: sorted.length ? sorted[sorted.length - 1] : null,
  });
}

async function hold() {
  const begin = performance.now();
  const sockets = await openMany(count, concurrency, null);
  emit({ count, opened: sockets.length, seconds: (performance.now() - begin) / 1000 });
  const end = () => {
    closeAll(sockets);
    process.exit(0);
  };
  process.stdin.on("end", end);
  process.stdin.on("close", end);
  process.stdin.resume();
  process.on("SIGTERM", end);
}

const modes = { throughput, latency, connect, hold };
if (!modes[mode]) {
  console.error(`load.mjs: unknown --mode ${mode}`);
  process.exit(2);
}
modes[mode]().then(
  () => { if (mode !== "hold") process.exit(0); },
  (error) => {
    emit({ failed: String(error?.message ?? error) });
    process.exit(1);
  },
);
