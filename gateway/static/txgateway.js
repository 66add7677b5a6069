/*
 * txgateway.js: the JavaScript client of txgateway's session protocol,
 * txgateway.v1 (docs/protocol.md).  Plain modern JavaScript, no build step,
 * no dependencies.  Its names and behaviour are those of the Python client
 * (gateway/client).
 *
 * As a classic script (<script src="/_gateway/txgateway.js">) it defines
 * globalThis.TxGateway = {SessionClient, ClientState, ...};
 * /_gateway/txgateway.mjs re-exports the same objects as an ES module:
 *
 *   <script type="module">
 *     import {SessionClient, ClientState} from "/_gateway/txgateway.mjs";
 *     const client = new SessionClient("/chat", {transport: "auto"});
 *     client.onMessage((data, isBinary) => console.log("got", data));
 *     client.onState((state, detail) => {
 *       if (state === ClientState.open && detail.reset)
 *         console.log("new session:", detail.dropped, "messages were lost");
 *     });
 *     await client.connect();           // the first session is open
 *     client.send("hello");             // a string: a text message
 *     client.send(new Uint8Array([0])); // bytes: a binary message
 *     await client.whenAcknowledged();  // the gateway has both
 *     const detail = await client.close();
 *   </script>
 *
 * A SessionClient gives the application one logical session with its
 * backend that survives dropped connections: every message is delivered
 * once, in order, in both directions.  It reconnects by itself (exponential
 * backoff from initialDelay to maxDelay seconds, with full jitter), resumes
 * the session, and sends again what the gateway did not acknowledge.
 *
 * Transports (the transport option): "websocket" only; "polling" only
 * (HTTP long-polling: POST <url>?txgw=open|poll|send); or "auto", the
 * default: a WebSocket first, falling back to long-polling when one cannot be
 * opened (or gives no welcome within connectTimeout), and from long-polling
 * trying, now and then, to move the session back to a WebSocket (a probe
 * answered within upgradeTimeout, docs/protocol.md "Switching transports").
 * Those tries back off: the n-th waits between half and all of
 * min(upgradeDelay * 2**n, maxUpgradeDelay) seconds (5 s doubling to 300 s by
 * default: after 2.5-5 s, 5-10 s, 10-20 s, ..., then every 150-300 s); a
 * long-polling reconnect keeps the time drawn, and only a WebSocket that
 * works starts the schedule again.  onUpgradeScheduled(callback(delay,
 * error)) is told each try's delay (seconds from now) and why the WebSocket
 * is unavailable (the failure that made the client fall back, then that of
 * the last try).
 *
 * States (ClientState, reported by onState(callback(state, detail))):
 * "connecting" until the first session is open, "open", "reconnecting"
 * between connections (reported again at each failed attempt, with
 * detail.delay), "closed" for good.  "open" is reported again, with
 * detail.resumed, when the session moves to another transport.  detail has
 * resumed, reset, dropped, code, reason, error, delay and transport (the
 * transport of the connection that opened, or of the next attempt).  The
 * client's transport property is always that of the last state reported:
 * never one just given up, and "websocket" after a move from long-polling
 * only once the session is open on the WebSocket.
 *
 * When a session cannot be resumed (the gateway closes with 4400, 4403, 4404,
 * 4409, 4410 or 4413) the messages it did not acknowledge are lost: onState
 * is called with detail.reset true and detail.dropped the number lost, with
 * "reconnecting" at once and with "open" when the new session is open;
 * promises from whenAcknowledged() for those messages reject with
 * SessionLost.  The session ends (state "closed") when close() is called,
 * when the backend ends it (detail.code and detail.reason are the backend's),
 * on 4000, on 1009, on 4001 (taken over by another connection), or, before
 * the first session, on an HTTP 4xx answer to a long-polling request.
 * Anything else makes the client reconnect.  (Browsers do not show the HTTP
 * status of a refused WebSocket handshake, so that one is retried.)
 *
 * Callbacks are registered with onMessage, onState, onFailover and
 * onUpgradeScheduled; the old names on_message, on_state and on_failover are
 * kept as aliases for compatibility.
 *
 * Beyond the shared names: abort() closes at once, bufferedAmount is the
 * unacknowledged payload in bytes, and SessionClient.debug = true logs the
 * client's decisions with console.debug.
 *
 * Every time is in seconds, as in the Python client.  Only standard web APIs
 * are used (WebSocket, fetch, AbortController, TextEncoder, setTimeout on
 * globalThis).
 */
