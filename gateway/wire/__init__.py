"""
The wire formats, sans-IO: HTTP/1 request and response heads (L{http1}),
WebSocket frames (L{frames}) and the client end of a WebSocket
(L{wsclient}), forwarding headers (L{forwarded}) and the session protocol's
packets (L{protocol}).  Nothing here touches a socket, a
reactor or a timer.
"""
