// The benchmark backend: a trivial WebSocket echo server (Node `ws`, one
// process).  Every message is sent back unchanged, text as text and binary
// as binary, so the load generator can read its own sequence numbers back.
//
//     node bench/echo_server.mjs [--port 0] [--host 127.0.0.1]
//
// Prints "listening on PORT" once it accepts connections.

import { WebSocketServer } from "ws";

function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

const server = new WebSocketServer({
  host: option("host", "127.0.0.1"),
  port: Number(option("port", "0")),
  backlog: 4096,
  perMessageDeflate: false,
  clientTracking: false,
});

// Echoes sent in one turn of the event loop leave in one write per socket
// (cork now, uncork on the next tick), not one system call per message.
const corked = [];
function flushCorked() {
  for (const socket of corked) {
    socket.benchCorked = false;
    socket.uncork();
  }
  corked.length = 0;
}

server.on("connection", (ws) => {
  const socket = ws._socket;
  ws.on("message", (data, isBinary) => {
    if (!socket.benchCorked) {
      socket.benchCorked = true;
      socket.cork();
      if (corked.push(socket) === 1) process.nextTick(flushCorked);
    }
    ws.send(data, { binary: isBinary });
  });
  ws.on("error", () => {});
});

server.on("listening", () => {
  console.log(`listening on ${server.address().port}`);
});

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => process.exit(0));
}
