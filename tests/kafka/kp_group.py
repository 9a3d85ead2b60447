#!/usr/bin/env python3
"""kafka-python consumer group against a Kafka-compatible broker.

Phase `run` (default):
  1. KafkaAdminClient creates TOPIC with 6 partitions.
  2. Three KafkaConsumers (one group, auto_offset_reset='earliest', enable_auto_commit=False)
     start in threads and wait until the group is stable: every member owns partitions and
     together they own all six.
  3. The default (idempotent, acks=all) KafkaProducer writes the first half of RECORDS records,
     each with a unique id. Every consumer commits synchronously after each poll batch.
  4. One consumer, after it has consumed a few batches, commits and closes (LeaveGroup), so
     the group rebalances onto the other two. Only then is the second half produced, so the
     leaver's partitions still receive records that the others must pick up.
  5. Checks: every record consumed, at the partition and offset the producer was told; none
     consumed twice unless its first delivery's commit failed (a record whose commit
     succeeded must never come back); the leaver's partitions moved to the others; the
     group's committed offsets equal the end offsets.

Phase `restart-check` (after the broker restarted on the same data directory):
  the group's committed offsets equal the end offsets and add up to RECORDS; a new member of
  the group receives nothing old; a record produced now reaches it (so "nothing" means
  something), and its commit brings the committed offsets to RECORDS + 1.

Exits 0 with a one-line summary, or 1 with the reason. Everything is bounded by --timeout
(a watchdog ends the process if a client call hangs).

  kp_group.py --bootstrap 127.0.0.1:9092 --topic kp-group --group kp-g [--records 3000]
  kp_group.py --bootstrap 127.0.0.1:9092 --topic kp-group --group kp-g --phase restart-check \
      --records 3000
"""

import argparse
import os
import sys
import threading
import time
import traceback

PARTITIONS = 6
CONSUMERS = 3
LEAVER = 0
# The leaver leaves after this many poll batches with records (max_poll_records each).
LEAVER_BATCHES = 2
MAX_POLL_RECORDS = 20


def fail(msg):
    print(f"kp_group: FAIL: {msg}", file=sys.stderr, flush=True)
    os._exit(1)


def watchdog(seconds):
    def fire():
        print(f"kp_group: FAIL: timed out after {seconds}s (a client call hung or the broker "
              f"never delivered); threads:", file=sys.stderr, flush=True)
        for tid, frame in sys._current_frames().items():
            print(f"--- thread {tid}", file=sys.stderr)
            traceback.print_stack(frame, file=sys.stderr)
        sys.stderr.flush()
        os._exit(3)

    t = threading.Timer(seconds, fire)
    t.daemon = True
    t.start()


def wait_until(cond, deadline, what, step=0.05):
    while not cond():
        if time.monotonic() > deadline:
            fail(f"timed out waiting for {what}")
        time.sleep(step)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bootstrap", required=True, help="HOST:PORT of the Kafka listener")
    p.add_argument("--topic", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--records", type=int, default=3000,
                   help="run: records to produce; restart-check: records the topic must hold")
    p.add_argument("--phase", choices=["run", "restart-check"], default="run")
    p.add_argument("--timeout", type=float, default=150.0, help="seconds for the whole run")
    a = p.parse_args(argv)
    if a.records < 2 * PARTITIONS * MAX_POLL_RECORDS * LEAVER_BATCHES:
        p.error(f"--records must be at least {2 * PARTITIONS * MAX_POLL_RECORDS * LEAVER_BATCHES}"
                " so the leaver leaves mid-stream")
    return a


def consumer_config(a, client_id):
    return dict(
        bootstrap_servers=a.bootstrap,
        group_id=a.group,
        client_id=client_id,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=MAX_POLL_RECORDS,
        session_timeout_ms=10000,
        heartbeat_interval_ms=1000,
        request_timeout_ms=30000,
    )


