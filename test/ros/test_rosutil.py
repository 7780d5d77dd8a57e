"""The test node outlives an entity destroyed under its executor's wait (CI run of stop 29: rclpy raised
InvalidHandle from a destroyed subscription's QoS event handler while the spin thread built its wait set; the thread
ended and every later test that used the node timed out on responses and messages that had arrived)."""
from __future__ import annotations

import pytest

from rosutil import held_open_race, wait_until

pytestmark = [pytest.mark.ros]


def test_test_node_spins_on_after_an_entity_destroyed_under_its_wait(ros):
    from std_srvs.srv import Trigger

    before = ros.races
    sub = held_open_race(ros.node, "/imp_test/rosutil_race")  # every wait the spin thread builds meets it
    wait_until(lambda: ros.races >= before + 3, 10, "the spin thread to meet the destroyed handler three times")
    ros.node.destroy_subscription(sub)  # the race over: the handler leaves the node
    srv = ros.node.create_service(Trigger, "/imp_test/rosutil_ping",
                                  lambda req, res: (setattr(res, "success", True), res)[1])
    try:
        assert ros.call(Trigger, "/imp_test/rosutil_ping", Trigger.Request(), timeout=30.0).success
    finally:
        ros.node.destroy_service(srv)
    ros.alive()
    ros.races = before  # the session summary counts the races the other tests met by chance, not this one
