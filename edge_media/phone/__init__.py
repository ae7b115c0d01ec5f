"""`agera call`: a test phone on the gateway's own SIP stack (dial, play, record, DTMF, hang up)."""
