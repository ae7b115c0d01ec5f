"""Provider facts both planes must agree on, as pure functions.

Why in ``shared/``: the API stores a Cloudonix telephony config under the domain the customer
typed, and the edge finds that config again from the domain a Cloudonix stream names. The two
only meet if both spell a domain the same way, so both call `normalise_cloudonix_domain`: the API
before it stores the config, the edge before it looks one up.
"""

from __future__ import annotations

__all__ = ["CLOUDONIX_DOMAIN_SUFFIX", "normalise_cloudonix_domain"]

# Cloudonix names a tenant's own domain ``<name>.cloudonix.net``; customers often type the bare
# name they see in the console.
CLOUDONIX_DOMAIN_SUFFIX = ".cloudonix.net"


def normalise_cloudonix_domain(raw: str) -> str:
    """The one spelling of a Cloudonix domain: trimmed, lower-cased (DNS names are
    case-insensitive), without the root's trailing dot, and a bare name without any dot completed
    to ``<name>.cloudonix.net``. ``" Acme. "`` → ``acme.cloudonix.net``; ``"Sub.Example.com."`` →
    ``sub.example.com``. An empty (or all-dots) input gives ``""``, which callers treat as
    missing."""
    domain = raw.strip().lower().rstrip(".")
    if domain and "." not in domain:
        domain += CLOUDONIX_DOMAIN_SUFFIX
    return domain
