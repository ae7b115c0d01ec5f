"""Which node this process is: an id that survives a restart, and a run id that does not.

Why stable: the node id names the node's command queue (``{node_queue_prefix}{node_id}``) and is
stamped on every call it owns. A node that came back under a new id after a crash or a deploy
would leave its old queue behind and start a new one; under its old id it takes its queue back.
Why a run id as well: a node restarted under the same id heartbeats again at once, so the id alone
cannot tell the reaper (functions/workers/reaper.py) that the calls of the run that died are gone.
Each process start draws a new ``run_id``; the EdgeNode item and every call the run takes carry it.

Where the id comes from, first match wins:

1. ``AGERA_NODE_ID_FROM_IMDS=true``: the EC2 instance id, read from IMDSv2 (PUT a session token,
   GET ``meta-data/instance-id``), one short timeout per request. Off by default so a laptop or a
   test never sends a packet to 169.254.169.254. When IMDS does not answer, a warning, and the
   next source: a node that cannot learn its instance id still starts.
2. ``AGERA_NODE_ID``.
3. A generated id kept in ``{state_dir}/node-id-<sip port>`` (one file per SIP port, since a port
   is what two nodes on one host cannot share). Only a node with a control plane and a fixed SIP
   port keeps one: a standalone SIP node has no queue to keep, and a node on port 0 (tests) has
   no address to be known by, so both get a fresh id and write nothing.

With ``AGERA_MEDIA_WORKERS=N`` the supervisor resolves the id once and hands it to the workers,
which append ``-w<index>`` (infra/edge.py), so each worker's id is distinct and just as stable.

All of this is blocking I/O (a file, at most two HTTP requests of ``IMDS_TIMEOUT_SECONDS``), done
once when the node is built, before it serves anything.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from edge_media.control.imds import IMDS_TIMEOUT_SECONDS, ImdsError, imds_get
from shared.settings import Settings

__all__ = [
    "IMDS_TIMEOUT_SECONDS",
    "NodeIdentity",
    "generated_node_id",
    "instance_id_from_imds",
    "resolve_identity",
    "state_directory",
]

logger = logging.getLogger("agera.control.identity")

# What a node id may be: it ends up in an SQS queue name (A-Z a-z 0-9 _ -), with room for the
# prefix, "-w<index>" and "-dlq" in SQS's 80 characters.
NODE_ID = re.compile(r"^[A-Za-z0-9_-]{1,48}$")
_NOT_IN_A_NAME = re.compile(r"[^A-Za-z0-9-]+")

Source = Literal["imds", "setting", "state", "generated"]


@dataclass(frozen=True)
class NodeIdentity:
    """The node id, where it came from, and this process's run id."""

    node_id: str
    source: Source
    run_id: str = field(default_factory=lambda: secrets.token_hex(8))

    @property
    def stable(self) -> bool:
        """Will the next start of this node have the same id? Then it keeps its queue."""
        return self.source != "generated"


def generated_node_id() -> str:
    """``node-<host name>-<random>``; the host name cut to what a queue name allows."""
    host = _NOT_IN_A_NAME.sub("-", socket.gethostname()).strip("-")[:24] or "host"
    return f"node-{host}-{secrets.token_hex(4)}"


def state_directory(settings: Settings) -> Path:
    """``AGERA_STATE_DIR``, else ``$XDG_STATE_HOME/agera``, else ``~/.local/state/agera``."""
    if settings.state_dir:
        return Path(settings.state_dir).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return base / "agera"


def instance_id_from_imds(base_url: str, *, timeout: float = IMDS_TIMEOUT_SECONDS) -> str | None:
    """The EC2 instance id through IMDSv2 (control/imds.py), or None when IMDS does not answer
    or answers oddly."""
    try:
        instance_id = imds_get(base_url, "instance-id", timeout=timeout)
    except ImdsError as exc:
        logger.warning("%s", exc)
        return None
    if not NODE_ID.match(instance_id):
        logger.warning("instance metadata gave an unusable instance id %r", instance_id[:64])
        return None
    return instance_id


def _state_file(settings: Settings) -> Path:
    return state_directory(settings) / f"node-id-{settings.sip_port}"


def _kept_id(settings: Settings) -> str | None:
    """The id kept in the state file, or a new one written there; None if neither works."""
    path = _state_file(settings)
    try:
        kept = path.read_text().strip()
    except FileNotFoundError:
        kept = ""
    except OSError as exc:
        logger.warning("node id file %s unreadable (%s); using a new id", path, exc)
        return None
    if NODE_ID.match(kept):
        return kept
    node_id = generated_node_id()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        partial.write_text(node_id + "\n")
        os.replace(partial, path)  # atomic: a crash never leaves half an id behind
    except OSError as exc:
        logger.warning("node id not kept in %s (%s); the next start gets a new one", path, exc)
        return None
    logger.info("new node id %s kept in %s", node_id, path)
    return node_id


def resolve_identity(settings: Settings, *, control: bool) -> NodeIdentity:
    """This node's identity (see the module docstring for the order); ``control``: whether the
    node runs with a control plane (only then is a generated id worth keeping)."""
    if settings.node_id_from_imds:
        instance_id = instance_id_from_imds(settings.imds_base_url)
        if instance_id is not None:
            return NodeIdentity(instance_id, "imds")
    if settings.node_id:
        return NodeIdentity(settings.node_id, "setting")
    if control and settings.sip_port != 0:
        kept = _kept_id(settings)
        if kept is not None:
            return NodeIdentity(kept, "state")
    return NodeIdentity(generated_node_id(), "generated")
