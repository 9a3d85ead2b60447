#!/usr/bin/env python3
"""kill -9 soak: idempotent acks=all Kafka load (confluent-kafka), `kill -9` at a random moment,
an immediate restart, and a check of everything acknowledged, for N cycles.

Each cycle:
  1. starts `tidelog serve` on the same data directory and ports (the restart must bind at
     once: a supervisor restarts immediately);
  2. checks every record acknowledged in every earlier cycle (or, between full checks, in the
     last few cycles): present at the partition and offset its delivery report gave, byte
     for byte, offsets increasing in the order each producer sent them, no offset handed out
     twice; and that the group's committed offsets are not behind any commit the broker
     acknowledged;
  3. runs an idempotent acks=all producer (two partitions) and a consumer group committing
     synchronously, kills the broker with SIGKILL after a random 0.2-1.2 s, and records what
     was acknowledged before the kill.

Exits 0 with a one-line summary, or 1 with the reason.

  kill9_soak.py --tidelog target/debug/tidelog --data-dir DIR --kafka-port P --native-port Q
                [--cycles 50] [--seed S] [--full-check-every 10] [--rate 20000]
"""

import argparse
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import time

TOPIC = "soak"
GROUP = "soak-group"
PARTITIONS = 2
# librdkafka's own log lines (connection refused after each kill) would drown the report.
_QUIET_LOGGER = logging.getLogger("kill9_soak.rdkafka")
_QUIET_LOGGER.setLevel(logging.CRITICAL)
QUIET = {"logger": _QUIET_LOGGER}


def fail(msg):
    print(f"kill9_soak: FAIL: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tidelog", required=True, help="the tidelog binary")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--kafka-port", type=int, required=True,
                   help="bootstrap port; the two shards' node ports follow it")
    p.add_argument("--native-port", type=int, required=True)
    p.add_argument("--cycles", type=int, default=50)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--rate", type=int, default=20000,
                   help="records per second offered: enough to keep batches in flight at "
                        "every kill, few enough that checking stays quick over many cycles")
    p.add_argument("--full-check-every", type=int, default=10,
                   help="check every record ever acknowledged each N cycles; the last 3 "
                        "cycles' records otherwise")
    return p.parse_args(argv)


