// socket.io-client for tests/integration/test_socketio.py, run as its own
// process: `node client.mjs URL TRANSPORTS` (TRANSPORTS: "polling",
// "websocket" or "polling,websocket").  The same exchange as client.py;
// prints one JSON line with what it saw and exits 0, or exits 1.
import { io } from "socket.io-client";

const [url, transports] = process.argv.slice(2);
const timer = setTimeout(() => { console.error("timed out"); process.exit(1); }, 30000);

const socket = io(url, {
  transports: transports.split(","),
  upgrade: transports.includes(","),
  reconnection: false,
  auth: { token: "abc" },
  extraHeaders: { Cookie: "flavour=oatmeal", Authorization: "Bearer t0ken" },
});

function next(event) {
  return new Promise((resolve) => socket.once(event, resolve));
}

socket.on("question", (data, ack) => ack({ answer: data.q * 2 }));

async function main() {
  await next("connect");
  const seen = { sid: Boolean(socket.id) };
  if (transports.includes(",")) {
    // Wait for the upgrade to WebSocket before going on.
    if (socket.io.engine.transport.name !== "websocket") {
      await new Promise((resolve) => socket.io.engine.once("upgrade", resolve));
    }
  }
  const echo = next("echo");
  seen.echoAck = await socket.timeout(10000).emitWithAck("echo", { text: "héllo", n: [1, 2, 3] });
  seen.echo = await echo;
  const blob = Buffer.alloc(10240);
  for (let i = 0; i < blob.length; i++) blob[i] = i % 256;
  const binary = next("binary");
  seen.binaryAck = await socket.timeout(10000).emitWithAck("binary", { blob });
  const back = await binary;
  seen.binaryOk = Buffer.compare(Buffer.from(back.blob), Buffer.from(blob).reverse()) === 0 && back.n === blob.length;
  const answer = next("answer");
  socket.emit("ask", { q: 21 });
  seen.answer = await answer;
  const many = [];
  for (let i = 0; i < 50; i++) many.push(await socket.timeout(10000).emitWithAck("echo", i));
  seen.ordered = many.every((v, i) => v === i);
  seen.whoami = await socket.timeout(10000).emitWithAck("whoami");
  seen.transport = socket.io.engine.transport.name;
  const gone = next("disconnect");
  socket.emit("bye");
  seen.serverDisconnected = (await gone) === "io server disconnect";
  console.log(JSON.stringify(seen));
  clearTimeout(timer);
  socket.close();
  process.exit(0);
}

main().catch((error) => { console.error(error); process.exit(1); });
