"""The agent-stream endpoint: CPaaS providers (Cloudonix, Twilio) stream calls into the node.

A provider's media WebSocket is the call's caller side here, as a SIP leg is for a SIP call
(docs/architecture.md, "The media path"); the agent's driver is the bot side.
"""
