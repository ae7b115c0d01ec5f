"""Sans-I/O RTP media core: packets, G.711, RFC 4733 DTMF, receive state, RTCP and the shared pacer."""