class Member(threading.Thread):
    """One group member: polls, records what it got, commits synchronously after each batch."""

    def __init__(self, a, index, stop, lock, deliveries):
        super().__init__(daemon=True, name=f"member-{index}")
        from kafka import KafkaConsumer

        self.index = index
        self.stop = stop
        self.lock = lock
        # id -> list of (member, partition, offset, committed_ok)
        self.deliveries = deliveries
        self.consumer = KafkaConsumer(a.topic, **consumer_config(a, f"kp-group-{index}"))
        self.assigned = set()
        self.ever_assigned = set()
        self.batches = 0
        self.consumed = 0
        self.commit_failures = 0
        self.partitions_read = set()
        self.left = threading.Event()
        self.error = None
        self.go = threading.Event()  # set when production starts (before: assignment only)

    def run(self):
        from kafka.errors import CommitFailedError, KafkaError

        try:
            while not self.stop.is_set():
                batch = self.consumer.poll(timeout_ms=200)
                with self.lock:
                    self.assigned = {tp.partition for tp in self.consumer.assignment()}
                    self.ever_assigned |= self.assigned
                records = [r for rs in batch.values() for r in rs]
                if not records:
                    continue
                if not self.go.is_set():
                    self.error = f"received {len(records)} records before anything was produced"
                    return
                try:
                    self.consumer.commit()
                    ok = True
                except (CommitFailedError, KafkaError) as e:
                    # Allowed around a rebalance; these records may be delivered again.
                    self.commit_failures += 1
                    print(f"kp_group: member {self.index}: commit failed ({e!r}); "
                          f"{len(records)} records may be redelivered", file=sys.stderr)
                    ok = False
                with self.lock:
                    for r in records:
                        rid = r.value.decode()
                        self.deliveries.setdefault(rid, []).append(
                            (self.index, r.partition, r.offset, ok))
                        self.partitions_read.add(r.partition)
                    self.consumed += len(records)
                    self.batches += 1
                if self.index == LEAVER and self.batches >= LEAVER_BATCHES:
                    # Commit once more (nothing new, but it must still succeed), then leave.
                    self.consumer.commit()
                    self.consumer.close(autocommit=False)
                    self.left.set()
                    return
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            self.error = f"{type(e).__name__}: {e}\n{traceback.format_exc()}"


def produce(a, ids):
    """Writes `ids` with the default producer (idempotent, acks=all); returns id -> (p, offset)."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=a.bootstrap, client_id="kp-group-producer")
    try:
        if not producer.config.get("enable_idempotence"):
            fail("kafka-python's default producer is expected to be idempotent")
        futures = [(rid, producer.send(a.topic, key=rid.encode(), value=rid.encode()))
                   for rid in ids]
        placed = {}
        for rid, f in futures:
            try:
                md = f.get(timeout=60)
            except Exception as e:  # noqa: BLE001
                fail(f"produce of {rid} failed: {e!r}")
            placed[rid] = (md.partition, md.offset)
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)
    return placed


def end_offsets(a, consumer):
    from kafka import TopicPartition

    tps = [TopicPartition(a.topic, p) for p in range(PARTITIONS)]
    return tps, consumer.end_offsets(tps, timeout_ms=30000)


def check_committed(a, expected_total):
    """The group's committed offsets equal the end offsets, which add up to expected_total."""
    from kafka import KafkaConsumer

    c = KafkaConsumer(**consumer_config(a, "kp-group-checker"))
    try:
        tps, ends = end_offsets(a, c)
        total = sum(ends[tp] for tp in tps)
        if total != expected_total:
            fail(f"end offsets {sorted((tp.partition, o) for tp, o in ends.items())} add up "
                 f"to {total}, expected {expected_total}")
        committed = {tp.partition: c.committed(tp, timeout_ms=30000) for tp in tps}
        want = {tp.partition: ends[tp] for tp in tps}
        if committed != want:
            fail(f"group {a.group}: committed offsets {committed} != end offsets {want}")
    finally:
        c.close(autocommit=False)


