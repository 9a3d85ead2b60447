#!/usr/bin/env python3
"""confluent-kafka (librdkafka) producer, consumer group and AdminClient against a
Kafka-compatible broker.

  1. AdminClient creates TOPIC (3 partitions) and TOPIC-doomed, sees both in list_topics
     (with the expected number of brokers when --brokers is given), deletes TOPIC-doomed and
     sees it gone.
  2. For enable.idempotence true and false, and each compression codec (none, gzip, snappy,
     lz4, zstd), a producer with acks=all writes RECORDS records to TOPIC and waits for the
     delivery reports: all must succeed, at distinct (partition, offset)s.
  3. A consumer group reads TOPIC from the beginning and checks, per (codec, idempotence),
     the count and every key, value and header, each at the partition and offset its
     delivery report gave; nothing is delivered twice; after a synchronous commit the
     group's committed offsets equal the high watermarks.

Exits 0 with a one-line summary, or 1 with the reason. Bounded by --timeout.

  ck_produce_consume.py --bootstrap 127.0.0.1:9092 --topic ck [--records 500] [--brokers 2]
"""

import argparse
import os
import sys
import threading
import time
import traceback

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
IDEMPOTENCE = [True, False]
PARTITIONS = 3


def fail(msg):
    print(f"ck_produce_consume: FAIL: {msg}", file=sys.stderr, flush=True)
    os._exit(1)


def watchdog(seconds):
    def fire():
        print(f"ck_produce_consume: FAIL: timed out after {seconds}s; threads:",
              file=sys.stderr, flush=True)
        for tid, frame in sys._current_frames().items():
            print(f"--- thread {tid}", file=sys.stderr)
            traceback.print_stack(frame, file=sys.stderr)
        sys.stderr.flush()
        os._exit(3)

    t = threading.Timer(seconds, fire)
    t.daemon = True
    t.start()


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bootstrap", required=True, help="HOST:PORT of the Kafka listener")
    p.add_argument("--topic", required=True, help="topic to create (must not exist)")
    p.add_argument("--records", type=int, default=500, help="records per (codec, idempotence)")
    p.add_argument("--brokers", type=int, default=None,
                   help="number of brokers metadata must list (default: not checked)")
    p.add_argument("--timeout", type=float, default=150.0, help="seconds for the whole run")
    a = p.parse_args(argv)
    if a.records < 1:
        p.error("--records must be positive")
    return a


def value_of(codec, idem, i):
    # Compressible, and distinct per record.
    return f"{codec}/{idem}/{i:06d}/".encode() + b"tidelog-" * 16


def admin_phase(a, deadline):
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    doomed = f"{a.topic}-doomed"
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=PARTITIONS, replication_factor=1) for t in (a.topic, doomed)],
        operation_timeout=30, request_timeout=30)
    for name, f in futures.items():
        try:
            f.result(timeout=60)
        except Exception as e:  # noqa: BLE001
            fail(f"create_topics {name}: {e!r}")

    def listed():
        return admin.list_topics(timeout=30)

    md = listed()
    for name in (a.topic, doomed):
        t = md.topics.get(name)
        if t is None:
            fail(f"{name} was created but list_topics shows only {sorted(md.topics)}")
        if t.error is not None or len(t.partitions) != PARTITIONS:
            fail(f"{name}: error {t.error}, {len(t.partitions)} partitions "
                 f"(want {PARTITIONS})")
        for p in t.partitions.values():
            if p.leader not in md.brokers:
                fail(f"{name}/{p.id}: leader {p.leader} is not among brokers {md.brokers}")
    if a.brokers is not None and len(md.brokers) != a.brokers:
        fail(f"metadata lists {len(md.brokers)} brokers {md.brokers}, expected {a.brokers}")
    for name, f in admin.delete_topics([doomed], operation_timeout=30,
                                       request_timeout=30).items():
        try:
            f.result(timeout=60)
        except Exception as e:  # noqa: BLE001
            fail(f"delete_topics {name}: {e!r}")
    while doomed in listed().topics:
        if time.monotonic() > deadline:
            fail(f"{doomed} still listed after delete_topics succeeded")
        time.sleep(0.2)
    if a.topic not in listed().topics:
        fail(f"deleting {doomed} also removed {a.topic}")
    return len(md.brokers)


