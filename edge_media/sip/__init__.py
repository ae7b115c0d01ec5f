"""Sans-I/O SIP stack (RFC 3261): message, headers, URIs, stream framing, SDP and digest."""
