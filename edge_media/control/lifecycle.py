"""Drain on scale-in: watch this instance's Auto Scaling lifecycle state, stop like SIGTERM, then
let the group terminate the instance.

How the pieces fit (infra/edge-fleet.yaml holds the hook; infra/edge.py runs this):

1. Every ``AGERA_LIFECYCLE_POLL_SECONDS`` the watcher reads ``autoscaling/target-lifecycle-state``
   from IMDSv2. When it reads ``Terminated`` (the group chose this instance, and the
   ``EC2_INSTANCE_TERMINATING`` hook is holding it in ``Terminating:Wait``), it calls
   ``request_stop`` once: the same function the SIGTERM handler calls, so a scale-in and a
   ``systemctl stop`` drain the node the same way (no new calls or originates, live calls run up
   to ``AGERA_DRAIN_SECONDS``, then hang up with SYSTEM_SHUTDOWN).
2. While the node drains, ``RecordLifecycleActionHeartbeat`` every
   ``AGERA_LIFECYCLE_HEARTBEAT_SECONDS`` keeps the hook from timing out (the template's hook
   timeout is already longer than the drain; the heartbeat covers a slow settle).
3. `finish`, called once the node has stopped, sends ``CompleteLifecycleAction`` (CONTINUE) by
   instance id. Only when the watcher saw ``Terminated``: a node stopped for another reason has no
   lifecycle action to complete.

Why a thread with the blocking boto3 client and IMDS reads: the supervisor of several media
workers is not an asyncio program, and in a single worker the event loop that paces RTP must not
wait on metadata or on AWS; the thread shares nothing with the loop but ``request_stop``, which
the caller makes thread-safe. Errors are logged and retried at the next poll; none stops the node
or the drain (if completing fails, the hook's timeout with ``DefaultResult: CONTINUE`` ends it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from edge_media.control.identity import instance_id_from_imds
from edge_media.control.imds import ImdsError, imds_get
from shared.settings import Settings

__all__ = ["LifecycleWatcher"]

logger = logging.getLogger("agera.control.lifecycle")

TERMINATED = "Terminated"
COMPLETE_RETRY_SECONDS = 3720.0  # the longest deregistration delay (3600 s), and 2 minutes


class LifecycleWatcher:
    """`start` a thread that polls; `finish` after the node stopped (completes if it must)."""

    def __init__(
        self,
        *,
        imds_base_url: str,
        group_name: str,
        hook_name: str,
        instance_id: str,
        request_stop: Callable[[], None],
        autoscaling: Any,
        poll_seconds: float = 5.0,
        heartbeat_seconds: float = 60.0,
    ) -> None:
        self.imds_base_url = imds_base_url
        self.group_name = group_name
        self.hook_name = hook_name
        self.instance_id = instance_id
        self.request_stop = request_stop
        self.autoscaling = autoscaling
        self.poll_seconds = poll_seconds
        self.heartbeat_seconds = heartbeat_seconds
        # Completing is retried (see `finish`) for longer than a deregistration can take.
        self.retry_seconds = COMPLETE_RETRY_SECONDS
        self.retry_pause = 2 * poll_seconds
        self.terminating = False  # the group scales this instance in
        self.heartbeats = 0
        self.completed = False
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, request_stop: Callable[[], None], *, autoscaling: Any = None
    ) -> LifecycleWatcher | None:
        """A watcher when the node runs in an Auto Scaling group with a hook (both names set);
        None otherwise, or (logged) when IMDS cannot name the instance."""
        if not (settings.autoscaling_group_name and settings.lifecycle_hook_name):
            return None
        instance_id = instance_id_from_imds(settings.imds_base_url)
        if instance_id is None:
            logger.error("no instance id from IMDS: scale-in will not wait for a drain")
            return None
        if autoscaling is None:
            import boto3

            autoscaling = boto3.client("autoscaling")

        return cls(
            imds_base_url=settings.imds_base_url,
            group_name=settings.autoscaling_group_name,
            hook_name=settings.lifecycle_hook_name,
            instance_id=instance_id,
            request_stop=request_stop,
            autoscaling=autoscaling,
            poll_seconds=settings.lifecycle_poll_seconds,
            heartbeat_seconds=settings.lifecycle_heartbeat_seconds,
        )

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="lifecycle", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self.terminating:
            if self._done.wait(self.poll_seconds):
                return
            try:
                state = imds_get(self.imds_base_url, "autoscaling/target-lifecycle-state")
            except ImdsError as exc:
                logger.warning("lifecycle state unreadable: %s", exc)
                continue
            if state == TERMINATED:
                self.terminating = True
                logger.warning(
                    "scale-in: instance %s is being terminated; draining", self.instance_id
                )
                self.request_stop()
        while not self._done.wait(self.heartbeat_seconds):
            self._call("record_lifecycle_action_heartbeat")
            self.heartbeats += 1

    def finish(self) -> None:
        """The node has stopped: end the thread, and let the group go on if it was waiting.

        The group deregisters the instance from the load balancer (up to its deregistration
        delay) before the hook holds it, while the lifecycle state already reads ``Terminated``:
        a drain can end before there is an action to complete. So completing is retried every
        ``retry_pause`` seconds for up to ``retry_seconds``; after that the hook's own timeout
        (``DefaultResult: CONTINUE``) ends the wait.
        """
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=self.poll_seconds + 5)
        if not self.terminating or self.completed:
            return
        deadline = time.monotonic() + self.retry_seconds
        while True:
            self.completed = self._call(
                "complete_lifecycle_action", LifecycleActionResult="CONTINUE"
            )
            if self.completed:
                logger.info("lifecycle action completed: the instance may terminate")
                return
            if time.monotonic() + self.retry_pause > deadline:
                logger.warning("lifecycle action not completed; the hook's timeout will end it")
                return
            time.sleep(self.retry_pause)

    def _call(self, operation: str, **extra: str) -> bool:
        try:
            getattr(self.autoscaling, operation)(
                LifecycleHookName=self.hook_name,
                AutoScalingGroupName=self.group_name,
                InstanceId=self.instance_id,
                **extra,
            )
        except Exception as exc:  # botocore errors, network: the hook's timeout is the backstop
            logger.warning("%s failed: %s", operation, exc)
            return False
        return True
