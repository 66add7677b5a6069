/*
 * txgateway.mjs: the JavaScript client of txgateway's session protocol as an
 * ES module.  The one implementation is txgateway.js (a classic script that
 * defines globalThis.TxGateway); this module loads it and re-exports it.
 *
 *   import {SessionClient, ClientState} from "/_gateway/txgateway.mjs";
 */
import "./txgateway.js";

const api = globalThis.TxGateway;

export const {
  SessionClient,
  ClientState,
  SessionClosed,
  SessionLost,
  SendBufferFull,
  MessageTooLarge,
  SUBPROTOCOL,
} = api;
export default api;
