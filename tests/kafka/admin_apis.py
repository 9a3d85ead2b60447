#!/usr/bin/env python3
"""Admin and lookup APIs through real clients (kafka-python and confluent-kafka).

  admin_apis.py --bootstrap B --topic T [--phase NAME ...]

Phases (all by default, in this order):
  versions    kafka-python infers a current broker (4.0 or later) from ApiVersions.
  timestamps  A topic of 1 partition gets 300 records in gzip batches of 10 (confluent-kafka,
              explicit CreateTime timestamps T0 + 10 i, except record 150 at T0 + 100000, the
              largest). Then: kafka-python's offsets_for_times and librdkafka's
              offsets_for_times find, for a time inside a batch, the exact record at or after it
              (not its batch's first record); for a time after every record they answer "none"
              (offset -1); AdminClient.list_offsets with OffsetSpec.max_timestamp() answers
              record 150 with its timestamp; earliest and latest answer 0 and 300.

Exits 0 with one line per phase, or 1 with the reason. Bounded by --timeout.
"""

import argparse
import os
import sys
import threading
import time

T0 = 1_700_000_000_000
RECORDS = 300
PEAK = 150


def fail(msg):
    print(f"admin_apis: FAIL: {msg}", file=sys.stderr, flush=True)
    os._exit(1)


def watchdog(seconds):
    def fire():
        print(f"admin_apis: FAIL: timed out after {seconds}s", file=sys.stderr, flush=True)
        os._exit(3)

    t = threading.Timer(seconds, fire)
    t.daemon = True
    t.start()


def ts_of(i):
    return T0 + 100_000 if i == PEAK else T0 + 10 * i


def timestamps(a):
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP

    topic = f"{a.topic}-ts"
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": a.bootstrap, "compression.type": "gzip",
                         "linger.ms": 1000, "batch.num.messages": 10, "acks": "all"})
    errors = []
    for i in range(RECORDS):
        producer.produce(topic, value=f"r{i}".encode(), partition=0, timestamp=ts_of(i),
                         on_delivery=lambda err, msg: err and errors.append(err))
        if i % 10 == 9:
            producer.flush(30)
    producer.flush(30)
    if errors:
        fail(f"produce errors: {errors[:3]}")

    # A time inside a batch: the record at or after it, exactly (record 123 at T0 + 1230).
    want = {T0 + 1225: (123, T0 + 1230), T0 + 1230: (123, T0 + 1230), T0: (0, T0),
            T0 + 10 * 299: (150, T0 + 100_000)}
    kc = KafkaConsumer(bootstrap_servers=a.bootstrap)
    tp = KTP(topic, 0)
    for when, (offset, ts) in want.items():
        got = kc.offsets_for_times({tp: when})[tp]
        if got is None or (got.offset, got.timestamp) != (offset, ts):
            fail(f"kafka-python offsets_for_times({when}) = {got}, want {(offset, ts)}")
    after = kc.offsets_for_times({tp: T0 + 200_000})[tp]
    if after is not None:
        fail(f"kafka-python offsets_for_times after every record = {after}, want None")
    kc.close()

    cc = Consumer({"bootstrap.servers": a.bootstrap, "group.id": f"{topic}-g"})
    for when, (offset, _) in want.items():
        got = cc.offsets_for_times([TopicPartition(topic, 0, when)], 10)[0]
        if got.error or got.offset != offset:
            fail(f"librdkafka offsets_for_times({when}) = {got.offset} {got.error}, want {offset}")
    got = cc.offsets_for_times([TopicPartition(topic, 0, T0 + 200_000)], 10)[0]
    if got.offset != -1:
        fail(f"librdkafka offsets_for_times after every record = {got.offset}, want -1")
    cc.close()

    tpl = TopicPartition(topic, 0)
    specs = {"max": OffsetSpec.max_timestamp(), "earliest": OffsetSpec.earliest(),
             "latest": OffsetSpec.latest()}
    results = {}
    for name, spec in specs.items():
        info = admin.list_offsets({tpl: spec})[tpl].result(30)
        results[name] = (info.offset, info.timestamp)
    if results["max"] != (PEAK, T0 + 100_000):
        fail(f"list_offsets MAX_TIMESTAMP = {results['max']}, want {(PEAK, T0 + 100_000)}")
    if results["earliest"][0] != 0 or results["latest"][0] != RECORDS:
        fail(f"list_offsets earliest/latest = {results}")
    print(f"admin_apis: timestamps: exact record lookups in gzip batches, none past the end, "
          f"max timestamp at {results['max'][0]}", flush=True)


def versions(a):
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=a.bootstrap)
    inferred = admin._client.check_version()
    admin.close()
    # kafka-python infers the broker's version from the API versions advertised; 4.0 needs
    # ListOffsets v10 (it inferred 3.0 from v7).
    if inferred < (4, 0):
        fail(f"kafka-python infers broker version {inferred}, want 4.0 or later")
    print(f"admin_apis: versions: kafka-python infers broker {inferred}", flush=True)


PHASES = {"versions": versions, "timestamps": timestamps}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--phase", action="append", choices=sorted(PHASES))
    p.add_argument("--timeout", type=float, default=120.0)
    a = p.parse_args()
    watchdog(a.timeout)
    for name in a.phase or list(PHASES):
        PHASES[name](a)


if __name__ == "__main__":
    main()