(function (global) {
  "use strict";

  // Loaded twice (a classic script and, through txgateway.mjs, a module):
  // keep the first, so that there is one set of classes.
  if (global.TxGateway && global.TxGateway.SessionClient) return;

  const SUBPROTOCOL = "txgateway.v1";
  const VERSION = 1;
  const MiB = 1024 * 1024;
  // A data packet is its payload preceded by at most 19 digits and a colon.
  const PACKET_OVERHEAD = 20;

  const CLOSE_ENDED = 4000;
  const CLOSE_SUPERSEDED = 4001;
  const CLOSE_TOO_BIG = 1009;
  const CLOSE_PROTOCOL_ERROR = 4400;
  const CLOSE_UNKNOWN_SESSION = 4404;
  const CLOSE_EXPIRED = 4410;
  const CLOSE_UNAVAILABLE = 4503;
  const CLOSE_REFUSED = 4502;
  const CLOSE_ORIGIN_REFUSED = 4003;
  // Codes after which a client starts a new session instead of resuming.
  const RESTART_CODES = new Set([4008, 4403, 4404, 4409, 4410, 4413]);
  // HTTP answers worth retrying even before the first session.
  const RETRYABLE_HTTP = new Set([408, 429]);
  // Bounds of one long-polling send, well within the gateway's defaults
  // (session.max_batch_messages 1000, session.max_body_bytes 4 MiB).
  const MAX_BATCH_PACKETS = 500;
  const MAX_BATCH_BYTES = MiB;

  const ClientState = Object.freeze({
    connecting: "connecting",
    open: "open",
    reconnecting: "reconnecting",
    closed: "closed",
  });

  const TRANSPORTS = ["auto", "websocket", "polling"];

  // ------------------------------------------------------------------
  // Errors.

  /** The client is closed, or closing: nothing more can be sent. */
  class SessionClosed extends Error {
    constructor(message, detail) {
      super(message);
      this.name = "SessionClosed";
      this.detail = detail || null;
    }
  }

  /** The session could not be resumed: `dropped` messages were lost. */
  class SessionLost extends Error {
    constructor(message, dropped) {
      super(message);
      this.name = "SessionLost";
      this.dropped = dropped;
    }
  }

  /** send() would take the unacknowledged messages past a bound. */
  class SendBufferFull extends Error {
    constructor(message) {
      super(message);
      this.name = "SendBufferFull";
    }
  }

  /** The message is larger than maxMessageBytes; nothing was sent. */
  class MessageTooLarge extends Error {
    constructor(message) {
      super(message);
      this.name = "MessageTooLarge";
    }
  }

  /** Something from the gateway that is not the protocol. */
  class ProtocolError extends Error {
    constructor(message) {
      super(message);
      this.name = "ProtocolError";
    }
  }

  /** A long-polling request answered with an HTTP error. */
  class HTTPError extends Error {
    constructor(status, body) {
      super(`the gateway answered HTTP ${status}`);
      this.name = "HTTPError";
      this.status = status;
      this.body = body;
    }
  }

  // ------------------------------------------------------------------
  // Helpers.

  const encoder = new TextEncoder();

  function now() {
    return Date.now() / 1000;
  }

  function setTimer(callback, seconds) {
    return global.setTimeout(callback, Math.max(0, seconds) * 1000);
  }

  function clearTimer(timer) {
    if (timer !== null && timer !== undefined) global.clearTimeout(timer);
  }

  function report(what, error) {
    if (typeof global.reportError === "function") {
      global.reportError(error);
    } else if (global.console) {
      global.console.error(`txgateway: ${what}`, error);
    }
  }

  function debug(...args) {
    if (SessionClient.debug && global.console) global.console.debug("txgateway:", ...args);
  }

  function shortId(value) {
    return value ? value.slice(0, 8) + "\u2026" : "-";
  }

  function closeError(code, reason) {
    return `closed by the gateway with ${code}` + (reason ? ` (${reason})` : "");
  }

  function toBase64(bytes) {
    if (typeof bytes.toBase64 === "function") return bytes.toBase64();
    let binary = "";
    for (let i = 0; i < bytes.length; i += 0x8000) {
      binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return global.btoa(binary);
  }

  function fromBase64(text) {
    let binary;
    try {
      binary = global.atob(text);
    } catch (e) {
      throw new ProtocolError("'b' is not valid base64");
    }
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes;
  }

  // The WebSocket and the long-polling URL of a routed path, from an
  // http(s) or ws(s) URL (relative to the page, if there is one).
  function transportURLs(url) {
    const base = global.location && global.location.href;
    let parsed;
    try {
      parsed = base ? new URL(String(url), base) : new URL(String(url));
    } catch (e) {
      throw new TypeError(`not a URL: ${url}`);
    }
    const secure = { "wss:": true, "https:": true, "ws:": false, "http:": false }[parsed.protocol];
    if (secure === undefined) {
      throw new TypeError(`an http(s) or ws(s) URL is required, not ${parsed.protocol}`);
    }
    parsed.hash = "";
    const rest = parsed.href.slice(parsed.protocol.length);
    return {
      websocket: (secure ? "wss:" : "ws:") + rest,
      http: (secure ? "https:" : "http:") + rest,
    };
  }

  // Every long-polling request has a query value of its own: a counter
  // started from the clock, so that it is not repeated after a reload.
  let requestNumber = Date.now();

  // ------------------------------------------------------------------
  // Packets (docs/protocol.md, "Packets" and "Packets in JSON").
  //
  // A decoded packet is a plain object: {t: "m", seq, data, isBinary} for a
  // data message (data a string or a Uint8Array), or the control packet's
  // own fields.

  function count(obj, key) {
    const value = obj[key];
    if (!Number.isSafeInteger(value) || value < 0) {
      throw new ProtocolError(`'${key}' must be a non-negative integer`);
    }
    return value;
  }

  function text(obj, key, limit) {
    const value = obj[key];
    if (typeof value !== "string" || value.length > (limit || 256)) {
      throw new ProtocolError(`'${key}' must be a string of at most ${limit || 256} characters`);
    }
    return value;
  }

  function number(obj, key) {
    const value = obj[key];
    if (typeof value !== "number" || !(value >= 0)) {
      throw new ProtocolError(`'${key}' must be a non-negative number`);
    }
    return value;
  }

  function packetFromJSON(obj) {
    if (obj === null || typeof obj !== "object" || Array.isArray(obj)) {
      throw new ProtocolError("a packet must be a JSON object");
    }
    switch (obj.t) {
      case "m": {
        const seq = obj.s;
        if (!Number.isSafeInteger(seq) || seq < 1) {
          throw new ProtocolError("'s' must be a sequence number >= 1");
        }
        if ("d" in obj) {
          if (typeof obj.d !== "string") throw new ProtocolError("'d' must be a string");
          return { t: "m", seq, data: obj.d, isBinary: false };
        }
        if (typeof obj.b !== "string") {
          throw new ProtocolError("a data packet needs 'd' (text) or 'b' (base64)");
        }
        return { t: "m", seq, data: fromBase64(obj.b), isBinary: true };
      }
      case "welcome":
        return {
          t: "welcome",
          sid: text(obj, "sid"),
          secret: text(obj, "secret"),
          recv: count(obj, "recv"),
          resumed: Boolean(obj.resumed),
          heartbeat: number(obj, "heartbeat"),
          grace: number(obj, "grace"),
        };
      case "ack":
        return { t: "ack", n: count(obj, "n") };
      case "close":
        return { t: "close", code: count(obj, "code"), reason: text(obj, "reason", 1024) };
      case "closed":
        return { t: "closed", code: count(obj, "code"), reason: text(obj, "reason", 1024) };
      case "probe":
        return { t: "probe" };
      case "failover":
        return { t: "failover", from: count(obj, "from"), to: count(obj, "to") };
      default:
        throw new ProtocolError(`unknown packet type ${JSON.stringify(obj.t)}`);
    }
  }

  // One WebSocket message: a control packet (JSON text) or a data packet
  // ("<seq>:<payload>", text or binary).
  function decodeMessage(message) {
    if (typeof message === "string") {
      if (message.charCodeAt(0) === 0x7b) {
        let obj;
        try {
          obj = JSON.parse(message);
        } catch (e) {
          throw new ProtocolError("control packet is not valid JSON");
        }
        const packet = packetFromJSON(obj);
        if (packet.t === "m" || packet.t === "closed") {
          throw new ProtocolError(`a '${packet.t}' packet is not sent on a WebSocket`);
        }
        return packet;
      }
      const colon = message.indexOf(":");
      if (colon <= 0 || colon > 19 || !/^[0-9]+$/.test(message.slice(0, colon))) {
        throw new ProtocolError("data packet must start with its sequence number and ':'");
      }
      return { t: "m", seq: sequence(message.slice(0, colon)), data: message.slice(colon + 1), isBinary: false };
    }
    const bytes = new Uint8Array(message);
    let colon = -1;
    for (let i = 0; i < Math.min(bytes.length, 20); i++) {
      if (bytes[i] === 0x3a) {
        colon = i;
        break;
      }
      if (bytes[i] < 0x30 || bytes[i] > 0x39) break;
    }
    if (colon <= 0) {
      throw new ProtocolError("data packet must start with its sequence number and ':'");
    }
    const digits = String.fromCharCode.apply(null, bytes.subarray(0, colon));
    return { t: "m", seq: sequence(digits), data: bytes.slice(colon + 1), isBinary: true };
  }

  function sequence(digits) {
    const seq = Number(digits);
    if (seq < 1) throw new ProtocolError("sequence numbers start at 1");
    if (!Number.isSafeInteger(seq)) throw new ProtocolError("sequence number too large");
    return seq;
  }

  function dataToJSON(message) {
    if (message.isBinary) return { t: "m", s: message.seq, b: toBase64(message.data) };
    return { t: "m", s: message.seq, d: message.data };
  }

  // ------------------------------------------------------------------
  // Sequence arithmetic (gateway/wire/protocol.py's Outbox; the Inbox is a count).

  /**
   * Exponential backoff with jitter: the n-th delay in a row is drawn from
   * uniform(bound * (1 - jitter), bound), bound = min(max, initial * 2**n).
   * Full jitter (1) for reconnects, which spreads out clients that lost the
   * same gateway; UPGRADE_JITTER for upgrades, so that no delay is shorter
   * than the one before it until the cap (a failure is remembered).
   */
  class Backoff {
    constructor(initialDelay, maxDelay, jitter) {
      this.initialDelay = initialDelay;
      this.maxDelay = maxDelay;
      this.jitter = jitter === undefined ? 1 : jitter;
      this.failures = 0;
    }

    next() {
      const bound = Math.min(this.maxDelay, this.initialDelay * 2 ** Math.min(this.failures, 64));
      this.failures += 1;
      return bound * (1 - this.jitter) + Math.random() * bound * this.jitter;
    }

    reset() {
      this.failures = 0;
    }
  }

  /** Numbers outgoing messages and keeps them until acknowledged. */
  class Outbox {
    constructor(maxMessages, maxBytes) {
      this.maxMessages = maxMessages;
      this.maxBytes = maxBytes;
      this.sent = 0;
      this.acked = 0;
      this.bytes = 0;
      this._pending = [];
      this._head = 0;
    }

    get length() {
      return this._pending.length - this._head;
    }

    room(size) {
      return this.length < this.maxMessages && this.bytes + size <= this.maxBytes;
    }

    add(data, isBinary, size) {
      if (!this.room(size)) throw new SendBufferFull("the send buffer is full");
      this.sent += 1;
      const message = { seq: this.sent, data, isBinary, size };
      this._pending.push(message);
      this.bytes += size;
      return message;
    }

    ack(n) {
      if (n > this.sent) {
        throw new ProtocolError(`acknowledged ${n} messages, only ${this.sent} were sent`);
      }
      const newly = n - this.acked;
      if (newly <= 0) return 0;
      for (let i = 0; i < newly; i++) {
        this.bytes -= this._pending[this._head].size;
        this._pending[this._head++] = undefined;
      }
      this.acked = n;
      if (this._head > 64 && this._head * 2 > this._pending.length) {
        this._pending = this._pending.slice(this._head);
        this._head = 0;
      }
      return newly;
    }

    /** The unacknowledged messages numbered `first` or later, in order. */
    *from(first) {
      let i = this._head + Math.max(0, first - this.acked - 1);
      for (; i < this._pending.length; i++) yield this._pending[i];
    }
  }

  // ------------------------------------------------------------------
  // Transports.  A link is one connection of a session: it reports to its
  // sink (the client, or an upgrade in progress) with the link itself as
  // first argument, so that events of a link given up are ignored.

  /** One WebSocket carrying txgateway.v1 packets. */
  class WebSocketLink {
    constructor(url, sink, client) {
      this.kind = "websocket";
      this.url = url;
      this.sink = sink;
      this.client = client;
      this.opened = false;
      this.closed = false;
      this.ws = null;
    }

    start() {
      let ws;
      try {
        ws = new global.WebSocket(this.url, [SUBPROTOCOL]);
      } catch (e) {
        this.closed = true;
        setTimer(() => this.sink._linkClosed(this, { error: `cannot open a WebSocket: ${e.message}` }), 0);
        return;
      }
      this.ws = ws;
      ws.binaryType = "arraybuffer";
      ws.onopen = () => {
        if (this.closed) return;
        if (ws.protocol !== SUBPROTOCOL) {
          this.close(1000);
          this.sink._linkClosed(this, { error: `the gateway did not select the ${SUBPROTOCOL} subprotocol` });
          return;
        }
        this.opened = true;
        this.sink._linkOpen(this);
      };
      ws.onmessage = (event) => {
        if (!this.closed) this.sink._linkMessages(this, [event.data]);
      };
      ws.onclose = (event) => {
        if (this.closed) return;
        this.closed = true;
        const info = { code: event.code, reason: event.reason };
        if (!this.opened) info.error = "the WebSocket did not open";
        else if (event.code === 1006) info.error = "connection lost";
        this.sink._linkClosed(this, info);
      };
      ws.onerror = () => {
        // Browsers follow with onclose; some implementations do not when
        // the connection could not be made, so a failed opening ends here.
        if (this.closed || this.opened) return;
        this.closed = true;
        try {
          ws.close();
        } catch (e) {
          // already closing
        }
        this.sink._linkClosed(this, { code: 1006, reason: "", error: "the WebSocket did not open" });
      };
    }

    decode(message) {
      return decodeMessage(message);
    }

    isWritable() {
      return this.ws !== null && !this.closed && this.ws.readyState === 1;
    }

    sendControl(packet) {
      if (!this.isWritable()) return;
      this.ws.send(JSON.stringify(packet));
      this.client._noteSent();
    }

    sendData(message) {
      if (!this.isWritable()) return;
      if (message.isBinary) {
        const prefix = encoder.encode(`${message.seq}:`);
        const frame = new Uint8Array(prefix.length + message.data.length);
        frame.set(prefix, 0);
        frame.set(message.data, prefix.length);
        this.ws.send(frame);
      } else {
        this.ws.send(`${message.seq}:${message.data}`);
      }
      this.client._noteSent();
    }

    sendAck(n) {
      this.sendControl({ t: "ack", n });
    }

    welcomed() {
      for (const message of this.client._outbox.from(1)) this.sendData(message);
    }

    /** The session ended: close the connection (onclose reports it). */
    end() {
      if (this.ws !== null && !this.closed) this.ws.close(1000, "session ended");
    }

    /** Give the connection up: nothing is reported from now on. */
    close(code, reason) {
      if (this.closed) return;
      this.closed = true;
      if (this.ws === null) return;
      try {
        if (code === 1000 || (code >= 3000 && code <= 4999)) {
          // A close reason has at most 123 bytes of UTF-8.
          const text = String(reason || "").slice(0, 40);
          this.ws.close(code, encoder.encode(text).length <= 123 ? text : "");
        } else {
          this.ws.close();
        }
      } catch (e) {
        this.ws.close();
      }
    }
  }

  /**
   * The session over HTTP long-polling: at most one poll and one send in
   * flight, every request a POST to <url>?txgw=...&n=<unique>.
   */
  class PollingLink {
    constructor(url, client) {
      this.kind = "polling";
      this.url = url;
      this.client = client;
      this.opened = false;
      this.closed = false;
      this.open = false; // welcomed: polls and sends may go
      this.polling = false; // a poll is in flight
      this.sending = false; // a send is in flight
      this.paused = false; // an upgrade waits for the requests to end
      this.ending = false; // the session ended: acknowledge, then stop
      this.sentUpTo = 0; // the last data message handed to a send
      this.ackSent = 0; // the last count told to the gateway
      this.forceAck = false;
      this.controls = [];
      this.flushTimer = null;
      this.controller = new global.AbortController();
    }

    start() {
      const hello = this.client._hello(false);
      this.ackSent = hello.recv || 0;
      this._request("open", hello).then(
        (packets) => {
          this.opened = true;
          this.client._linkMessages(this, packets);
          this._next();
        },
        (error) => this._failed(error),
      ).catch((error) => report("long-polling open", error));
    }

    decode(obj) {
      return packetFromJSON(obj);
    }

    welcomed() {
      this.open = true;
      this.sentUpTo = this.client._outbox.acked;
      // The answer's other packets are handled before the first poll goes.
    }

    sendData() {
      this._scheduleFlush();
    }

    sendControl(packet) {
      this.controls.push(packet);
      this._scheduleFlush();
    }

    sendAck(n, force) {
      if (force) this.forceAck = true;
      if (force || n > this.ackSent) this._scheduleFlush();
    }

    /** The session ended: acknowledge what arrived, then report the end. */
    end() {
      this.ending = true;
      // _next runs when the answer that carried the close is handled.
      setTimer(() => this._next(), 0);
    }

    pause() {
      this.paused = true;
      this._next();
    }

    resume() {
      this.paused = false;
      this._next();
    }

    close() {
      if (this.closed) return;
      this.closed = true;
      clearTimer(this.flushTimer);
      this.flushTimer = null;
      this.controller.abort();
    }

    _credentials() {
      return { sid: this.client._sid, secret: this.client._secret };
    }

    _next() {
      if (this.closed || !this.open) return;
      if (this.ending) {
        if (this.sending) return;
        if (this.client._accepted > this.ackSent) {
          this._flush();
          return;
        }
        this.close();
        this.client._linkClosed(this, { code: 1000, reason: "session ended" });
        return;
      }
      if (!this.paused && !this.polling) this._poll();
      this._flush();
      if (this.paused && !this.polling && !this.sending) this.client._linkDrained(this);
    }

    _poll() {
      this.polling = true;
      const ack = this.client._accepted;
      this.ackSent = Math.max(this.ackSent, ack);
      this._request("poll", Object.assign(this._credentials(), { ack })).then(
        (packets) => {
          this.polling = false;
          this.client._linkMessages(this, packets);
          this._next();
        },
        (error) => {
          this.polling = false;
          this._failed(error);
        },
      ).catch((error) => report("long-polling poll", error));
    }

    _scheduleFlush() {
      if (this.flushTimer === null && !this.closed) {
        // Coalesce what is sent in one turn of the event loop.
        this.flushTimer = setTimer(() => {
          this.flushTimer = null;
          this._flush();
        }, 0);
      }
    }

    _flush() {
      if (this.closed || !this.open || this.sending || (this.paused && !this.ending)) return;
      const packets = [];
      let bytes = 0;
      let last = this.sentUpTo;
      // Nothing but the last ack follows the end of the session.
      const data = this.ending ? [] : this.client._outbox.from(this.sentUpTo + 1);
      for (const message of data) {
        if (packets.length >= MAX_BATCH_PACKETS || (packets.length && bytes >= MAX_BATCH_BYTES)) break;
        packets.push(dataToJSON(message));
        bytes += 32 + (message.isBinary ? Math.ceil(message.size / 3) * 4 : message.size * 2);
        last = message.seq;
      }
      const accepted = this.client._accepted;
      if (accepted > this.ackSent || this.forceAck) {
        packets.push({ t: "ack", n: accepted });
      }
      if (last === this.client._outbox.sent && !this.ending) {
        while (this.controls.length && packets.length < MAX_BATCH_PACKETS + 2) {
          packets.push(this.controls.shift());
        }
      }
      if (!packets.length) return;
      this.forceAck = false;
      this.ackSent = Math.max(this.ackSent, accepted);
      this.sentUpTo = last;
      this.sending = true;
      this._request("send", Object.assign(this._credentials(), { packets })).then(
        (answer) => {
          this.sending = false;
          this.client._linkMessages(this, answer);
          this._next();
        },
        (error) => {
          this.sending = false;
          this._failed(error);
        },
      ).catch((error) => report("long-polling send", error));
    }

    _request(kind, body) {
      const url = `${this.url}${this.url.includes("?") ? "&" : "?"}txgw=${kind}&n=${++requestNumber}`;
      this.client._noteSent();
      return global.fetch(url, {
        method: "POST",
        body: JSON.stringify(body),
        headers: { "Content-Type": "text/plain" },
        cache: "no-store",
        credentials: "omit",
        signal: this.controller.signal,
      }).then(async (response) => {
        const body = await response.text();
        let obj = null;
        try {
          obj = JSON.parse(body);
        } catch (e) {
          obj = null;
        }
        if (!response.ok) throw new HTTPError(response.status, obj);
        if (obj === null || typeof obj !== "object" || !Array.isArray(obj.packets)) {
          throw new ProtocolError("a long-polling answer must be {\"packets\": [...]}");
        }
        return obj.packets;
      });
    }

    _failed(error) {
      if (this.closed) return; // given up already: aborted requests end here
      this.close();
      let info;
      if (error instanceof HTTPError) {
        const body = error.body && typeof error.body === "object" ? error.body : {};
        info = {
          status: error.status,
          code: Number.isSafeInteger(body.code) ? body.code : null,
          reason: typeof body.message === "string" ? body.message : null,
          error: error.message + (typeof body.message === "string" ? `: ${body.message}` : ""),
        };
      } else if (error instanceof ProtocolError) {
        info = { error: `protocol error: ${error.message}`, protocolError: true };
      } else {
        info = { error: `long-polling request failed: ${error && error.message}` };
      }
      this.client._linkClosed(this, info);
    }
  }

  // ------------------------------------------------------------------
  // The client.

  const DEFAULTS = {
    transport: "auto",
    maxBufferMessages: 1000,
    maxBufferBytes: 4 * MiB,
    maxMessageBytes: MiB,
    initialDelay: 0.1,
    maxDelay: 10,
    connectTimeout: 10,
    upgradeTimeout: 5,
    upgradeDelay: 5,
    maxUpgradeDelay: 300,
  };

  // Each upgrade delay is drawn from the upper half of its bound.
  const UPGRADE_JITTER = 0.5;

  function detailOf(fields) {
    return Object.freeze(Object.assign({
      resumed: false,
      reset: false,
      dropped: 0,
      code: null,
      reason: null,
      error: null,
      delay: null,
      transport: null,
    }, fields || {}));
  }

  class SessionClient {
    /**
     * @param url the http(s) or ws(s) URL of a routed path of the gateway
     *     (relative to the page's, in a browser).
     * @param options transport ("auto", "websocket" or "polling"),
     *     maxBufferMessages and maxBufferBytes (bounds of the unacknowledged
     *     messages), maxMessageBytes (bound of one data packet), initialDelay
     *     and maxDelay (reconnect backoff, seconds), connectTimeout (seconds
     *     for each connection to be welcomed, and for the gateway to end the
     *     session after close()), upgradeTimeout (seconds for a WebSocket
     *     probe to come back, in "auto" mode), upgradeDelay and
     *     maxUpgradeDelay (the backoff of the tries to move from long-polling
     *     to a WebSocket, seconds, in "auto" mode).
     */
    constructor(url, options) {
      const o = Object.assign({}, DEFAULTS);
      for (const [key, value] of Object.entries(options || {})) {
        if (!(key in DEFAULTS)) throw new TypeError(`unknown option ${key}`);
        if (value !== undefined) o[key] = value;
      }
      if (!TRANSPORTS.includes(o.transport)) {
        throw new RangeError(`transport must be one of ${TRANSPORTS.join(", ")}`);
      }
      if (!(o.maxBufferMessages >= 1 && o.maxBufferBytes >= 1)) {
        throw new RangeError("maxBufferMessages and maxBufferBytes must be positive");
      }
      if (!(o.maxMessageBytes > PACKET_OVERHEAD)) {
        throw new RangeError(`maxMessageBytes must be more than ${PACKET_OVERHEAD}`);
      }
      if (!(o.initialDelay > 0 && o.initialDelay <= o.maxDelay)) {
        throw new RangeError("0 < initialDelay <= maxDelay is required");
      }
      if (!(o.connectTimeout > 0 && o.upgradeTimeout > 0)) {
        throw new RangeError("connectTimeout and upgradeTimeout must be positive");
      }
      if (!(o.upgradeDelay > 0 && o.upgradeDelay <= o.maxUpgradeDelay)) {
        throw new RangeError("0 < upgradeDelay <= maxUpgradeDelay is required");
      }
      const urls = transportURLs(url);
      this.url = String(url);
      this._wsURL = urls.websocket;
      this._httpURL = urls.http;
      this._mode = o.transport;
      this._options = Object.freeze(o);
      this._backoff = new Backoff(o.initialDelay, o.maxDelay);
      this._upgradeBackoff = new Backoff(o.upgradeDelay, o.maxUpgradeDelay, UPGRADE_JITTER);
      this._upgradeDue = null; // when the next upgrade is due (now()), once drawn

      this._state = ClientState.connecting;
      this._detail = detailOf();
      this._started = false;
      this._everOpened = false;
      this._closing = false;

      // The session.
      this._sid = null;
      this._secret = null;
      this._accepted = 0;
      this._outbox = new Outbox(o.maxBufferMessages, o.maxBufferBytes);
      this._heartbeat = 0;
      this._pendingReset = null;
      this._remoteClose = null;

      // The current connection.
      this._link = null;
      this._transport = null;
      this._wsFailed = false; // auto: the last WebSocket did not get a welcome
      this._wsError = null; // auto: why a WebSocket is unavailable
      this._welcomed = false;
      this._closeSent = false;
      this._closePacketSent = false;
      this._lastSent = 0;
      this._lastReceived = 0;
      this._reconnectTimer = null;
      this._attemptTimer = null;
      this._ackTimer = null;
      this._idleTimer = null;
      this._deadTimer = null;
      this._closeTimer = null;
      this._upgrade = null;
      this._upgradeTimer = null;

      // The application.
      this._messageCallbacks = [];
      this._stateCallbacks = [];
      this._failoverCallbacks = [];
      this._upgradeCallbacks = [];
      this._connectWaiters = [];
      this._ackWaiters = [];
      this._closeWaiters = [];
    }

    // ----------------------------------------------------------------
    // The public API.

    /** The current ClientState. */
    get state() {
      return this._state;
    }

    /** The current session's id (null before the first welcome). */
    get sessionId() {
      return this._sid;
    }

    /**
     * "websocket" or "polling": the transport of the last state reported
     * (detail.transport): the one the session is open on, the one the next
     * attempt uses while connecting or reconnecting, the last one once
     * closed.
     */
    get transport() {
      return this._detail.transport || this._nextTransport();
    }

    /** Payload bytes sent but not yet acknowledged. */
    get bufferedAmount() {
      return this._outbox.bytes;
    }

    /**
     * Call callback(data, isBinary) for every message from the backend, in
     * order and exactly once: a string for a text message, a Uint8Array
     * for a binary one.  Returns callback.
     */
    onMessage(callback) {
      this._messageCallbacks.push(callback);
      return callback;
    }

    /** Call callback(state, detail) at every state change.  Returns callback. */
    onState(callback) {
      this._stateCallbacks.push(callback);
      return callback;
    }

    /**
     * Call callback(first, last) when the gateway reports that the session's
     * backend connection dropped and it went on with another backend without
     * sending this client's messages first..last again (a pool with
     * failover = "notify"): they may not have reached the application.
     * Returns callback.
     */
    onFailover(callback) {
      this._failoverCallbacks.push(callback);
      return callback;
    }

    /**
     * In "auto" mode, while the session is on long-polling: call
     * callback(delay, error) each time the client schedules its next try to
     * move the session to a WebSocket, delay seconds from now; error says
     * why the WebSocket is unavailable (null if not known).  A try that
     * works is reported as onState("open") with detail.transport
     * "websocket".  Returns callback.
     */
    onUpgradeScheduled(callback) {
      this._upgradeCallbacks.push(callback);
      return callback;
    }

    /** The old name of onMessage, kept for compatibility. */
    on_message(callback) {
      return this.onMessage(callback);
    }

    /** The old name of onState, kept for compatibility. */
    on_state(callback) {
      return this.onState(callback);
    }

    /** The old name of onFailover, kept for compatibility. */
    on_failover(callback) {
      return this.onFailover(callback);
    }

    /**
     * Start connecting (the first call does; later calls only wait).
     * Resolves once the first session is open; rejects with SessionClosed
     * if the client closes first.
     */
    connect() {
      if (this._state === ClientState.closed) {
        return Promise.reject(new SessionClosed("the client is closed", this._detail));
      }
      if (this._everOpened) return Promise.resolve();
      return new Promise((resolve, reject) => {
        this._connectWaiters.push({ resolve, reject });
        if (!this._started) {
          this._started = true;
          this._connectNow();
        }
      });
    }

    /**
     * Send a message: a string as a text message, an ArrayBuffer or a
     * typed array as a binary one.  It is delivered exactly once, even
     * across dropped connections; while reconnecting it waits in the send
     * buffer.  Throws SendBufferFull, MessageTooLarge, or SessionClosed.
     */
    send(payload) {
      let data;
      let isBinary;
      let size;
      if (typeof payload === "string") {
        // Lone surrogates cannot be sent as UTF-8; the WebSocket API would
        // replace them anyway.
        data = typeof payload.toWellFormed === "function" ? payload.toWellFormed() : payload;
        isBinary = false;
        size = encoder.encode(data).length;
      } else if (payload instanceof ArrayBuffer) {
        data = new Uint8Array(payload.slice(0));
        isBinary = true;
        size = data.length;
      } else if (ArrayBuffer.isView(payload)) {
        data = new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength).slice();
        isBinary = true;
        size = data.length;
      } else {
        throw new TypeError("send() takes a string, an ArrayBuffer or a typed array");
      }
      if (this._closing || this._remoteClose !== null || this._state === ClientState.closed) {
        throw new SessionClosed("the session is closed or closing", this._detail);
      }
      const packetSize = size + String(this._outbox.sent + 1).length + 1;
      if (packetSize > this._options.maxMessageBytes) {
        throw new MessageTooLarge(
          `a data packet of ${packetSize} bytes exceeds maxMessageBytes (${this._options.maxMessageBytes})`);
      }
      if (!this._outbox.room(size)) {
        throw new SendBufferFull(
          `more than ${this._options.maxBufferMessages} messages or ` +
          `${this._options.maxBufferBytes} bytes would be unacknowledged`);
      }
      const message = this._outbox.add(data, isBinary, size);
      if (this._welcomed) this._link.sendData(message);
    }

    /**
     * Resolves when everything sent so far is acknowledged by the gateway;
     * rejects with SessionLost if those messages are lost with their
     * session, or SessionClosed if the client closes first.
     */
    whenAcknowledged() {
      const target = this._outbox.sent;
      if (this._outbox.acked >= target) return Promise.resolve();
      if (this._state === ClientState.closed) {
        return Promise.reject(new SessionClosed("the client closed before acknowledgement", this._detail));
      }
      return new Promise((resolve, reject) => this._ackWaiters.push({ target, resolve, reject }));
    }

    /**
     * End the session: wait until everything sent is acknowledged
     * (reconnecting as needed), send close, and wait for the gateway to end
     * the session.  Resolves with the detail of the "closed" state.
     */
    close() {
      if (this._state === ClientState.closed) return Promise.resolve(this._detail);
      const promise = new Promise((resolve) => this._closeWaiters.push(resolve));
      if (!this._closing) {
        this._closing = true;
        debug("closing session", shortId(this._sid));
        this._abandonUpgrade("the session is closing");
        if (!this._started && this._outbox.length) {
          // Messages wait for a session: open one to deliver them.
          this._started = true;
          this._connectNow();
        }
        this._maybeFinishClose();
      }
      return promise;
    }

    /**
     * Close at once, without waiting for acknowledgements or the gateway:
     * state "closed", unacknowledged messages dropped.
     */
    abort() {
      if (this._state !== ClientState.closed) {
        this._finish({ dropped: this._outbox.length, error: "aborted by the application" });
      }
    }

    // ----------------------------------------------------------------
    // Connecting.

    _nextTransport() {
      if (this._mode !== "auto") return this._mode;
      return this._wsFailed ? "polling" : "websocket";
    }

    _connectNow() {
      this._reconnectTimer = null;
      const kind = this._nextTransport();
      const link = kind === "websocket"
        ? new WebSocketLink(this._wsURL, this, this)
        : new PollingLink(this._httpURL, this);
      this._link = link;
      this._transport = kind;
      this._welcomed = false;
      debug("connecting over", kind);
      this._attemptTimer = setTimer(() => this._attemptTimedOut(link), this._options.connectTimeout);
      link.start();
    }

    _hello(probe) {
      const hello = { t: "hello", v: VERSION };
      if (this._sid !== null) {
        hello.sid = this._sid;
        hello.secret = this._secret;
        hello.recv = this._accepted;
        if (probe) hello.probe = true;
      }
      return hello;
    }

    _attemptTimedOut(link) {
      this._attemptTimer = null;
      if (link !== this._link) return;
      const why = `no welcome within ${this._options.connectTimeout} s`;
      if (link.kind === "websocket" && this._mode === "auto") this._webSocketFailed(why);
      this._dropConnection(why);
    }

    // ----------------------------------------------------------------
    // Events of the current link.

    _linkOpen(link) {
      if (link !== this._link) {
        link.close(1000);
        return;
      }
      this._lastReceived = now();
      debug(this._sid === null ? "asking for a new session" : `resuming session ${shortId(this._sid)}`);
      link.sendControl(this._hello(false));
    }

    _linkMessages(link, messages) {
      if (link !== this._link) return;
      this._lastReceived = now();
      try {
        for (const message of messages) {
          if (link !== this._link) return; // a packet ended this link
          this._packet(link, link.decode(message));
        }
      } catch (e) {
        if (!(e instanceof ProtocolError)) throw e;
        if (global.console) global.console.warn(`txgateway: protocol error from the gateway: ${e.message}`);
        this._dropConnection(`protocol error: ${e.message}`, CLOSE_PROTOCOL_ERROR);
      }
    }

    _packet(link, packet) {
      switch (packet.t) {
        case "m":
          this._dataReceived(packet);
          break;
        case "ack":
          this._ackReceived(packet);
          break;
        case "welcome":
          this._welcomeReceived(link, packet);
          break;
        case "close":
          this._closeReceived(packet);
          break;
        case "failover":
          for (const callback of this._failoverCallbacks.slice()) {
            try {
              callback(packet.from, packet.to);
            } catch (e) {
              if (global.console) global.console.warn("txgateway: on_failover callback failed", e);
            }
          }
          break;
        case "closed":
          link.close();
          this._linkClosed(link, { code: packet.code, reason: packet.reason });
          break;
        default:
          throw new ProtocolError(`unexpected ${packet.t} packet`);
      }
    }

    _dataReceived(message) {
      if (!this._welcomed) throw new ProtocolError("data packet before welcome");
      if (this._remoteClose !== null) throw new ProtocolError("data packet after close");
      if (message.seq > this._accepted + 1) {
        throw new ProtocolError(`data packet ${message.seq} arrived before ${this._accepted + 1}`);
      }
      this._scheduleAck(); // duplicates are acknowledged too
      if (message.seq <= this._accepted) return;
      this._accepted += 1;
      for (const callback of this._messageCallbacks.slice()) {
        try {
          callback(message.data, message.isBinary);
        } catch (e) {
          report("on_message callback failed", e);
        }
      }
    }

    _ackReceived(ack) {
      if (!this._welcomed) throw new ProtocolError("ack before welcome");
      this._outbox.ack(ack.n);
      this._fireAckWaiters();
      this._maybeFinishClose();
    }

    _welcomeReceived(link, welcome) {
      if (this._welcomed) throw new ProtocolError("second welcome");
      let resumed = false;
      if (this._sid !== null) {
        if (welcome.resumed && welcome.sid === this._sid) {
          resumed = true;
        } else {
          // A new session instead of the one asked for.
          this._sessionLost(null, "the gateway started a new session");
        }
      }
      this._outbox.ack(welcome.recv);
      this._sid = welcome.sid;
      this._secret = welcome.secret;
      this._heartbeat = welcome.heartbeat;
      this._welcomed = true;
      this._everOpened = true;
      this._transport = link.kind;
      this._backoff.reset();
      clearTimer(this._attemptTimer);
      this._attemptTimer = null;
      if (link.kind === "websocket") {
        // A WebSocket that works: the upgrade schedule starts again.
        this._wsFailed = false;
        this._wsError = null;
        this._upgradeBackoff.reset();
        this._upgradeDue = null;
      }
      debug(`session ${shortId(this._sid)} ${resumed ? "resumed" : "opened"} over ${link.kind}`);
      link.welcomed();
      this._lastSent = now();
      if (this._heartbeat > 0) {
        this._idleTimer = setTimer(() => this._idleCheck(), this._heartbeat);
        this._deadTimer = setTimer(() => this._deadCheck(), this._deadTimeout());
      }
      const reset = this._pendingReset;
      this._pendingReset = null;
      const detail = reset !== null
        ? { reset: true, dropped: reset.dropped, code: reset.code, reason: reset.reason }
        : { resumed };
      detail.transport = link.kind;
      this._fireAckWaiters();
      this._setState(ClientState.open, detailOf(detail));
      if (this._state === ClientState.open && link === this._link) {
        const waiters = this._connectWaiters;
        this._connectWaiters = [];
        for (const waiter of waiters) waiter.resolve();
        this._maybeFinishClose();
        if (link.kind === "polling") this._scheduleUpgrade();
      }
    }

    _closeReceived(close) {
      if (!this._welcomed) throw new ProtocolError("close before welcome");
      debug(`session ${shortId(this._sid)} ended by the backend (${close.code})`);
      this._remoteClose = close;
      this._abandonUpgrade("the session ended");
      this._sendAck(false);
      this._link.end();
      // The connection should end now; if it does not, give it up.
      clearTimer(this._closeTimer);
      this._closeTimer = setTimer(() => {
        this._closeTimer = null;
        this._dropConnection("the connection did not end with the session");
      }, this._options.connectTimeout);
    }

    _linkClosed(link, info) {
      if (link !== this._link) return;
      const welcomed = this._welcomed;
      this._detach();
      link.close();
      if (link.kind === "websocket" && this._mode === "auto") {
        if (welcomed) {
          this._wsFailed = false; // a working WebSocket broke: resume on one first
        } else if (!(info.code >= 4000 && info.code <= 4999) && info.code !== CLOSE_TOO_BIG) {
          // No answer from the gateway: try long-polling.
          this._webSocketFailed(info.error || closeError(info.code, info.reason));
        }
      }
      if (info.status !== undefined && info.code === null) {
        // An HTTP refusal with no session close code.
        if (!this._everOpened && info.status >= 400 && info.status < 500 && !RETRYABLE_HTTP.has(info.status)) {
          this._finish({ dropped: this._outbox.length, error: info.error });
        } else {
          this._lost(null, null, info.error);
        }
        return;
      }
      this._lost(info.code === undefined ? null : info.code, info.reason || null, info.error || null);
    }

    // ----------------------------------------------------------------
    // Sending, acknowledging, heartbeats.

    _noteSent() {
      this._lastSent = now();
    }

    _scheduleAck() {
      if (this._ackTimer === null) {
        this._ackTimer = setTimer(() => {
          this._ackTimer = null;
          this._sendAck(false);
        }, 0);
      }
    }

    _sendAck(force) {
      clearTimer(this._ackTimer);
      this._ackTimer = null;
      if (this._welcomed && !this._closeSent) this._link.sendAck(this._accepted, force);
    }

    _deadTimeout() {
      return 2 * this._heartbeat + 1;
    }

    _idleCheck() {
      let remaining = this._lastSent + this._heartbeat - now();
      if (remaining <= 0) {
        this._sendAck(true);
        remaining = this._heartbeat;
      }
      this._idleTimer = setTimer(() => this._idleCheck(), remaining);
    }

    _deadCheck() {
      const timeout = this._deadTimeout();
      const remaining = this._lastReceived + timeout - now();
      if (remaining > 0) {
        this._deadTimer = setTimer(() => this._deadCheck(), remaining);
        return;
      }
      this._deadTimer = null;
      if (global.console) {
        global.console.warn(`txgateway: nothing from the gateway for ${timeout} s: reconnecting`);
      }
      this._dropConnection(`nothing received for ${timeout} s`);
    }

    _fireAckWaiters() {
      const acked = this._outbox.acked;
      const ready = this._ackWaiters.filter((w) => w.target <= acked);
      if (ready.length) {
        this._ackWaiters = this._ackWaiters.filter((w) => w.target > acked);
        for (const waiter of ready) waiter.resolve();
      }
    }

    // ----------------------------------------------------------------
    // Moving from long-polling to a WebSocket (auto mode).

    _scheduleUpgrade() {
      if (this._mode !== "auto" || this._closing || this._remoteClose !== null) return;
      if (this._upgrade !== null || this._upgradeTimer !== null) return;
      const link = this._link;
      if (link === null || link.kind !== "polling" || !this._welcomed) return;
      // A long-polling reconnect keeps the time drawn before it.
      const t = now();
      if (this._upgradeDue === null) this._upgradeDue = t + this._upgradeBackoff.next();
      const delay = Math.max(0, this._upgradeDue - t);
      this._upgradeTimer = setTimer(() => {
        this._upgradeTimer = null;
        this._upgradeDue = null;
        this._startUpgrade(link);
      }, delay);
      const why = this._wsError;
      debug(`on long-polling: WebSocket unavailable (${why || "not tried"}); next try in ${delay.toFixed(1)} s`);
      for (const callback of this._upgradeCallbacks.slice()) {
        try {
          callback(delay, why);
        } catch (e) {
          report("onUpgradeScheduled callback failed", e);
        }
      }
    }

    _webSocketFailed(why) {
      this._wsFailed = true;
      this._wsError = why || "the WebSocket did not open";
    }

    _startUpgrade(link) {
      if (link !== this._link || !this._welcomed || this._closing || this._remoteClose !== null) return;
      const upgrade = { link, ws: null, probed: false, timer: null };
      const sink = {
        _linkOpen: (ws) => {
          if (this._upgrade === upgrade) ws.sendControl(this._hello(true));
        },
        _linkMessages: (ws, messages) => this._probeMessages(upgrade, messages),
        _linkClosed: (ws, info) => this._upgradeFailed(upgrade, info.error || closeError(info.code, info.reason)),
      };
      this._upgrade = upgrade;
      upgrade.timer = setTimer(
        () => this._upgradeFailed(upgrade, `no probe answer within ${this._options.upgradeTimeout} s`),
        this._options.upgradeTimeout);
      upgrade.ws = new WebSocketLink(this._wsURL, sink, this);
      debug("probing a WebSocket");
      upgrade.ws.start();
    }

    _probeMessages(upgrade, messages) {
      if (this._upgrade !== upgrade) return;
      let packet;
      try {
        packet = decodeMessage(messages[0]);
      } catch (e) {
        this._upgradeFailed(upgrade, `protocol error: ${e.message}`);
        return;
      }
      if (packet.t !== "probe" || upgrade.probed) {
        this._upgradeFailed(upgrade, `unexpected ${packet.t} packet after a probe`);
        return;
      }
      upgrade.probed = true;
      clearTimer(upgrade.timer);
      upgrade.timer = null;
      debug("probe answered: waiting for the outstanding requests");
      // No new poll or send; _linkDrained follows once both have ended.
      upgrade.link.pause();
    }

    _linkDrained(link) {
      const upgrade = this._upgrade;
      if (upgrade === null || upgrade.link !== link || link !== this._link || !upgrade.probed) return;
      this._upgrade = null;
      const ws = upgrade.ws;
      this._detach();
      link.close();
      ws.sink = this;
      this._link = ws;
      this._transport = "websocket";
      this._welcomed = false;
      this._attemptTimer = setTimer(() => this._attemptTimedOut(ws), this._options.connectTimeout);
      debug(`moving session ${shortId(this._sid)} to a WebSocket`);
      ws.sendControl(this._hello(false));
    }

    _upgradeFailed(upgrade, why) {
      if (this._upgrade !== upgrade) return;
      this._upgrade = null;
      clearTimer(upgrade.timer);
      if (upgrade.ws !== null) upgrade.ws.close(1000);
      debug("no upgrade to a WebSocket:", why);
      if (!this._closing && this._remoteClose === null) this._wsError = why;
      if (upgrade.link === this._link) {
        upgrade.link.resume();
        this._scheduleUpgrade();
      }
    }

    _abandonUpgrade(why) {
      clearTimer(this._upgradeTimer);
      this._upgradeTimer = null;
      if (this._upgrade !== null) this._upgradeFailed(this._upgrade, why);
    }

    // ----------------------------------------------------------------
    // Losing connections and sessions.

    /** Forget the current link: its events are ignored from now on. */
    _detach() {
      const link = this._link;
      this._link = null;
      this._welcomed = false;
      this._closeSent = false;
      for (const name of ["_attemptTimer", "_ackTimer", "_idleTimer", "_deadTimer", "_closeTimer", "_upgradeTimer"]) {
        clearTimer(this[name]);
        this[name] = null;
      }
      if (this._upgrade !== null) {
        const upgrade = this._upgrade;
        this._upgrade = null;
        clearTimer(upgrade.timer);
        if (upgrade.ws !== null) upgrade.ws.close(1000);
      }
      return link;
    }

    /** Give up the current link and resume on a new one. */
    _dropConnection(error, closeCode) {
      const link = this._detach();
      if (link !== null) {
        if (link.kind === "websocket" && this._mode === "auto" && !link.opened) this._webSocketFailed(error);
        link.close(closeCode);
      }
      this._lost(null, null, error);
    }

    /**
     * The link is gone (already detached): decide, from how it ended,
     * whether to resume, start a new session, or stop.
     */
    _lost(code, reason, error) {
      if (this._state === ClientState.closed) return;
      const dropped = this._outbox.length;
      if (this._remoteClose !== null) {
        const close = this._remoteClose;
        this._finish({ dropped, code: close.code, reason: close.reason });
      } else if (code === CLOSE_ENDED) {
        this._finish({ dropped, code, reason });
      } else if (code === CLOSE_TOO_BIG) {
        this._finish({ dropped, code, reason, error: "a message was larger than the gateway accepts (1009)" });
      } else if (code === CLOSE_SUPERSEDED) {
        this._finish({
          dropped, code, reason, error: "the session was taken over by another connection (4001)",
        });
      } else if (code === CLOSE_REFUSED) {
        // The backend refused the session: retrying gets the same answer.
        this._finish({ dropped, code, reason, error: reason || "the backend refused the session (4502)" });
      } else if (code === CLOSE_ORIGIN_REFUSED) {
        // This page's origin may not use the route: nor will it later.
        this._finish({ dropped, code, reason, error: reason || "this page's origin may not connect (4003)" });
      } else if (RESTART_CODES.has(code) || code === CLOSE_PROTOCOL_ERROR) {
        if (this._sid === null) {
          this._retry({ code, reason, error: closeError(code, reason) });
        } else if (this._closing) {
          // After our close packet, "unknown" or "expired" means the gateway
          // did end the session as asked: no error.
          const ended = this._closePacketSent && (code === CLOSE_UNKNOWN_SESSION || code === CLOSE_EXPIRED);
          this._finish({ dropped, code, reason, error: ended ? null : closeError(code, reason) });
        } else {
          this._sessionLost(code, reason);
          this._retry(this._pendingReset);
        }
      } else {
        if (!error) error = code !== null ? closeError(code, reason) : "connection closed";
        this._retry({ code, reason, error });
      }
    }

    /**
     * The session cannot be resumed: drop what it did not acknowledge and
     * start afresh (the next welcome opens a new session).
     */
    _sessionLost(code, reason) {
      const dropped = this._outbox.length;
      debug(`session ${shortId(this._sid)} lost (${code}): ${dropped} unacknowledged messages dropped`);
      const previous = this._pendingReset !== null ? this._pendingReset.dropped : 0;
      this._pendingReset = {
        reset: true,
        dropped: previous + dropped,
        code,
        reason,
        error: code !== null ? closeError(code, reason) : reason,
      };
      this._sid = null;
      this._secret = null;
      this._accepted = 0;
      this._outbox = new Outbox(this._options.maxBufferMessages, this._options.maxBufferBytes);
      const waiters = this._ackWaiters;
      this._ackWaiters = [];
      for (const waiter of waiters) {
        waiter.reject(new SessionLost(`the session was lost: ${dropped} messages dropped`, dropped));
      }
    }

    _retry(detail) {
      const delay = this._backoff.next();
      this._reconnectTimer = setTimer(() => this._connectNow(), delay);
      debug(`${(detail && detail.error) || "connection lost"}; reconnecting in ${delay.toFixed(3)} s`);
      this._setState(ClientState.reconnecting,
        detailOf(Object.assign({}, detail || {}, { delay, transport: this._nextTransport() })));
    }

    // ----------------------------------------------------------------
    // Closing.

    _maybeFinishClose() {
      if (!this._closing || this._closeSent || this._remoteClose !== null) return;
      if (this._state === ClientState.closed || this._outbox.length) return;
      if (this._sid === null) {
        // No session to end (none yet, or a lost one not replaced yet).
        this._finish({});
        return;
      }
      if (this._welcomed) {
        // The last ack goes first: nothing may follow the close packet.
        if (this._ackTimer !== null) this._sendAck(false);
        this._link.sendControl({ t: "close", code: 1000, reason: "" });
        this._closeSent = true;
        this._closePacketSent = true;
        this._closeTimer = setTimer(() => {
          this._closeTimer = null;
          this._dropConnection(`the gateway did not end the session within ${this._options.connectTimeout} s`);
        }, this._options.connectTimeout);
      }
    }

    /** Stop for good: state "closed" with detail. */
    _finish(fields) {
      if (this._state === ClientState.closed) return;
      this._closing = true;
      const link = this._detach();
      if (link !== null) link.close(1000, "client closed");
      clearTimer(this._reconnectTimer);
      this._reconnectTimer = null;
      const detail = detailOf(Object.assign({ transport: this._transport }, fields));
      debug(`session ${shortId(this._sid)} closed`, detail.error || "");
      this._setState(ClientState.closed, detail);
      const error = new SessionClosed(detail.error || "the session is closed", detail);
      const connecting = this._connectWaiters;
      this._connectWaiters = [];
      for (const waiter of connecting) waiter.reject(error);
      const acks = this._ackWaiters;
      this._ackWaiters = [];
      for (const waiter of acks) waiter.reject(error);
      const closing = this._closeWaiters;
      this._closeWaiters = [];
      for (const resolve of closing) resolve(detail);
    }

    _setState(state, detail) {
      this._state = state;
      this._detail = detail;
      for (const callback of this._stateCallbacks.slice()) {
        try {
          callback(state, detail);
        } catch (e) {
          report("on_state callback failed", e);
        }
      }
    }
  }

  /** Set to true to log the client's decisions with console.debug. */
  SessionClient.debug = false;

  global.TxGateway = Object.freeze({
    SessionClient,
    ClientState,
    SessionClosed,
    SessionLost,
    SendBufferFull,
    MessageTooLarge,
    SUBPROTOCOL,
  });
})(globalThis);
