// The session load generator for bench/run: clients of txgateway's session
// protocol (txgateway.v1, docs/protocol.md) over WebSocket and over HTTP
// long-polling, and socket.io clients (socket.io-client 4) over WebSocket
// and over polling, for the comparison with python-socketio.  The same
// workloads as bench/load.mjs, and the same output: marks around the
// measured window, then one line of JSON.
//
//   node bench/session_load.mjs --client txgw|socketio --transport websocket|polling \
//       --url http://127.0.0.1:PORT/bench --mode throughput|latency|connect|hold [options]
//
// --url is the http:// URL of a routed path (txgw: the WebSocket URL is the
// same with ws://; long-polling POSTs to it with ?txgw=...), or of the
// socket.io server (its default path, /socket.io/).
//
// Modes and options are bench/load.mjs's:
//   throughput  --connections 100 --inflight 8 --duration 10 --warmup 1 --size 64
//   latency     --connections 100 --rate 2000 --duration 10 --warmup 1
//   connect     --count 5000 --concurrency 100: a session opened (txgw: the
//               hello answered by a welcome; socket.io: "connect") and then
//               ended (txgw: a close packet, answered by 4000; socket.io:
//               disconnect) before its slot is reused
//   hold        --count 5000 --concurrency 100: sessions opened and kept
//               (txgw: with heartbeats); prints {"opened": N}, then reads
//               commands on stdin: "drop" drops every connection without a
//               word (txgw WebSocket: the sessions are detached) and prints
//               {"dropped": N}; the end of stdin ends the process.
//
// Every message is acknowledged, each way:
//   - txgw: the protocol's cumulative acks, at most one per connection per
//     turn of the event loop (over polling, every poll carries the count);
//     each client keeps its unacknowledged messages (the replay buffer) and
//     drops them as acks come, and checks the order of what it receives.
//   - socket.io: every "echo" emit asks for socket.io's acknowledgement, and
//     the server's echo asks for one back (bench/socketio_server.py).
//
// As in bench/load.mjs, WebSocket writes made in one turn of the event loop
// leave in one system call per socket (cork, then uncork on the next tick),
// and long-polling requests go through one keep-alive agent.

import http from "node:http";
import { performance } from "node:perf_hooks";
import { WebSocket } from "ws";
import { io } from "socket.io-client";

const args = {};
for (let i = 2; i < process.argv.length; i += 2) {
  args[process.argv[i].replace(/^--/, "")] = process.argv[i + 1];
}
const mode = args.mode ?? "throughput";
const clientKind = args.client ?? "txgw";
const transport = args.transport ?? "websocket";
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
  ? warmup + duration + 60 : mode === "hold" ? 3600 : 240));

if (!url) {
  console.error("session_load.mjs: --url is required");
  process.exit(2);
}
if (!["txgw", "socketio"].includes(clientKind) || !["websocket", "polling"].includes(transport)) {
  console.error("session_load.mjs: --client txgw|socketio, --transport websocket|polling");
  process.exit(2);
}

const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity, keepAliveMsecs: 1000 });
let errors = 0;
let unexpectedCloses = 0;
let finished = false;
let lastError = null;

function mark(event) {
  process.stdout.write(JSON.stringify({ event }) + "\n");
}

function emit(result) {
  const polling = clientKind === "txgw" && transport === "polling" ? { requests } : {};
  process.stdout.write(JSON.stringify({
    mode, client: clientKind, transport, errors, unexpectedCloses, ...polling,
    ...(lastError ? { lastError } : {}), ...result,
  }) + "\n");
}

function failed(error) {
  errors++;
  lastError = String(error?.message ?? error).slice(0, 200);
}

const deadline = setTimeout(() => {
  if (!finished) {
    emit({ timedOut: true });
    process.exit(1);
  }
}, timeout * 1000);
deadline.unref();

// A text message of `size` characters that starts with a number.
function payload(n) {
  const head = `${n} `;
  return head + "x".repeat(Math.max(0, size - head.length));
}

// The number at the start of a payload (a Buffer from `offset`, or a string).
function leadingNumber(data, offset = 0) {
  let n = 0;
  if (typeof data === "string") {
    for (let i = offset; i < data.length; i++) {
      const c = data.charCodeAt(i);
      if (c < 48 || c > 57) break;
      n = n * 10 + (c - 48);
    }
    return n;
  }
  for (let i = offset; i < data.length; i++) {
    const c = data[i];
    if (c < 48 || c > 57) break;
    n = n * 10 + (c - 48);
  }
  return n;
}

