#!/usr/bin/env python3
"""librdkafka consumer groups beyond the eager protocol: cooperative-sticky rebalancing and
static membership (KIP-345).

  ck_groups.py --bootstrap B --topic T

  cooperative  Two consumers with partition.assignment.strategy=cooperative-sticky on a
               4-partition topic: the first takes all four; when the second joins, the first
               gives up only the partitions that move (incremental revocation: it never loses
               all of them) and keeps the rest without interruption; together they own all
               four, two each; records produced to every partition after that are consumed
               exactly once between them.
  static       Two consumers with group.instance.id (static members): one is closed (a static
               member sends no LeaveGroup) and started again with the same instance id within
               the session timeout: it gets back the same partitions, and the other member
               sees no rebalance at all.

Exits 0 with one line per scenario, or 1 with the reason. Bounded by --timeout.
"""

import argparse
import os
import sys
import threading
import time

PARTITIONS = 4


def fail(msg):
    print(f"ck_groups: FAIL: {msg}", file=sys.stderr, flush=True)
    os._exit(1)


def watchdog(seconds):
    def fire():
        print(f"ck_groups: FAIL: timed out after {seconds}s", file=sys.stderr, flush=True)
        os._exit(3)

    t = threading.Timer(seconds, fire)
    t.daemon = True
    t.start()


class Member:
    """A consumer polled by the caller; records its assignment events."""

    def __init__(self, a, group, name, extra):
        from confluent_kafka import Consumer

        self.name = name
        self.events = []  # ("assign"|"revoke", [partitions])
        self.owned = set()
        self.values = []
        conf = {"bootstrap.servers": a.bootstrap, "group.id": group,
                "auto.offset.reset": "earliest", "enable.auto.commit": True,
                "session.timeout.ms": 6000, "heartbeat.interval.ms": 500}
        conf.update(extra)
        self.c = Consumer(conf)
        self.cooperative = extra.get("partition.assignment.strategy") == "cooperative-sticky"
        self.c.subscribe([a.topic], on_assign=self.on_assign, on_revoke=self.on_revoke)

    def on_assign(self, consumer, parts):
        ps = sorted(p.partition for p in parts)
        self.events.append(("assign", ps))
        if self.cooperative:
            self.owned |= set(ps)
            consumer.incremental_assign(parts)
        else:
            self.owned = set(ps)
            consumer.assign(parts)

    def on_revoke(self, consumer, parts):
        ps = sorted(p.partition for p in parts)
        self.events.append(("revoke", ps))
        if self.cooperative:
            self.owned -= set(ps)
            consumer.incremental_unassign(parts)
        else:
            self.owned = set()
            consumer.unassign()

    def poll(self):
        m = self.c.poll(0.05)
        if m is not None and not m.error():
            self.values.append(m.value().decode())


def settle(members, want, within, what):
    deadline = time.time() + within
    while True:
        for m in members:
            m.poll()
        owned = [m.owned for m in members]
        if all(len(o) == want for o in owned) and \
                sorted(p for o in owned for p in o) == list(range(PARTITIONS)):
            return
        if time.time() > deadline:
            fail(f"{what}: no settled group within {within}s: "
                 f"{[(m.name, sorted(m.owned), m.events) for m in members]}")


def produce(a, tag):
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": a.bootstrap, "acks": "all"})
    sent = []
    for part in range(PARTITIONS):
        for i in range(5):
            v = f"{tag}-{part}-{i}"
            p.produce(a.topic, value=v.encode(), partition=part)
            sent.append(v)
    p.flush(30)
    return sent


def cooperative(a):
    group = f"{a.topic}-coop"
    extra = {"partition.assignment.strategy": "cooperative-sticky"}
    first = Member(a, group, "first", extra)
    settle([first], PARTITIONS, 30, "cooperative, one member")
    second = Member(a, group, "second", extra)
    settle([first, second], 2, 30, "cooperative, two members")
    revoked = [ps for kind, ps in first.events if kind == "revoke"]
    if not revoked or any(len(ps) >= PARTITIONS for ps in revoked):
        fail(f"the first member's revocations were not incremental: {first.events}")
    sent = produce(a, "coop")
    deadline = time.time() + 30
    while sorted(first.values + second.values) != sorted(sent):
        first.poll()
        second.poll()
        if time.time() > deadline:
            got = first.values + second.values
            fail(f"cooperative: consumed {len(got)} of {len(sent)} "
                 f"(duplicates: {len(got) - len(set(got))})")
    for m in (first, second):
        m.c.close()
    print(f"ck_groups: cooperative: the first member revoked only {revoked} when the second "
          f"joined; {len(sent)} records consumed once", flush=True)


def static(a):
    group = f"{a.topic}-static"
    one = Member(a, group, "one", {"group.instance.id": "static-one"})
    two = Member(a, group, "two", {"group.instance.id": "static-two"})
    settle([one, two], 2, 30, "static, two members")
    before_one, before_two = sorted(one.owned), list(two.events)
    one.c.close()
    time.sleep(1)
    again = Member(a, group, "one-again", {"group.instance.id": "static-one"})
    deadline = time.time() + 20
    while sorted(again.owned) != before_one:
        again.poll()
        two.poll()
        if time.time() > deadline:
            fail(f"the restarted static member got {sorted(again.owned)}, had {before_one}: "
                 f"{again.events}")
    # The other member keeps polling for a while: no revocation, no new assignment.
    until = time.time() + 3
    while time.time() < until:
        again.poll()
        two.poll()
    if two.events != before_two:
        fail(f"the other static member saw a rebalance: {before_two} -> {two.events}")
    for m in (again, two):
        m.c.close()
    print(f"ck_groups: static: a restarted static member got its partitions {before_one} "
          f"back and the other saw no rebalance", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--timeout", type=float, default=150.0)
    a = p.parse_args()
    watchdog(a.timeout)
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    admin.create_topics([NewTopic(a.topic, PARTITIONS, 1)])[a.topic].result(30)
    cooperative(a)
    static(a)


if __name__ == "__main__":
    main()
