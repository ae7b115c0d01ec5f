"""An SDP offer/answer result turned into what the RTP layer needs.

Why here: RTP sits below SIP and knows nothing of SDP; SIP owns the conversion, once per
negotiation (answer, re-INVITE, hold, resume).
"""

from __future__ import annotations

from edge_media.rtp.session import RtpParams
from edge_media.sip.sdp_offer_answer import NegotiatedMedia

__all__ = ["rtp_params"]


def rtp_params(negotiated: NegotiatedMedia) -> RtpParams:
    return RtpParams(
        payload_type=negotiated.payload_type,
        remote_address=negotiated.remote_address,
        remote_port=negotiated.remote_port,
        sends=negotiated.direction.sends,
        dtmf_payload_type=negotiated.dtmf_payload_type,
        dtmf_receive_payload_type=negotiated.dtmf_receive_payload_type,
        remote_ptime=negotiated.remote_ptime,
    )