class Broker:
    def __init__(self, args, cycle):
        self.args = args
        self.log_path = os.path.join(os.path.dirname(os.path.abspath(args.data_dir)),
                                     f"soak-serve-{cycle % 2}.log")
        self.bootstrap = f"127.0.0.1:{args.kafka_port}"
        log = open(self.log_path, "wb")
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [args.tidelog, "serve", "--shards", "2", "--data-dir", args.data_dir,
             "--native-addr", f"127.0.0.1:{args.native_port}",
             "--kafka-addr", self.bootstrap, "--group-initial-rebalance-delay-ms", "0",
             "--segment-bytes", "1048576"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
        log.close()
        while True:
            if self.proc.poll() is not None:
                fail(f"cycle {cycle}: the broker exited ({self.proc.returncode}) at start: "
                     f"{self.stderr()[-2000:]}")
            if "tidelog: serving" in self.stderr():
                break
            if time.monotonic() - started > 60:
                fail(f"cycle {cycle}: the broker did not start in 60 s: {self.stderr()[-2000:]}")
            time.sleep(0.02)
        self.start_s = time.monotonic() - started

    def stderr(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def check(bootstrap, acked, committed, cycle, since_cycle):
    """Every acknowledged record (of cycles >= since_cycle) is where its report said."""
    from confluent_kafka import Consumer, TopicPartition
    wanted = {}  # partition -> {offset: value}
    for (partition, offset), (value, c) in acked.items():
        if c >= since_cycle:
            wanted.setdefault(partition, {})[offset] = value
    consumer = Consumer({
        **QUIET, "bootstrap.servers": bootstrap, "group.id": f"soak-check-{cycle}",
        "enable.auto.commit": False, "auto.offset.reset": "earliest",
        "enable.partition.eof": True, "fetch.wait.max.ms": 10,
    })
    checked = 0
    try:
        for partition in range(PARTITIONS):
            offsets = wanted.get(partition, {})
            if not offsets:
                continue
            low = min(offsets)
            high = max(offsets)
            consumer.assign([TopicPartition(TOPIC, partition, low)])
            seen = {}
            deadline = time.monotonic() + 60
            last = low - 1
            while last < high:
                if time.monotonic() > deadline:
                    missing = sorted(set(offsets) - set(seen))[:5]
                    fail(f"cycle {cycle}: partition {partition}: acknowledged offsets "
                         f"{missing}... not served (read up to {last})")
                msg = consumer.poll(0.5)
                if msg is None:
                    continue
                if msg.error():
                    if msg.error().code() == -191:  # _PARTITION_EOF
                        missing = sorted(set(offsets) - set(seen))[:5]
                        if missing:
                            fail(f"cycle {cycle}: partition {partition}: the log ends at "
                                 f"{msg.offset()}, acknowledged offsets {missing}... are gone")
                        break
                    fail(f"cycle {cycle}: consume error {msg.error()}")
                if msg.offset() <= last:
                    fail(f"cycle {cycle}: partition {partition}: offset {msg.offset()} after "
                         f"{last}")
                last = msg.offset()
                if last in offsets:
                    seen[last] = True
                    if msg.value() != offsets[last]:
                        fail(f"cycle {cycle}: partition {partition} offset {last} holds "
                             f"{msg.value()[:40]!r}, not the acknowledged "
                             f"{offsets[last][:40]!r}")
                    checked += 1
        # Committed offsets never go back behind an acknowledged commit.
        if committed:
            tps = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
            group = Consumer({**QUIET, "bootstrap.servers": bootstrap, "group.id": GROUP,
                              "enable.auto.commit": False})
            try:
                for tp in group.committed(tps, timeout=30):
                    want = committed.get(tp.partition)
                    if want is not None and tp.offset < want:
                        fail(f"cycle {cycle}: group committed offset of partition "
                             f"{tp.partition} is {tp.offset}, behind the acknowledged {want}")
            finally:
                group.close()
    finally:
        consumer.close()
    return checked


def load(bootstrap, rng, cycle, acked, committed, broker, rate):
    """Produces and commits until the broker is killed; returns the number of new acks."""
    from confluent_kafka import Consumer, Producer, TopicPartition, KafkaException
    new = []
    order = {}  # partition -> offsets in send order

    def report(err, msg, sent=None):
        if err is None:
            new.append((msg.partition(), msg.offset(), msg.value()))

    producer = Producer({
        **QUIET, "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
        "linger.ms": rng.choice([0, 1, 5]), "message.timeout.ms": 5000,
        "retry.backoff.ms": 20, "reconnect.backoff.ms": 20, "reconnect.backoff.max.ms": 100,
        "socket.timeout.ms": 2000,
    })
    consumer = Consumer({
        **QUIET, "bootstrap.servers": bootstrap, "group.id": GROUP, "enable.auto.commit": False,
        "auto.offset.reset": "earliest", "session.timeout.ms": 6000,
        "socket.timeout.ms": 2000, "reconnect.backoff.ms": 20,
    })
    run_for = 0.1 + rng.random()
    started = load_started = time.monotonic()
    killed = False
    i = 0
    next_commit = started + 0.1
    while True:
        now = time.monotonic()
        if not new:
            # The clock starts at the first acknowledgement: a new producer's metadata and
            # producer id take a moment, and the kill must land in steady load.
            started = now
            if now - load_started > 30:
                fail(f"cycle {cycle}: no acknowledgement within 30 s")
        if not killed and now - started >= run_for:
            broker.kill9()
            killed = True
            kill_time = now
        if killed and now - kill_time > 0.3:
            break
        if not killed and i > rate * (now - load_started):
            producer.poll(0.001)
        elif not killed:
            value = f"c{cycle}-{i}-".encode() + bytes([97 + i % 26]) * rng.randrange(0, 300)
            try:
                producer.produce(TOPIC, value=value, key=str(i).encode(),
                                 partition=i % PARTITIONS, on_delivery=report)
                i += 1
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
        if not killed and now >= next_commit:
            next_commit = now + 0.1
            # A synchronous commit the broker acknowledged must never be lost.
            # Increasing across cycles, so that "behind" is well defined.
            position = max(committed.values(), default=0) + 1
            offsets = [TopicPartition(TOPIC, p, position) for p in range(PARTITIONS)]
            try:
                done = consumer.commit(offsets=offsets, asynchronous=False)
                for tp in done:
                    if tp.error is None:
                        committed[tp.partition] = max(committed.get(tp.partition, -1),
                                                      tp.offset)
            except KafkaException:
                pass
    producer.purge(in_queue=True, in_flight=True)
    producer.poll(0)
    producer.flush(0)
    del producer
    consumer.close()
    for partition, offset, value in new:
        key = (partition, offset)
        if key in acked:
            fail(f"cycle {cycle}: partition {partition} offset {offset} acknowledged twice "
                 f"({acked[key][0][:30]!r} in cycle {acked[key][1]}, now {value[:30]!r})")
        acked[key] = (value, cycle)
        order.setdefault(partition, []).append(offset)
    for partition, offsets in order.items():
        if offsets != sorted(offsets):
            fail(f"cycle {cycle}: partition {partition}: acknowledgements out of order")
    return len(new)


def main(argv):
    args = parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    print(f"kill9_soak: seed {seed} (replay with --seed {seed})", flush=True)
    rng = random.Random(seed)
    from confluent_kafka.admin import AdminClient, NewTopic
    acked = {}       # (partition, offset) -> (value, cycle)
    committed = {}   # partition -> highest acknowledged committed offset
    total_checked = 0
    started = time.monotonic()
    starts = []
    for cycle in range(args.cycles + 1):
        broker = Broker(args, cycle)
        starts.append(broker.start_s)
        if cycle == 0:
            admin = AdminClient({**QUIET, "bootstrap.servers": broker.bootstrap})
            for future in admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)]).values():
                future.result(30)
            del admin
        full = cycle == args.cycles or cycle % args.full_check_every == 0
        total_checked += check(broker.bootstrap, acked, committed, cycle,
                               0 if full else cycle - 3)
        if cycle == args.cycles:
            broker.proc.send_signal(signal.SIGTERM)
            broker.proc.wait(60)
            break
        if load(broker.bootstrap, rng, cycle, acked, committed, broker, args.rate) == 0:
            fail(f"cycle {cycle}: nothing was acknowledged before the kill")
    print(f"kill9_soak: OK: {args.cycles} kill -9 cycles, {len(acked)} acknowledged records "
          f"all present byte for byte ({total_checked} checks), committed offsets never "
          f"behind; restart took {min(starts):.2f}-{max(starts):.2f} s; "
          f"{time.monotonic() - started:.0f} s in all", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
