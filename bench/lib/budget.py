"""The node's budget (docs/performance.md), written once so that bench/rtp.py and bench/calls.py
cannot judge the same figure against two different limits."""

BUDGET_CPU_MS = 1.5  # node CPU per bridged call-second
BUDGET_PACING_P99_MS = 2.0  # at 200 calls
BUDGET_RINGING_P99_MS = 10.0  # INVITE → 180
BUDGET_ANSWER_P99_MS = 50.0  # INVITE → 200
BUDGET_LATENCY_MS = 1.0  # RTP in → bot media, p99 at 200 calls
BUDGET_BOT_TO_WIRE_P99_MS = 5.0  # bot media into an idle queue → RTP on the wire, per call
BUDGET_CLEAR_MS = 20.0  # clear → last stale RTP packet
BUDGET_STREAMS = 400  # concurrent echo streams with zero loss, on the 2-core bench box
BUDGET_MB_PER_CALL = 0.2  # node RSS per live call
