#!/usr/bin/env python3
"""Session expiry with kafka-python: a group member that dies without leaving (kill -9) is
removed after its session timeout and its partitions go to the survivor.

  kp_session_expiry.py --bootstrap B --topic T --group G [--session-ms 6000]

Creates T with 4 partitions, starts a member in a child process (this script with
--member), waits until the two members share the partitions (2 + 2), kills the child with
SIGKILL, and checks that the survivor is assigned all 4 partitions within the session timeout
plus a rebalance, and that the group's generation moved on. Prints one line; exits 0, or 1
with the reason; bounded by --timeout.
"""

import argparse
import os
import signal
import subprocess
import sys
import threading
import time


def fail(msg):
    print(f"kp_session_expiry: FAIL: {msg}", file=sys.stderr, flush=True)
    os._exit(1)


def watchdog(seconds):
    def fire():
        print(f"kp_session_expiry: FAIL: timed out after {seconds}s", file=sys.stderr, flush=True)
        os._exit(3)

    t = threading.Timer(seconds, fire)
    t.daemon = True
    t.start()


def consumer(a):
    from kafka import KafkaConsumer

    return KafkaConsumer(a.topic, group_id=a.group, bootstrap_servers=a.bootstrap,
                         session_timeout_ms=a.session_ms, heartbeat_interval_ms=1000,
                         auto_offset_reset="earliest", enable_auto_commit=False)


def member(a):
    c = consumer(a)
    while True:
        c.poll(100)
        print(f"assigned {len(c.assignment())}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--session-ms", type=int, default=6000)
    p.add_argument("--timeout", type=float, default=90.0)
    p.add_argument("--member", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.member:
        member(a)
        return
    watchdog(a.timeout)
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=a.bootstrap)
    admin.create_topics([NewTopic(a.topic, 4, 1)])
    admin.close()

    child = subprocess.Popen([sys.executable, __file__, "--member", "--bootstrap", a.bootstrap,
                              "--topic", a.topic, "--group", a.group,
                              "--session-ms", str(a.session_ms)],
                             stdout=subprocess.PIPE, text=True)
    # The member's reports are read by a thread, so the survivor's poll loop never blocks on
    # them (a consumer that polls rarely stretches every rebalance).
    child_assigned = [0]

    def read_child():
        for line in child.stdout:
            if line.startswith("assigned "):
                child_assigned[0] = int(line.split()[1])

    threading.Thread(target=read_child, daemon=True).start()
    survivor = consumer(a)
    # Both members in one generation: 2 partitions each.
    t0 = time.time()
    while True:
        survivor.poll(100)
        if len(survivor.assignment()) == 2 and child_assigned[0] == 2:
            break
        if child.poll() is not None:
            fail("the member process exited")
        if time.time() - t0 > 60:
            fail(f"the two members never shared the partitions: survivor "
                 f"{len(survivor.assignment())}, member {child_assigned[0]}")
    # DescribeGroups and ListGroups (kafka-python's admin) see the stable two-member group.
    admin = KafkaAdminClient(bootstrap_servers=a.bootstrap)
    listed = [g["group_id"] for g in admin.list_groups()]
    if a.group not in listed:
        fail(f"ListGroups does not list {a.group}: {listed}")
    described = admin.describe_groups([a.group])[a.group]
    if described["group_state"] != "Stable" or len(described["members"]) != 2:
        fail(f"DescribeGroups: {described}")
    admin.close()
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    killed = time.time()
    while len(survivor.assignment()) != 4:
        survivor.poll(100)
        if time.time() - killed > a.session_ms / 1000 * 3 + 10:
            fail(f"after kill -9 the survivor still has {len(survivor.assignment())} partitions")
    took = time.time() - killed
    if took < a.session_ms / 1000 * 0.5:
        fail(f"partitions moved after {took:.1f}s, before the {a.session_ms} ms session could expire")
    survivor.close()
    print(f"kp_session_expiry: member killed with SIGKILL; survivor took all 4 partitions after "
          f"{took:.1f}s (session {a.session_ms} ms)")


if __name__ == "__main__":
    main()
