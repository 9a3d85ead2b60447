#!/usr/bin/env python3
"""Four kafka-python consumers joining one group at the same moment settle quickly.

  kp_join_together.py --bootstrap B --topic T --group G [--session-ms 3000] [--within 8]

Creates T with 4 partitions and starts four consumer processes (this script with --member)
at once, each with session.timeout.ms=--session-ms. Checks that within --within seconds of
the start every member owns exactly one partition and together they own all four, then that
the assignment holds (no further rebalance) for two more seconds while a record produced to
each partition reaches the member that owns it. Prints one line with the time to a stable
group; exits 0, or 1 with the reason; bounded by --timeout.
"""

import argparse
import os
import subprocess
import sys
import threading
import time

MEMBERS = 4


def fail(msg):
    print(f"kp_join_together: FAIL: {msg}", file=sys.stderr, flush=True)
    os._exit(1)


def watchdog(seconds):
    def fire():
        print(f"kp_join_together: FAIL: timed out after {seconds}s", file=sys.stderr, flush=True)
        os._exit(3)

    t = threading.Timer(seconds, fire)
    t.daemon = True
    t.start()


def member(a):
    from kafka import KafkaConsumer

    c = KafkaConsumer(a.topic, group_id=a.group, bootstrap_servers=a.bootstrap,
                      session_timeout_ms=a.session_ms, heartbeat_interval_ms=a.session_ms // 3,
                      auto_offset_reset="earliest", enable_auto_commit=False)
    last = None
    while True:
        for tp, records in c.poll(100).items():
            for r in records:
                print(f"record {tp.partition} {r.value.decode()}", flush=True)
        now = sorted(tp.partition for tp in c.assignment())
        if now != last:
            print(f"assigned {','.join(map(str, now))}", flush=True)
            last = now


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--session-ms", type=int, default=3000)
    p.add_argument("--within", type=float, default=8.0)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--member", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.member:
        member(a)
        return
    watchdog(a.timeout)
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=a.bootstrap)
    admin.create_topics([NewTopic(a.topic, MEMBERS, 1)])
    admin.close()

    lock = threading.RLock()
    assigned = {}  # member -> partitions it last reported
    changes = {}  # member -> how many assignments it reported
    received = {}  # member -> [(partition, value)]
    children = []
    start = time.monotonic()
    for i in range(MEMBERS):
        child = subprocess.Popen([sys.executable, __file__, "--member", "--bootstrap",
                                  a.bootstrap, "--topic", a.topic, "--group", a.group,
                                  "--session-ms", str(a.session_ms)],
                                 stdout=subprocess.PIPE, text=True)
        children.append(child)

        def read(i=i, child=child):
            for line in child.stdout:
                kind, _, rest = line.strip().partition(" ")
                with lock:
                    if kind == "assigned":
                        assigned[i] = [int(x) for x in rest.split(",") if x]
                        changes[i] = changes.get(i, 0) + 1
                    elif kind == "record":
                        part, _, value = rest.partition(" ")
                        received.setdefault(i, []).append((int(part), value))

        threading.Thread(target=read, daemon=True).start()

    def stable():
        with lock:
            owned = [assigned.get(i, []) for i in range(MEMBERS)]
        return all(len(o) == 1 for o in owned) and sorted(sum(owned, [])) == list(range(MEMBERS))

    try:
        while not stable():
            if time.monotonic() - start > a.within:
                with lock:
                    fail(f"no stable group within {a.within}s: assignments {assigned}")
            for c in children:
                if c.poll() is not None:
                    fail(f"a member exited with {c.returncode}")
            time.sleep(0.05)
        settled = time.monotonic() - start
        with lock:
            owner = {assigned[i][0]: i for i in range(MEMBERS)}
            settled_changes = dict(changes)
        producer = KafkaProducer(bootstrap_servers=a.bootstrap, acks="all")
        for part in range(MEMBERS):
            producer.send(a.topic, value=f"v{part}".encode(), partition=part)
        producer.flush()
        producer.close()
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline or not all(received.get(owner[p]) for p in owner):
            if time.monotonic() > deadline + 10:
                with lock:
                    fail(f"records not delivered to their owners {owner}: {received}")
            time.sleep(0.05)
        with lock:
            if not stable() or changes != settled_changes:
                fail(f"the group rebalanced after it was stable: {assigned} {changes}")
            for part, i in owner.items():
                if received.get(i) != [(part, f"v{part}")]:
                    fail(f"member {i} owning partition {part} received {received.get(i)}")
        print(f"kp_join_together: {MEMBERS} members stable after {settled:.2f}s "
              f"(session {a.session_ms} ms), each read its partition's record", flush=True)
    finally:
        for c in children:
            c.kill()


if __name__ == "__main__":
    main()
