"""Edge media node: SIP/RTP termination and the bridge from calls to bots (a long-running asyncio process)."""
