"""nodes.common.spin: the executor keeps spinning after rclpy's InvalidHandle race (an entity destroyed
in another thread while the wait set is built: the traceback seen in test_nodes_depth ended the spin
thread and every later callback of the module's nodes). Real rclpy pub/sub in one context."""
from __future__ import annotations

import threading

from ros_support import wait_for


def _executor_raising_once(context):
    from rclpy.exceptions import InvalidHandle
    from rclpy.executors import MultiThreadedExecutor

    class RaisingOnce(MultiThreadedExecutor):
        """The real executor; its first spin_once raises as rclpy's wait-set construction does in the race."""

        raised = 0

        def spin_once(self, timeout_sec=None):
            if not self.raised:
                self.raised += 1
                raise InvalidHandle("cannot use Destroyable because destruction was requested")
            super().spin_once(timeout_sec)

    return RaisingOnce(num_threads=2, context=context)


def _deliveries(spin_target):
    """Spin a pub/sub pair with spin_target(executor) in a thread: (messages received, thread alive)."""
    import rclpy
    from rclpy.node import Node
    from std_msgs.msg import String

    context = rclpy.Context()
    rclpy.init(context=context)
    executor = _executor_raising_once(context)
    node = Node("spin_test", context=context)
    got = []
    node.create_subscription(String, "spin_test/chatter", got.append, 10)
    pub = node.create_publisher(String, "spin_test/chatter", 10)
    executor.add_node(node)

    def run():
        try:
            spin_target(executor)
        except Exception:  # noqa: BLE001 - the plain spin's death is the control case
            pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: executor.raised == 1, 5.0)
        for _ in range(40):
            pub.publish(String(data="x"))
            if wait_for(lambda: len(got) > 0, 0.1):
                break
        return len(got), thread.is_alive()
    finally:
        executor.shutdown(timeout_sec=5.0)
        thread.join(timeout=5.0)
        node.destroy_node()
        rclpy.shutdown(context=context)


def test_spin_resumes_after_invalid_handle():
    from avsnet_ros.nodes.common import spin

    n, alive = _deliveries(spin)
    assert alive and n >= 1


def test_plain_executor_spin_dies_on_invalid_handle():
    """The control: without the helper the spin thread ends and nothing is delivered."""
    n, alive = _deliveries(lambda executor: executor.spin())
    assert not alive and n == 0
