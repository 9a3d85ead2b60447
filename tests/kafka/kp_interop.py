#!/usr/bin/env python3
"""kafka-python half of the native <-> Kafka interop checks (driven by kafka_clients.rs).

  kp_interop.py produce --bootstrap B --topic T --count N --prefix P [--create PARTITIONS]
      Optionally creates T with KafkaAdminClient, then writes N records key `k<i>`, value
      `<P>-<i>` with the default (idempotent, acks=all) producer; prints one summary line.
  kp_interop.py consume --bootstrap B --topic T --count N
      Reads every partition of T from the beginning without a group until N records arrived,
      checks that no more than N exist, and prints each as `partition<TAB>offset<TAB>key<TAB>value`
      (key empty when null), sorted by partition and offset.

Exits 0 on success, 1 with the reason on failure; bounded by --timeout.
"""

import argparse
import os
import sys
import threading
import time


def fail(msg):
    print(f"kp_interop: FAIL: {msg}", file=sys.stderr, flush=True)
    os._exit(1)


def watchdog(seconds):
    def fire():
        print(f"kp_interop: FAIL: timed out after {seconds}s", file=sys.stderr, flush=True)
        os._exit(3)

    t = threading.Timer(seconds, fire)
    t.daemon = True
    t.start()


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("produce", "consume"):
        s = sub.add_parser(name)
        s.add_argument("--bootstrap", required=True, help="HOST:PORT of the Kafka listener")
        s.add_argument("--topic", required=True)
        s.add_argument("--count", type=int, required=True)
        s.add_argument("--timeout", type=float, default=90.0)
        if name == "produce":
            s.add_argument("--prefix", required=True)
            s.add_argument("--create", type=int, metavar="PARTITIONS",
                           help="create the topic with this many partitions first")
    a = p.parse_args(argv)
    if a.count < 1:
        p.error("--count must be positive")
    return a


def produce(a):
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient

    if a.create:
        admin = KafkaAdminClient(bootstrap_servers=a.bootstrap, client_id="kp-interop-admin")
        try:
            admin.create_topics({a.topic: {"num_partitions": a.create, "replication_factor": 1}},
                                timeout_ms=30000, wait_for_metadata=True)
        finally:
            admin.close()
    producer = KafkaProducer(bootstrap_servers=a.bootstrap, client_id="kp-interop")
    try:
        futures = [producer.send(a.topic, key=f"k{i}".encode(), value=f"{a.prefix}-{i}".encode())
                   for i in range(a.count)]
        for i, f in enumerate(futures):
            try:
                f.get(timeout=60)
            except Exception as e:  # noqa: BLE001
                fail(f"record {i}: {e!r}")
    finally:
        producer.close(timeout=10)
    print(f"kp_interop: produced {a.count} records to {a.topic}", file=sys.stderr)


def consume(a, deadline):
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=a.bootstrap, client_id="kp-interop",
                      enable_auto_commit=False, auto_offset_reset="earliest")
    try:
        parts = None
        while not parts:
            parts = c.partitions_for_topic(a.topic)
            if not parts:
                if time.monotonic() > deadline:
                    fail(f"topic {a.topic} not in metadata")
                time.sleep(0.2)
        tps = [TopicPartition(a.topic, p) for p in sorted(parts)]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        ends = c.end_offsets(tps, timeout_ms=30000)
        total = sum(ends.values())
        if total != a.count:
            fail(f"{a.topic} holds {total} records ({ends}), expected {a.count}")
        rows = []
        while len(rows) < a.count:
            if time.monotonic() > deadline:
                fail(f"read {len(rows)} of {a.count} records")
            for rs in c.poll(timeout_ms=500).values():
                for r in rs:
                    key = r.key.decode() if r.key is not None else ""
                    rows.append((r.partition, r.offset, key, r.value.decode()))
        if len(rows) != a.count or len({(p, o) for p, o, _, _ in rows}) != a.count:
            fail(f"read {len(rows)} records for {a.count} offsets (duplicates?)")
    finally:
        c.close(autocommit=False)
    for p, o, k, v in sorted(rows):
        print(f"{p}\t{o}\t{k}\t{v}")


def main(argv):
    a = parse_args(argv)
    watchdog(a.timeout)
    try:
        import kafka  # noqa: F401
    except ImportError:
        fail("kafka-python is not installed in this Python: run tests/kafka/setup.sh")
    if a.command == "produce":
        produce(a)
    else:
        consume(a, time.monotonic() + a.timeout - 5)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