// Work left for the end of this turn of the event loop (acks, uncorking,
// long-polling sends): one flush per client per turn.
let due = [];
function flushDue() {
  const list = due;
  due = [];
  for (const client of list) {
    client.scheduled = false;
    client.flush();
  }
}
function schedule(client) {
  if (client.scheduled) return;
  client.scheduled = true;
  if (due.push(client) === 1) process.nextTick(flushDue);
}

class ProtocolError extends Error {}

// --- txgateway.v1 over WebSocket --------------------------------------------

const ACK_PREFIX = '{"t":"ack","n":';
const txWebSockets = new Set();

class TxWebSocket {
  constructor(hooks) {
    this.hooks = hooks;
    this.sent = 0; // data messages numbered
    this.acked = 0; // of those, acknowledged by the gateway
    this.replay = []; // the unacknowledged ones (the replay buffer)
    this.received = 0; // data messages accepted, in order
    this.ackSent = 0;
    this.lastSent = 0;
    this.heartbeat = 10;
    this.scheduled = false;
    this.corked = false;
    this.ended = false;
  }

  open() {
    return new Promise((resolve, reject) => {
      const wsURL = url.replace(/^http/, "ws");
      const ws = new WebSocket(wsURL, "txgateway.v1", { perMessageDeflate: false, handshakeTimeout: 30000 });
      this.ws = ws;
      this.welcomed = resolve;
      ws.on("open", () => {
        ws._socket.setNoDelay(true);
        ws.send('{"t":"hello","v":1}');
        this.lastSent = performance.now();
      });
      ws.on("message", (data, isBinary) => {
        try {
          this.received_(data, isBinary);
        } catch (error) {
          failed(error);
          ws.terminate();
        }
      });
      ws.on("error", (error) => {
        if (!this.sid) reject(error);
        else failed(error);
      });
      ws.on("close", (code) => {
        txWebSockets.delete(this);
        if (!this.sid) reject(new Error(`closed with ${code} before the welcome`));
        const onClosed = this.onClosed;
        if (onClosed) onClosed(code);
        else if (!finished && !this.dropped) unexpectedCloses++;
      });
    });
  }

  received_(data, isBinary) {
    if (!isBinary && data[0] === 0x7b) {
      this.control(JSON.parse(data));
      return;
    }
    let seq = 0;
    let i = 0;
    for (; i < 20 && i < data.length; i++) {
      const c = data[i];
      if (c === 0x3a) break;
      if (c < 48 || c > 57) throw new ProtocolError("a data packet starts with its number");
      seq = seq * 10 + (c - 48);
    }
    if (data[i] !== 0x3a || seq < 1) throw new ProtocolError("a data packet starts with its number and ':'");
    if (seq > this.received + 1) throw new ProtocolError(`data packet ${seq} before ${this.received + 1}`);
    schedule(this); // acknowledge (duplicates too)
    if (seq <= this.received) return;
    this.received = seq;
    this.hooks.onEcho(this, leadingNumber(data, i + 1));
  }

  control(packet) {
    switch (packet.t) {
      case "ack": {
        const n = packet.n;
        if (n > this.sent) throw new ProtocolError(`acknowledged ${n}, only ${this.sent} sent`);
        if (n > this.acked) {
          this.replay.splice(0, n - this.acked);
          this.acked = n;
        }
        break;
      }
      case "welcome":
        this.sid = packet.sid;
        this.heartbeat = packet.heartbeat;
        txWebSockets.add(this);
        this.welcomed();
        break;
      case "close":
        // The backend ended the session: acknowledge what came (flush).
        this.ended = true;
        schedule(this);
        break;
      default:
        throw new ProtocolError(`unexpected packet ${packet.t}`);
    }
  }

  cork() {
    if (!this.corked) {
      this.corked = true;
      this.ws._socket.cork();
      schedule(this);
    }
  }

  send(text) {
    const seq = ++this.sent;
    const message = `${seq}:${text}`;
    this.replay.push(message);
    this.cork();
    this.ws.send(message);
  }