def produce_phase(a):
    from confluent_kafka import Producer

    placed = {}  # key -> (partition, offset)
    for idem in IDEMPOTENCE:
        for codec in CODECS:
            errors = []
            producer = Producer({
                "bootstrap.servers": a.bootstrap,
                "acks": "all",
                "enable.idempotence": idem,
                "compression.type": codec,
                "linger.ms": 20,
                "message.timeout.ms": 60000,
            })

            def report(err, msg, errors=errors):
                if err is not None:
                    errors.append((msg.key(), err))
                    return
                key = msg.key().decode()
                if key in placed:
                    errors.append((key, "delivered twice"))
                placed[key] = (msg.partition(), msg.offset())

            for i in range(a.records):
                key = f"{codec}/{idem}/{i:06d}"
                while True:
                    try:
                        producer.produce(a.topic, key=key.encode(),
                                         value=value_of(codec, idem, i),
                                         headers=[("codec", codec.encode()),
                                                  ("idempotent", str(idem).encode())],
                                         on_delivery=report)
                        break
                    except BufferError:
                        producer.poll(0.1)
                producer.poll(0)
            left = producer.flush(90)
            if left:
                fail(f"codec {codec}, idempotence {idem}: {left} records still undelivered")
            if errors:
                fail(f"codec {codec}, idempotence {idem}: {len(errors)} failed deliveries, "
                     f"e.g. {errors[:3]}")
    want = a.records * len(CODECS) * len(IDEMPOTENCE)
    if len(placed) != want:
        fail(f"{len(placed)} delivery reports, expected {want}")
    if len(set(placed.values())) != want:
        fail("two records were acknowledged at the same partition and offset")
    return placed


def consume_phase(a, placed, deadline):
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    group = f"{a.topic}-ck-group"
    c = Consumer({
        "bootstrap.servers": a.bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 10000,
    })
    got = {}
    try:
        c.subscribe([a.topic])
        while len(got) < len(placed):
            if time.monotonic() > deadline:
                fail(f"consumed {len(got)} of {len(placed)} records before the deadline")
            for msg in c.consume(num_messages=500, timeout=0.5):
                if msg.error():
                    fail(f"consumer error: {msg.error()}")
                key = msg.key().decode()
                if key in got:
                    fail(f"{key} delivered twice")
                got[key] = msg
        codec_counts = {}
        for key, msg in got.items():
            if key not in placed:
                fail(f"consumed a record nobody produced: {key}")
            codec, idem, i = key.split("/")
            if msg.value() != value_of(codec, idem, int(i)):
                fail(f"{key}: value {msg.value()[:60]!r}")
            headers = msg.headers() or []
            if headers != [("codec", codec.encode()), ("idempotent", idem.encode())]:
                fail(f"{key}: headers {headers}")
            if (msg.partition(), msg.offset()) != placed[key]:
                fail(f"{key} consumed at {msg.partition()}/{msg.offset()}, acknowledged at "
                     f"{placed[key]}")
            codec_counts[(codec, idem)] = codec_counts.get((codec, idem), 0) + 1
        for codec in CODECS:
            for idem in IDEMPOTENCE:
                n = codec_counts.get((codec, str(idem)), 0)
                if n != a.records:
                    fail(f"codec {codec}, idempotence {idem}: consumed {n} of {a.records}")
        try:
            c.commit(asynchronous=False)
        except KafkaException as e:
            fail(f"commit: {e}")
        tps = [TopicPartition(a.topic, p) for p in range(PARTITIONS)]
        committed = {tp.partition: tp.offset for tp in c.committed(tps, timeout=30)}
        high = {p: c.get_watermark_offsets(TopicPartition(a.topic, p), timeout=30)[1]
                for p in range(PARTITIONS)}
        if committed != high:
            fail(f"committed offsets {committed} != high watermarks {high}")
        if sum(high.values()) != len(placed):
            fail(f"high watermarks {high} do not add up to {len(placed)} records")
    finally:
        c.close()
    return codec_counts


def main(argv):
    a = parse_args(argv)
    watchdog(a.timeout)
    try:
        import confluent_kafka
    except ImportError:
        fail("confluent-kafka is not installed in this Python: run tests/kafka/setup.sh")
    deadline = time.monotonic() + a.timeout - 5
    brokers = admin_phase(a, deadline)
    placed = produce_phase(a)
    consume_phase(a, placed, deadline)
    print(f"ck_produce_consume: confluent-kafka {confluent_kafka.__version__} (librdkafka "
          f"{confluent_kafka.libversion()[0]}): {len(placed)} records, {a.records} per codec "
          f"{'/'.join(CODECS)} x idempotence on/off, all acknowledged and consumed once by a "
          f"group; admin create/list/delete ok; {brokers} brokers")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
