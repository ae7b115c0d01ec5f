"""The node's identity: IMDS, then AGERA_NODE_ID, then a kept id; a new run id every start.

IMDS is a fake IMDSv2 on 127.0.0.1 (token PUT, then the instance id with the token), reached
through ``AGERA_IMDS_BASE_URL``; nothing here sends a packet to 169.254.169.254.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from edge_media.control.identity import resolve_identity, state_directory
from edge_media.node import EdgeNode
from infra.edge import worker_environment, worker_settings
from shared.settings import Settings

INSTANCE_ID = "i-0abc1234def567890"
TOKEN = "fake-imds-token"


class FakeImds:
    """IMDSv2 as EC2 answers it: a token for a PUT, the instance id only with that token."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        imds = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                imds.requests.append(("PUT", self.path))
                ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
                if self.path == "/latest/api/token" and ttl and int(ttl) > 0:
                    self._reply(200, TOKEN)
                else:
                    self._reply(400, "")

            def do_GET(self) -> None:
                imds.requests.append(("GET", self.path))
                if self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
                    self._reply(401, "")
                elif self.path == "/latest/meta-data/instance-id":
                    self._reply(200, INSTANCE_ID)
                else:
                    self._reply(404, "")

            def _reply(self, status: int, body: str) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def imds() -> Iterator[FakeImds]:
    fake = FakeImds()
    yield fake
    fake.close()


def closed_port_url() -> str:
    """A loopback URL nothing listens on (connection refused at once)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def settings(tmp_path: Path, **values: Any) -> Settings:
    base: dict[str, Any] = {"state_dir": str(tmp_path), "sip_port": 5999}
    return Settings.load({}, **{**base, **values})


def test_imds_wins_when_enabled(tmp_path: Path, imds: FakeImds) -> None:
    chosen = resolve_identity(
        settings(tmp_path, node_id_from_imds=True, imds_base_url=imds.url, node_id="named"),
        control=True,
    )
    assert (chosen.node_id, chosen.source, chosen.stable) == (INSTANCE_ID, "imds", True)
    assert imds.requests == [
        ("PUT", "/latest/api/token"),
        ("GET", "/latest/meta-data/instance-id"),
    ]


def test_imds_is_never_asked_unless_enabled(tmp_path: Path, imds: FakeImds) -> None:
    chosen = resolve_identity(settings(tmp_path, imds_base_url=imds.url), control=True)
    assert chosen.source == "state" and imds.requests == []


def test_an_unanswering_imds_falls_back_to_the_setting(tmp_path: Path) -> None:
    chosen = resolve_identity(
        settings(tmp_path, node_id_from_imds=True, imds_base_url=closed_port_url(), node_id="n7"),
        control=True,
    )
    assert (chosen.node_id, chosen.source) == ("n7", "setting")


def test_the_setting_wins_over_the_state_file(tmp_path: Path) -> None:
    kept = resolve_identity(settings(tmp_path), control=True)
    chosen = resolve_identity(settings(tmp_path, node_id="edge-7"), control=True)
    assert kept.source == "state"
    assert (chosen.node_id, chosen.source, chosen.stable) == ("edge-7", "setting", True)


def test_the_generated_id_is_kept_across_two_nodes(tmp_path: Path) -> None:
    config = settings(tmp_path)
    first = EdgeNode(config, control=True)
    second = EdgeNode(config, control=True)
    assert first.node_id == second.node_id
    assert first.identity.source == second.identity.source == "state"
    assert first.identity.run_id != second.identity.run_id  # one run per start
    assert (tmp_path / "node-id-5999").read_text().strip() == first.node_id
    # Another SIP port is another node on this host.
    assert EdgeNode(settings(tmp_path, sip_port=5998), control=True).node_id != first.node_id


@pytest.mark.parametrize(
    ("values", "control"),
    [({}, False), ({"sip_port": 0}, True)],
    ids=["standalone", "any-port"],
)
def test_nodes_with_nothing_to_keep_get_a_fresh_id_and_write_nothing(
    tmp_path: Path, values: dict[str, Any], control: bool
) -> None:
    config = settings(tmp_path, **values)
    first, second = (resolve_identity(config, control=control) for _ in range(2))
    assert first.node_id != second.node_id
    assert (first.source, first.stable) == ("generated", False)
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_state_dir_still_starts_a_node(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    chosen = resolve_identity(settings(tmp_path, state_dir=str(blocker / "sub")), control=True)
    assert chosen.source == "generated"


def test_generated_ids_fit_a_queue_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "ip-10-0-0-1.ec2.internal.example")
    node_id = resolve_identity(settings(tmp_path), control=True).node_id
    assert node_id.startswith("node-ip-10-0-0-1-ec2-inter")
    assert all(c.isalnum() or c in "-_" for c in node_id) and len(node_id) <= 48


def test_state_directory_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert state_directory(Settings.load({})) == tmp_path / "agera"
    monkeypatch.delenv("XDG_STATE_HOME")
    assert state_directory(Settings.load({})) == Path.home() / ".local" / "state" / "agera"


def test_workers_get_distinct_ids_that_survive_a_restart(tmp_path: Path, imds: FakeImds) -> None:
    config = settings(
        tmp_path,
        media_workers=3,
        originate_queue_url="http://127.0.0.1/originate",
        events_queue_url="http://127.0.0.1/events",
    )

    def worker_ids() -> list[str]:
        env = worker_environment(config, {}, environ={})
        loaded = Settings.load(env, state_dir=str(tmp_path))
        return [worker_settings(loaded, i).node_id for i in range(3)]

    first, again = worker_ids(), worker_ids()
    base = (tmp_path / "node-id-5999").read_text().strip()
    assert first == again == [f"{base}-w0", f"{base}-w1", f"{base}-w2"]
    # On EC2 the instance id is the base; the workers never ask IMDS themselves.
    on_ec2 = config.model_copy(update={"node_id_from_imds": True, "imds_base_url": imds.url})
    env = worker_environment(on_ec2, {}, environ={})
    assert env["AGERA_NODE_ID"] == INSTANCE_ID and env["AGERA_NODE_ID_FROM_IMDS"] == "false"
    assert len(imds.requests) == 2