  flush() {
    if (this.ws.readyState !== WebSocket.OPEN) return;
    if (this.received > this.ackSent) {
      this.ackSent = this.received;
      this.ws.send(ACK_PREFIX + this.received + "}");
    }
    this.lastSent = performance.now();
    if (this.corked) {
      this.corked = false;
      this.ws._socket.uncork();
    }
  }

  // A heartbeat: an ack after `heartbeat` seconds of sending nothing.
  beat(now) {
    if (now - this.lastSent >= this.heartbeat * 500 && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(ACK_PREFIX + this.received + "}");
      this.ackSent = this.received;
      this.lastSent = now;
    }
  }

  // End the session: once everything sent is acknowledged, a close packet;
  // the gateway answers with a 4000 close.
  close() {
    return new Promise((resolve) => {
      this.onClosed = (code) => {
        if (code !== 4000) failed(new Error(`session closed with ${code}, not 4000`));
        resolve();
      };
      if (this.ws.readyState !== WebSocket.OPEN) return;
      this.flush();
      this.ws.send('{"t":"close","code":1000,"reason":"done"}');
    });
  }

  drop() {
    this.dropped = true;
    this.ws.terminate();
  }
}

setInterval(() => {
  const now = performance.now();
  for (const client of txWebSockets) client.beat(now);
}, 1000).unref();

// --- txgateway.v1 over long-polling -----------------------------------------

let requestNumber = 0;
const requests = { open: 0, poll: 0, send: 0 };

function post(kind, body) {
  const data = Buffer.from(JSON.stringify(body));
  const target = new URL(url);
  requests[kind]++;
  return new Promise((resolve, reject) => {
    const request = http.request({
      agent, method: "POST", host: target.hostname, port: target.port,
      path: `${target.pathname}?txgw=${kind}&n=${++requestNumber}`,
      headers: { "content-type": "text/plain", "content-length": data.length },
    }, (response) => {
      const chunks = [];
      response.on("data", (chunk) => chunks.push(chunk));
      response.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        if (response.statusCode !== 200) {
          reject(new Error(`${kind}: HTTP ${response.statusCode} ${text.slice(0, 120)}`));
          return;
        }
        try {
          const answer = JSON.parse(text);
          if (!Array.isArray(answer.packets)) throw new ProtocolError("no packets");
          resolve(answer.packets);
        } catch (error) {
          reject(error);
        }
      });
      response.on("error", reject);
    });
    request.on("error", reject);
    request.end(data);
  });
}

class TxPolling {
  constructor(hooks) {
    this.hooks = hooks;
    this.sent = 0;
    this.acked = 0;
    this.queue = []; // packets waiting for the next send
    this.replay = []; // sent, not yet acknowledged
    this.received = 0;
    this.ackSent = 0;
    this.sending = false;
    this.polling = false;
    this.ended = false;
    this.scheduled = false;
    this.onEnded = null;
  }

  async open() {
    const packets = await post("open", { t: "hello", v: 1 });
    const welcome = packets[0];
    if (!welcome || welcome.t !== "welcome") throw new ProtocolError("open: no welcome");
    this.sid = welcome.sid;
    this.secret = welcome.secret;
    this.handle(packets.slice(1));
    this.poll();
  }

  poll() {
    if (this.ended) return;
    this.polling = true;
    this.ackSent = Math.max(this.ackSent, this.received);
    post("poll", { sid: this.sid, secret: this.secret, ack: this.received }).then(
      (packets) => {
        this.polling = false;
        this.handle(packets);
        if (this.ended) this.onEnded?.();
        else this.poll();
      },
      (error) => {
        this.polling = false;
        // A poll that reaches the gateway after the session's close packet
        // is answered 404 (the session is over): not an error.
        if (!finished && !this.ended && !this.closing) failed(error);
        this.end();
        this.onEnded?.();
      },
    );
  }

  handle(packets) {
    for (const packet of packets) {
      switch (packet.t) {
        case "m": {
          const seq = packet.s;
          if (seq > this.received + 1) throw new ProtocolError(`data packet ${seq} before ${this.received + 1}`);
          if (seq <= this.received) break;
          this.received = seq;
          this.hooks.onEcho(this, leadingNumber(packet.d));
          break;
        }
        case "ack":
          this.ack(packet.n);
          break;
        case "close":
          break;
        case "closed":
          this.end();
          break;
        default:
          throw new ProtocolError(`unexpected packet ${packet.t}`);
      }
    }
  }

