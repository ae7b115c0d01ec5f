"""SIP status codes ↔ Q.850 cause names, for call records and `call.completed` callbacks.

Why Q.850 names: the API guide's ``hangup_cause`` speaks them (NORMAL_CLEARING, USER_BUSY...),
carriers put them in ``Reason: Q.850;cause=N`` (RFC 3326), and users compare our records with
FreeSWITCH and jambonz, which use the same names. The mapping follows RFC 3398 §8.2.6.1 (SIP
status → ISUP cause) and §7.2.4.1 (cause → status), narrowed to the causes a voice gateway sees.
"""

from __future__ import annotations

from typing import Final

__all__ = ["CAUSE_CODES", "cause_for_status", "reason_header", "status_for_cause"]

NORMAL_CLEARING: Final = "NORMAL_CLEARING"
ORIGINATOR_CANCEL: Final = "ORIGINATOR_CANCEL"

# Q.850 cause values (ITU-T Q.850 Table 1) of the names we use.
CAUSE_CODES: Final[dict[str, int]] = {
    "UNALLOCATED_NUMBER": 1,
    "NO_ROUTE_DESTINATION": 3,
    "NORMAL_CLEARING": 16,
    "USER_BUSY": 17,
    "NO_USER_RESPONSE": 18,
    "NO_ANSWER": 19,
    "CALL_REJECTED": 21,
    "NUMBER_CHANGED": 22,
    "DESTINATION_OUT_OF_ORDER": 27,
    "INVALID_NUMBER_FORMAT": 28,
    "NORMAL_UNSPECIFIED": 31,
    "NORMAL_CIRCUIT_CONGESTION": 34,
    "NORMAL_TEMPORARY_FAILURE": 41,
    "SWITCH_CONGESTION": 42,
    "BEARERCAPABILITY_NOTAVAIL": 58,
    "INCOMPATIBLE_DESTINATION": 88,
    "RECOVERY_ON_TIMER_EXPIRE": 102,
    "INTERWORKING": 127,
}
# MEDIA_TIMEOUT is FreeSWITCH's name for "no RTP any more"; Q.850 has no such cause.
# Names users know from FreeSWITCH and the API guide that have no Q.850 value of their own; the
# Reason header carries the nearest Q.850 cause.
_Q850_ALIASES: Final[dict[str, int]] = {
    "ORIGINATOR_CANCEL": CAUSE_CODES["NORMAL_CLEARING"],
    "SYSTEM_SHUTDOWN": CAUSE_CODES["NORMAL_TEMPORARY_FAILURE"],
    "MEDIA_TIMEOUT": CAUSE_CODES["RECOVERY_ON_TIMER_EXPIRE"],
}

# RFC 3398 §8.2.6.1, SIP final status → cause.
_BY_STATUS: Final[dict[int, str]] = {
    400: "INTERWORKING",
    401: "CALL_REJECTED",
    402: "CALL_REJECTED",
    403: "CALL_REJECTED",
    404: "UNALLOCATED_NUMBER",
    405: "INTERWORKING",
    406: "INTERWORKING",
    407: "CALL_REJECTED",
    408: "RECOVERY_ON_TIMER_EXPIRE",
    410: "NUMBER_CHANGED",
    413: "INTERWORKING",
    414: "INTERWORKING",
    415: "INTERWORKING",
    416: "INTERWORKING",
    420: "INTERWORKING",
    421: "INTERWORKING",
    423: "INTERWORKING",
    480: "NO_USER_RESPONSE",
    481: "INTERWORKING",
    482: "INTERWORKING",
    483: "INTERWORKING",
    484: "INVALID_NUMBER_FORMAT",
    485: "UNALLOCATED_NUMBER",
    486: "USER_BUSY",
    487: "ORIGINATOR_CANCEL",
    488: "INCOMPATIBLE_DESTINATION",
    500: "NORMAL_TEMPORARY_FAILURE",
    501: "INTERWORKING",
    502: "DESTINATION_OUT_OF_ORDER",
    503: "NORMAL_TEMPORARY_FAILURE",
    504: "RECOVERY_ON_TIMER_EXPIRE",
    505: "INTERWORKING",
    513: "INTERWORKING",
    600: "USER_BUSY",
    603: "CALL_REJECTED",
    604: "UNALLOCATED_NUMBER",
    606: "INCOMPATIBLE_DESTINATION",
}

# RFC 3398 §7.2.4.1, cause → the status we answer an INVITE with.
_STATUS_BY_CAUSE: Final[dict[str, int]] = {
    "UNALLOCATED_NUMBER": 404,
    "NO_ROUTE_DESTINATION": 404,
    "USER_BUSY": 486,
    "NO_USER_RESPONSE": 408,
    "NO_ANSWER": 480,
    "CALL_REJECTED": 603,
    "NUMBER_CHANGED": 410,
    "DESTINATION_OUT_OF_ORDER": 502,
    "INVALID_NUMBER_FORMAT": 484,
    "NORMAL_CIRCUIT_CONGESTION": 503,
    "NORMAL_TEMPORARY_FAILURE": 503,
    "SWITCH_CONGESTION": 503,
    "INCOMPATIBLE_DESTINATION": 488,
    "RECOVERY_ON_TIMER_EXPIRE": 504,
    "SYSTEM_SHUTDOWN": 503,
}


def cause_for_status(status: int) -> str:
    """The cause name a failed INVITE's final status stands for."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if 400 <= status < 500:
        return "INTERWORKING"
    if 500 <= status < 600:
        return "NORMAL_TEMPORARY_FAILURE"
    return "NORMAL_UNSPECIFIED"


def status_for_cause(cause: str) -> int:
    """The final status to reject an INVITE with for ``cause`` (480 when nothing fits)."""
    return _STATUS_BY_CAUSE.get(cause, 480)


def reason_header(cause: str, text: str | None = None) -> tuple[str, str]:
    """A ``Reason: Q.850;cause=N;text="..."`` header (RFC 3326) for BYE, CANCEL and rejections."""
    code = CAUSE_CODES.get(cause) or _Q850_ALIASES.get(cause, CAUSE_CODES["NORMAL_UNSPECIFIED"])
    label = (text or cause).replace("\\", "").replace('"', "'")
    return ("Reason", f'Q.850;cause={code};text="{label}"')