def run(a):
    from kafka.admin import KafkaAdminClient

    deadline = time.monotonic() + a.timeout - 5
    admin = KafkaAdminClient(bootstrap_servers=a.bootstrap, client_id="kp-group-admin",
                             request_timeout_ms=30000)
    try:
        admin.create_topics(
            {a.topic: {"num_partitions": PARTITIONS, "replication_factor": 1}},
            timeout_ms=30000, wait_for_metadata=True)
        described = admin.describe_topics([a.topic])
        parts = len(described[0]["partitions"]) if described else 0
        if parts != PARTITIONS:
            fail(f"created {a.topic} with {PARTITIONS} partitions, metadata shows {parts}: "
                 f"{described}")
    finally:
        admin.close()

    stop = threading.Event()
    lock = threading.Lock()
    deliveries = {}
    members = [Member(a, i, stop, lock, deliveries) for i in range(CONSUMERS)]
    for m in members:
        m.start()

    def check_members():
        for m in members:
            if m.error:
                fail(f"member {m.index}: {m.error}")

    # 2. A stable group: every member owns partitions, together all six, for a second.
    def stable():
        check_members()
        with lock:
            owned = [m.assigned for m in members]
        union = set().union(*owned)
        return all(owned) and union == set(range(PARTITIONS)) and sum(map(len, owned)) == PARTITIONS

    stable_since = None
    while True:
        if stable():
            stable_since = stable_since or time.monotonic()
            if time.monotonic() - stable_since >= 1.0:
                break
        else:
            stable_since = None
        if time.monotonic() > deadline:
            with lock:
                fail(f"the group never settled with {CONSUMERS} members owning "
                     f"{PARTITIONS} partitions: {[sorted(m.assigned) for m in members]}")
        time.sleep(0.05)
    with lock:
        leaver_partitions = set(members[LEAVER].assigned)
    for m in members:
        m.go.set()

    # 3./4. First half, the leaver leaves mid-stream, then the second half.
    ids = [f"kp-{i:07d}" for i in range(a.records)]
    half = a.records // 2
    placed = produce(a, ids[:half])
    wait_until(lambda: (check_members(), members[LEAVER].left.is_set())[1], deadline,
               "the leaving consumer to consume its batches and close")
    with lock:
        leaver_got = members[LEAVER].consumed
    placed.update(produce(a, ids[half:]))

    def all_consumed():
        check_members()
        with lock:
            return len(deliveries) >= a.records

    wait_until(all_consumed, deadline, f"all {a.records} records to be consumed "
               f"(have {len(deliveries)})", step=0.1)
    # Let in-flight commits land, then stop the others and close them cleanly.
    stop.set()
    for m in members[1:]:
        m.join(timeout=30)
        if m.is_alive():
            fail(f"member {m.index} did not stop")
        check_members()
        m.consumer.close(autocommit=False)

    # 5. Checks.
    missing = [rid for rid in ids if rid not in deliveries]
    if missing:
        fail(f"{len(missing)} records never consumed, e.g. {missing[:5]}")
    unknown = set(deliveries) - set(ids)
    if unknown:
        fail(f"consumed records nobody produced: {sorted(unknown)[:5]}")
    redelivered_after_commit = []
    duplicates = 0
    for rid, got in deliveries.items():
        for member, partition, offset, _ in got:
            if (partition, offset) != placed[rid]:
                fail(f"{rid} consumed by member {member} at {partition}/{offset}, "
                     f"produced to {placed[rid][0]}/{placed[rid][1]}")
        if len(got) > 1:
            duplicates += len(got) - 1
            if got[0][3]:
                redelivered_after_commit.append((rid, got))
    if redelivered_after_commit:
        fail(f"{len(redelivered_after_commit)} records consumed again although their commit "
             f"had succeeded, e.g. {redelivered_after_commit[:3]}")
    offsets = {p for p, _ in placed.values()}
    if offsets != set(range(PARTITIONS)):
        fail(f"records landed only in partitions {sorted(offsets)}")
    if not 0 < leaver_got < sum(1 for p, _ in placed.values() if p in leaver_partitions):
        fail(f"the leaver consumed {leaver_got} records; it should have left mid-stream")
    taken_over = leaver_partitions & set().union(*(m.partitions_read for m in members[1:]))
    if not taken_over:
        fail(f"none of the leaver's partitions {sorted(leaver_partitions)} was read by the "
             f"remaining members after it left")
    check_committed(a, a.records)
    failures = sum(m.commit_failures for m in members)
    print(f"kp_group: {a.records} records over {PARTITIONS} partitions consumed by "
          f"{CONSUMERS} members (per member {[m.consumed for m in members]}, leaver left after "
          f"{leaver_got}, its partitions {sorted(taken_over)} taken over); {duplicates} "
          f"redeliveries after {failures} failed commits; committed offsets = end offsets")


def restart_check(a):
    from kafka import KafkaConsumer, TopicPartition

    deadline = time.monotonic() + a.timeout - 5
    check_committed(a, a.records)
    c = KafkaConsumer(a.topic, **consumer_config(a, "kp-group-after-restart"))
    try:
        # Join and hold all partitions; then a few seconds of polling must bring nothing.
        got = []
        while {tp.partition for tp in c.assignment()} != set(range(PARTITIONS)):
            for rs in c.poll(timeout_ms=200).values():
                got.extend(rs)
            if time.monotonic() > deadline:
                fail(f"the new member never owned all partitions: {c.assignment()}")
        quiet_until = time.monotonic() + 3
        while time.monotonic() < quiet_until:
            for rs in c.poll(timeout_ms=200).values():
                got.extend(rs)
        if got:
            fail(f"a new member of {a.group} received {len(got)} old records after the "
                 f"restart, e.g. {[(r.partition, r.offset, r.value) for r in got[:5]]}")
        marker = f"after-restart-{os.getpid()}"
        placed = produce(a, [marker])[marker]
        fresh = []
        while not fresh:
            for rs in c.poll(timeout_ms=200).values():
                fresh.extend(rs)
            if time.monotonic() > deadline:
                fail("the record produced after the restart never reached the group")
        seen = [(r.partition, r.offset, r.value.decode()) for r in fresh]
        if seen != [(placed[0], placed[1], marker)]:
            fail(f"expected only {marker} at {placed}, got {seen}")
        c.commit()
        tp = TopicPartition(a.topic, placed[0])
        if c.committed(tp, timeout_ms=30000) != placed[1] + 1:
            fail(f"commit after the restart not visible for {tp}")
    finally:
        c.close(autocommit=False)
    check_committed(a, a.records + 1)
    print(f"kp_group restart-check: group {a.group} committed offsets = end offsets "
          f"({a.records} records), nothing old redelivered, a new record delivered and "
          f"committed")


def main(argv):
    a = parse_args(argv)
    watchdog(a.timeout)
    try:
        import kafka  # noqa: F401
    except ImportError:
        fail("kafka-python is not installed in this Python: run tests/kafka/setup.sh")
    if a.phase == "run":
        run(a)
    else:
        restart_check(a)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
