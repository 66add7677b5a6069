// socket.io-client across a lost connection, for
// tests/integration/test_socketio_recovery.py, run as its own process:
// `node recovery.mjs URL TRANSPORTS MODE`, against server.mjs.
//
// TRANSPORTS: "polling", "websocket" or "polling,websocket" (the upgrade).
// MODE "drop": once the server's ticks flow, the client drops its own
// connection (socket.io.engine.close(), the way Socket.IO's documentation
// simulates a lost connection); "wait": something else drops it (the test
// kills the gateway node that holds the session).
//
// The client takes the server's "tick" events and emits "up" 0, 1, 2...
// every 25 ms (plain emits: while it is disconnected socket.io-client
// buffers them), reconnecting by itself.  It prints JSON lines: {"ready"}
// with its Engine.IO session id once the ticks flow (over WebSocket, for
// the upgrade), then {"done"} with what it saw once it has reconnected,
// received and sent for a second more and the server has everything it
// emitted, and exits 0; on any failure it exits 1.
import { io } from "socket.io-client";

const [url, transports, mode] = process.argv.slice(2);
const fail = (why) => { console.error(why); process.exit(1); };
const deadline = setTimeout(() => fail("timed out"), 90000);

const socket = io(url, {
  transports: transports.split(","),
  upgrade: transports.includes(","),
  auth: { stream: `s${process.pid}` },
});

const print = (line) => console.log(JSON.stringify(line));
const ticks = []; // [connection, n]
const emitted = []; // [n, connected when emitted, Date.now()]
const connections = []; // {id, recovered, at}
let connection = -1;
let disconnected = null;
let up = 0;
let ready = false;

socket.on("tick", (n) => {
  ticks.push([connection, n]);
  if (!ready && ticks.length >= 10 && (!socket.io.engine || socket.io.engine.transport.name === transports.split(",").at(-1))) {
    ready = true;
    print({ ready: socket.io.engine.id, transport: socket.io.engine.transport.name });
    if (mode === "drop") setTimeout(() => socket.io.engine.close(), 100);
  }
});

socket.on("connect", () => {
  connection += 1;
  connections.push({ id: socket.id, recovered: Boolean(socket.recovered), at: Date.now() });
  if (connection === 1) setTimeout(finish, 1000);
});

socket.on("disconnect", (reason) => {
  if (disconnected === null) disconnected = { reason, at: Date.now(), transport: socket.io.engine?.transport?.name };
});

const sender = setInterval(() => {
  emitted.push([up, socket.connected, Date.now()]);
  socket.emit("up", up++);
}, 25);

async function finish() {
  clearInterval(sender);
  const last = up - 1;
  let stats;
  for (let i = 0; i < 100; i++) {
    stats = await socket.timeout(5000).emitWithAck("stats");
    if (stats.up.includes(last)) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  print({ done: true, ticks, emitted, connections, disconnected, received: stats.up, transport: socket.io.engine.transport.name });
  clearTimeout(deadline);
  socket.close();
  process.exit(0);
}
