"""``agera stream-token``: the token it prints is one the node accepts for that agent only."""

from __future__ import annotations

import secrets
import time
import uuid
from typing import Any

import pytest

from infra.cli import main
from shared.dynamo.repository import Repository
from shared.models import Account, Agent
from shared.stream_tokens import stream_token_problem


def test_prints_a_token_the_node_accepts(
    aws: Any, repo: Repository, capsys: pytest.CaptureFixture[str]
) -> None:
    account = Account(name="tokens", webhook_secret=secrets.token_hex(16))
    repo.put(account)
    agent = Agent(
        account_id=account.account_id, name="a", socket_url="ws://127.0.0.1:9/", require_token=True
    )
    repo.put(agent)
    assert main(["stream-token", str(agent.agent_uuid), "--ttl", "60"]) == 0
    out, err = capsys.readouterr()
    token = out.strip()
    assert (
        stream_token_problem(account.webhook_secret, agent.agent_uuid, token, time.time()) is None
    )
    assert stream_token_problem(
        account.webhook_secret, agent.agent_uuid, token, time.time() + 120
    ) == ("Token expired")
    assert account.webhook_secret not in out + err
    assert "does not require" not in err


def test_unknown_agent_and_bad_arguments_exit_2(
    aws: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["stream-token", str(uuid.uuid4())]) == 2
    assert "no agent" in capsys.readouterr().err
    assert main(["stream-token", "nope"]) == 2
    assert "not an agent UUID" in capsys.readouterr().err
    assert main(["stream-token", str(uuid.uuid4()), "--ttl", "0"]) == 2
