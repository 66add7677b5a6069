// A Node Socket.IO 4 server for tests/integration/test_socketio*.py, run as
// its own process: `node server.mjs [--recovery]`.  Listens on a free port
// of 127.0.0.1 and prints "listening on PORT".  The same events as
// server.py: "echo", "binary", "ask" (the server asks the client, with an
// ack), "whoami" and "bye".
//
// With --recovery, connection state recovery is on (its defaults: a
// session is kept two minutes after its connection drops).  A client whose
// auth names a `stream` (recovery.mjs) is sent "tick" 0, 1, 2... every
// 25 ms, to its socket's room, so that ticks sent while it is away are
// kept for a recovered session (without recovery, the ticks stop with the
// connection); its "up" events are recorded by stream and acknowledged,
// and "stats" answers what was recorded.
import { createServer } from "node:http";
import { Server } from "socket.io";

const recovery = process.argv.includes("--recovery");
const http = createServer();
const io = new Server(http, { serveClient: false, ...(recovery ? { connectionStateRecovery: {} } : {}) });

const TICK_MS = 25;
const tickers = new Map(); // socket id -> { n, timer }
const received = new Map(); // stream -> numbers received, in order

function stream(socket, key) {
  if (!tickers.has(socket.id)) {
    const ticker = { n: 0 };
    const id = socket.id;
    ticker.timer = setInterval(() => io.to(id).emit("tick", ticker.n++), TICK_MS);
    tickers.set(id, ticker);
  }
  if (!received.has(key)) received.set(key, []);
  socket.on("up", (n, ack) => {
    received.get(key).push(n);
    if (typeof ack === "function") ack(n);
  });
  socket.on("stats", (ack) => ack({ up: received.get(key), recovered: socket.recovered, id: socket.id }));
  socket.on("disconnect", () => {
    // Without recovery nobody will read what this socket missed.
    const ticker = tickers.get(socket.id);
    if (!recovery && ticker) {
      clearInterval(ticker.timer);
      tickers.delete(socket.id);
    }
  });
}

io.on("connection", (socket) => {
  const key = socket.handshake.auth?.stream;
  if (typeof key === "string") stream(socket, key);
  const seen = {
    query: new URL(socket.request.url, "http://x").search.slice(1),
    cookie: socket.handshake.headers.cookie ?? null,
    authorization: socket.handshake.headers.authorization ?? null,
    forwarded_for: socket.handshake.headers["x-forwarded-for"] ?? null,
    auth: socket.handshake.auth,
  };
  socket.on("echo", (data, ack) => {
    socket.emit("echo", data);
    if (ack) ack(data);
  });
  socket.on("binary", (data, ack) => {
    const blob = Buffer.from(data.blob).reverse();
    socket.emit("binary", { blob, n: data.blob.length });
    if (ack) ack(data.blob.length);
  });
  socket.on("ask", async (data) => {
    const answer = await socket.timeout(10000).emitWithAck("question", data);
    socket.emit("answer", answer);
  });
  socket.on("whoami", (ack) => ack(seen));
  socket.on("bye", () => socket.disconnect(true));
});

http.listen(0, "127.0.0.1", () => {
  console.log(`listening on ${http.address().port}`);
});
process.on("SIGTERM", () => process.exit(0));
