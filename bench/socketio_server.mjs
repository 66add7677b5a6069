// The Node Socket.IO comparison server for bench/run: Socket.IO 4 (npm
// `socket.io`, installed into bench/node_modules by bench/setup.sh) on Node's
// own http server, one process, with the semantics of bench/socketio_server.py:
// every "echo" event is acknowledged and sent back as an "echo" event that
// asks the client for an acknowledgement in turn, so that every message,
// each way, is acknowledged, as in txgateway's session protocol.  Nothing is
// logged.
//
//     node bench/socketio_server.mjs [--port 0] [--host 127.0.0.1]
//
// It serves WebSocket and long-polling on /socket.io/ and prints
// "listening on PORT" once it accepts connections.

import { createServer } from "node:http";
import { Server } from "socket.io";

function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

const http = createServer();
const io = new Server(http, {
  // The clients send small text messages: compression would only cost, as
  // for the python-socketio server (http_compression=False) and the other
  // servers of the comparison.
  perMessageDeflate: false,
  httpCompression: false,
  maxHttpBufferSize: 4 * 1024 * 1024,
  serveClient: false,
  // Same origin only: the load generator sends no Origin.
  cors: undefined,
});

function acknowledged() {}

io.on("connection", (socket) => {
  socket.on("echo", (data, ack) => {
    socket.emit("echo", data, acknowledged);
    if (typeof ack === "function") ack(true);
  });
});

http.listen({ host: option("host", "127.0.0.1"), port: Number(option("port", "0")), backlog: 4096 }, () => {
  console.log(`listening on ${http.address().port}`);
});

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    io.close();
    http.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  });
}