  ack(n) {
    if (n > this.sent) throw new ProtocolError(`acknowledged ${n}, only ${this.sent} sent`);
    if (n > this.acked) {
      this.replay.splice(0, n - this.acked);
      this.acked = n;
    }
  }

  send(text) {
    const packet = { t: "m", s: ++this.sent, d: text };
    this.replay.push(packet);
    this.queue.push(packet);
    schedule(this);
  }

  flush() {
    if (this.sending || this.ended || !this.queue.length) return;
    const packets = this.queue.splice(0, 1000);
    if (this.received > this.ackSent) {
      this.ackSent = this.received;
      packets.push({ t: "ack", n: this.received });
    }
    this.sending = true;
    post("send", { sid: this.sid, secret: this.secret, packets }).then(
      (answer) => {
        this.sending = false;
        this.handle(answer);
        if (this.queue.length) schedule(this);
        else if (this.onDrained) this.onDrained();
      },
      (error) => {
        this.sending = false;
        if (!finished) failed(error);
        this.end();
      },
    );
  }

  end() {
    this.ended = true;
    this.onEnded?.();
  }

  // End the session: a send with the close packet (once the queue is sent);
  // the gateway answers "closed" 4000, to that send and to the held poll.
  close() {
    this.closing = true;
    return new Promise((resolve) => {
      let answered = false;
      const done = () => {
        if (answered && !this.polling) resolve();
      };
      this.onEnded = done;
      const sendClose = () => {
        this.onDrained = null;
        this.sending = true;
        post("send", { sid: this.sid, secret: this.secret,
          packets: [{ t: "ack", n: this.received }, { t: "close", code: 1000, reason: "done" }] }).then(
          (answer) => {
            this.sending = false;
            answered = true;
            if (!answer.some((p) => p.t === "closed" && p.code === 4000)) {
              failed(new Error(`close answered ${JSON.stringify(answer)}`));
            }
            this.handle(answer);
            done();
          },
          (error) => {
            failed(error);
            answered = true;
            this.end();
            resolve();
          },
        );
      };
      if (this.sending || this.queue.length) this.onDrained = sendClose;
      else sendClose();
    });
  }

  drop() {
    this.ended = true;
  }
}

// --- socket.io ---------------------------------------------------------------

class SocketIOClient {
  constructor(hooks) {
    this.hooks = hooks;
    this.sent = 0;
    this.acked = 0;
    this.scheduled = false;
    this.corked = null;
  }

  open() {
    return new Promise((resolve, reject) => {
      const socket = io(url, {
        transports: [transport], upgrade: false, forceNew: true, reconnection: false,
        timeout: 30000, agent, perMessageDeflate: false,
      });
      this.socket = socket;
      socket.on("connect", () => {
        const raw = socket.io.engine.transport.ws?._socket;
        raw?.setNoDelay(true);
        resolve();
      });
      socket.on("connect_error", (error) => reject(error));
      socket.on("echo", (data, ack) => {
        this.cork();
        ack();
        this.hooks.onEcho(this, leadingNumber(data));
      });
      socket.on("disconnect", (reason) => {
        const onClosed = this.onClosed;
        if (onClosed) onClosed();
        else if (!finished && !this.dropped) {
          unexpectedCloses++;
          lastError = `socket.io disconnect: ${reason}`;
        }
      });
    });
  }

  // Over WebSocket, what is sent in one turn leaves in one write, as for
  // the other clients.
  cork() {
    if (this.corked === null) {
      const raw = this.socket.io.engine.transport.ws?._socket;
      if (raw) {
        this.corked = raw;
        raw.cork();
        schedule(this);
      } else this.corked = false;
    }
  }

  send(text) {
    this.sent++;
    this.cork();
    this.socket.emit("echo", text, () => { this.acked++; });
  }

  flush() {
    if (this.corked) this.corked.uncork();
    this.corked = null;
  }

  close() {
    return new Promise((resolve) => {
      this.onClosed = resolve;
      this.socket.disconnect();
    });
  }

  drop() {
    this.dropped = true;
    this.socket.io.engine.close();
  }
}

