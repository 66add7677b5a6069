// A Node Socket.IO 4 server for tests/integration/test_socketio.py, run as
// its own process: `node server.mjs`.  Listens on a free port of 127.0.0.1
// and prints "listening on PORT".  The same events as server.py: "echo",
// "binary", "ask" (the server asks the client, with an ack), "whoami" and
// "bye".
import { createServer } from "node:http";
import { Server } from "socket.io";

const http = createServer();
const io = new Server(http, { serveClient: false });

io.on("connection", (socket) => {
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
