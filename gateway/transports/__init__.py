"""
Client-facing transports: how bytes on a client connection reach a backend.

C{tunnel} is transparent mode: the WebSocket handshake is proxied and then
the two sockets are spliced, frames passing through undecoded.
"""