function makeClient(hooks) {
  if (clientKind === "socketio") return new SocketIOClient(hooks);
  return transport === "websocket" ? new TxWebSocket(hooks) : new TxPolling(hooks);
}

// --- workloads ---------------------------------------------------------------

// Open `n` sessions, at most `limit` at a time.
async function openMany(n, limit, hooks) {
  const clients = new Array(n);
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const index = next++;
      const client = makeClient(hooks);
      await client.open();
      clients[index] = client;
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, n) }, worker));
  return clients;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  const index = Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1);
  return sorted[Math.max(0, index)];
}

function dropAll(clients) {
  finished = true;
  for (const client of clients) client?.drop();
}

async function throughput() {
  const message = payload(0);
  let running = true;
  let echoes = 0;
  const clients = await openMany(connections, concurrency, {
    onEcho(client) {
      echoes++;
      if (running) client.send(message);
    },
  });
  for (const client of clients) {
    for (let i = 0; i < inflight; i++) client.send(message);
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
  const unacknowledged = clients.reduce((sum, c) => sum + (c.sent - c.acked), 0);
  dropAll(clients);
  emit({
    connections, inflight, size, seconds,
    roundTrips: counted,
    roundTripsPerSecond: counted / seconds,
    unacknowledgedAtEnd: unacknowledged,
  });
}

async function latency() {
  const total = Math.ceil(rate * (warmup + duration));
  const sentAt = new Float64Array(total);
  const latencies = new Float64Array(total);
  let received = 0;
  let measured = 0;
  const firstMeasured = Math.ceil(rate * warmup);
  const clients = await openMany(connections, concurrency, {
    onEcho(client, seq) {
      const now = performance.now();
      received++;
      if (seq >= firstMeasured && seq < total) latencies[measured++] = now - sentAt[seq];
    },
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
        const client = clients[seq % connections];
        sentAt[seq] = performance.now();
        client.send(payload(seq));
        seq++;
      }
      if (seq >= total) resolve();
      else setTimeout(tick, 1);
    };
    tick();
  });
  const sendSeconds = (performance.now() - start) / 1000;
  mark("stop");
  for (let i = 0; i < 500 && received < total; i++) await sleep(10);
  dropAll(clients);
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

async function connect() {
  const handshakes = new Float64Array(count);
  let opened = 0;
  let started = 0;
  const hooks = { onEcho() {} };
  mark("start");
  const begin = performance.now();
  const worker = async () => {
    while (started < count) {
      started++;
      const client = makeClient(hooks);
      const t0 = performance.now();
      try {
        await client.open();
      } catch (error) {
        failed(error);
        client.drop?.();
        continue;
      }
      handshakes[opened++] = performance.now() - t0;
      await client.close();
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  const seconds = (performance.now() - begin) / 1000;
  mark("stop");
  finished = true;
  const sorted = handshakes.subarray(0, opened).sort();
  emit({
    count, concurrency, opened, seconds,
    connectsPerSecond: opened / seconds,
    handshakeP50: percentile(sorted, 50),
    handshakeP99: percentile(sorted, 99),
    handshakeMax: sorted.length ? sorted[sorted.length - 1] : null,
  });
}

async function hold() {
  const begin = performance.now();
  const clients = await openMany(count, concurrency, { onEcho() {} });
  emit({ count, opened: clients.length, seconds: (performance.now() - begin) / 1000 });
  const end = () => {
    finished = true;
    process.exit(0);
  };
  let input = "";
  process.stdin.setEncoding("utf8");
  process.stdin.on("data", (chunk) => {
    input += chunk;
    let newline;
    while ((newline = input.indexOf("\n")) >= 0) {
      const command = input.slice(0, newline).trim();
      input = input.slice(newline + 1);
      if (command === "drop") {
        dropAll(clients);
        emit({ dropped: clients.length });
      }
    }
  });
  process.stdin.on("end", end);
  process.stdin.on("close", end);
  process.on("SIGTERM", end);
}

const modes = { throughput, latency, connect, hold };
if (!modes[mode]) {
  console.error(`session_load.mjs: unknown --mode ${mode}`);
  process.exit(2);
}
modes[mode]().then(
  () => { if (mode !== "hold") process.exit(0); },
  (error) => {
    emit({ failed: String(error?.message ?? error) });
    process.exit(1);
  },
);
