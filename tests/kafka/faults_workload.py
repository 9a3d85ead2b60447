#!/usr/bin/env python3
"""The client side of the fault-injection test (tests/tests/it/faults.rs), on confluent-kafka
(librdkafka): what real producers and consumers do while nodes are killed, stopped and cut
off. The test's nemesis injects the faults; this script only writes, reads and records.

  faults_workload.py create ADDRS TOPIC PARTITIONS
      create TOPIC with replication factor 3; print one JSON line
  faults_workload.py run ADDRS TOPIC PARTITIONS WORKDIR
      until WORKDIR/stop exists: an idempotent acks=all producer writes "P-SEQ" values (SEQ
      counting up per partition, RATE records a second per partition) and a consumer reads
      every partition from the beginning, recording each (offset, value) it is handed. Then
      the producer flushes, a fresh consumer reads every partition up to its high
      watermark, and the whole history goes to WORKDIR/history.json:
        acked     {P: [[value, unix time of the acknowledgement], ...]}   (ack order)
        failed    {P: [value, ...]}     delivery failed: the write may or may not be there
        observed  {P: [[offset, value], ...]}   what the live consumer read, in order
        final     {P: [[offset, value], ...]}   the log at the end
        commits   {P: [offset, ...]}    positions the live consumer's group committed
                                        (synchronously, acknowledged), in order
        committed {P: offset}           the group's committed positions at the end
        fatal     [error text, ...]     librdkafka fatal errors (idempotence broken)
        errors    [error text, ...]     other client errors, for the report

The checker is the Rust test. Environment: RATE (records per second per partition, 50).
"""

import json
import os
import sys
import threading
import time
import traceback

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ERRORS_KEPT = 200


def watchdog(seconds):
    def fire():
        print(f"faults_workload: timed out after {seconds}s; threads:", file=sys.stderr,
              flush=True)
        for tid, frame in sys._current_frames().items():
            print(f"--- thread {tid}", file=sys.stderr)
            traceback.print_stack(frame, file=sys.stderr)
        sys.stderr.flush()
        os._exit(3)

    t = threading.Timer(seconds, fire)
    t.daemon = True
    t.start()


def create(addrs, topic, partitions):
    admin = AdminClient({"bootstrap.servers": addrs})
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions,
                                            replication_factor=3)], request_timeout=20)
    futures[topic].result(timeout=30)
    print(json.dumps({"created": topic}))


class History:
    def __init__(self, partitions):
        self.lock = threading.Lock()
        self.acked = {p: [] for p in range(partitions)}
        self.failed = {p: [] for p in range(partitions)}
        self.observed = {p: [] for p in range(partitions)}
        self.commits = {p: [] for p in range(partitions)}
        self.fatal = []
        self.errors = []

    def error(self, text, fatal=False):
        with self.lock:
            if fatal:
                self.fatal.append(text)
            if len(self.errors) < ERRORS_KEPT:
                self.errors.append(text)


def produce(addrs, topic, partitions, history, stop):
    def on_error(err):
        history.error(f"producer: {err}", fatal=err.fatal())

    producer = Producer({
        "bootstrap.servers": addrs,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "message.timeout.ms": 30000,
        "request.timeout.ms": 10000,
        "topic.metadata.refresh.interval.ms": 2000,
        "queue.buffering.max.messages": 20000,
        "error_cb": on_error,
    })

    def delivered(err, msg):
        value = msg.value().decode()
        p = msg.partition()
        with history.lock:
            if err is None:
                history.acked[p].append([value, time.time()])
            else:
                history.failed[p].append(value)

    rate = float(os.environ.get("RATE", "50"))
    seq = [0] * partitions
    started = time.time()
    sent = 0
    while not stop.is_set():
        due = int((time.time() - started) * rate)
        while sent < due and not stop.is_set():
            for p in range(partitions):
                value = f"{p}-{seq[p]:09d}"
                try:
                    producer.produce(topic, value=value.encode(), partition=p,
                                     on_delivery=delivered)
                    seq[p] += 1
                except BufferError:
                    producer.poll(0.1)
            sent += 1
        producer.poll(0.02)
    left = producer.flush(60)
    if left:
        history.error(f"producer: {left} records neither delivered nor failed after flush")


def consume(addrs, topic, partitions, history, stop, group):
    def on_error(err):
        history.error(f"consumer: {err}", fatal=err.fatal())

    consumer = Consumer({
        "bootstrap.servers": addrs,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "topic.metadata.refresh.interval.ms": 2000,
        "error_cb": on_error,
    })
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    next_commit = time.time() + 1
    while not stop.is_set():
        if time.time() >= next_commit:
            commit_positions(consumer, topic, partitions, history)
            next_commit = time.time() + 1
        msg = consumer.poll(0.2)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() != KafkaError._PARTITION_EOF:
                history.error(f"consumer: {msg.error()}")
            continue
        with history.lock:
            history.observed[msg.partition()].append([msg.offset(), msg.value().decode()])
    consumer.close()


def commit_positions(consumer, topic, partitions, history):
    """Commits, synchronously, the next offset to read of every partition read from; an
    acknowledged commit is recorded (the checker expects it to survive)."""
    with history.lock:
        positions = [(p, history.observed[p][-1][0] + 1) for p in range(partitions)
                     if history.observed[p]]
    if not positions:
        return
    try:
        consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in positions],
                        asynchronous=False)
    except Exception as e:  # noqa: BLE001 - not acknowledged: nothing to expect of it
        history.error(f"commit: {e}")
        return
    with history.lock:
        for p, o in positions:
            history.commits[p].append(o)


def committed_at_end(addrs, topic, partitions, group, history):
    consumer = Consumer({"bootstrap.servers": addrs, "group.id": group,
                         "enable.auto.commit": False,
                         "error_cb": lambda err: history.error(f"committed reader: {err}")})
    # Right after the faults a coordinator may still be moving: librdkafka hands
    # NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS to the application here; retry.
    deadline = time.time() + 60
    while True:
        try:
            got = consumer.committed([TopicPartition(topic, p) for p in range(partitions)],
                                     timeout=60)
            break
        except KafkaException as e:
            if time.time() > deadline or e.args[0].code() not in (
                    KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS):
                raise
            time.sleep(0.2)
    consumer.close()
    return {tp.partition: tp.offset for tp in got}


def read_all(addrs, topic, partitions, history):
    """Every partition from offset 0 up to the high watermark, as the log ends up."""
    consumer = Consumer({
        "bootstrap.servers": addrs,
        "group.id": "faults-final",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "error_cb": lambda err: history.error(f"final consumer: {err}"),
    })
    ends = {}
    for p in range(partitions):
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
        ends[p] = high
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    final = {p: [] for p in range(partitions)}
    deadline = time.time() + 90
    while any(final[p][-1][0] + 1 < ends[p] if final[p] else ends[p] > 0
              for p in range(partitions)):
        if time.time() > deadline:
            history.error(f"final read incomplete: ends {ends}, read "
                          f"{ {p: len(v) for p, v in final.items()} }")
            break
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            continue
        final[msg.partition()].append([msg.offset(), msg.value().decode()])
    consumer.close()
    return final


def guarded(name, history, body):
    """Runs a client thread; an exception that ends it early is a fatal finding (the
    checker reports it), not a silent stop."""
    def run(*args):
        try:
            body(*args)
        except Exception:  # noqa: BLE001 - reported, with its traceback
            history.error(f"{name} thread died: {traceback.format_exc()}", fatal=True)
    return run


def run(addrs, topic, partitions, workdir):
    history = History(partitions)
    stop = threading.Event()
    threads = [
        threading.Thread(target=guarded("producer", history, produce),
                         args=(addrs, topic, partitions, history, stop)),
        threading.Thread(target=guarded("consumer", history, consume),
                         args=(addrs, topic, partitions, history, stop, "faults-live")),
    ]
    for t in threads:
        t.start()
    stop_file = os.path.join(workdir, "stop")
    while not os.path.exists(stop_file):
        time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join()
    final = read_all(addrs, topic, partitions, history)
    committed = committed_at_end(addrs, topic, partitions, "faults-live", history)
    out = {
        "acked": history.acked,
        "failed": history.failed,
        "observed": history.observed,
        "final": final,
        "commits": history.commits,
        "committed": committed,
        "fatal": history.fatal,
        "errors": history.errors,
    }
    with open(os.path.join(workdir, "history.json.tmp"), "w") as f:
        json.dump(out, f)
    os.rename(os.path.join(workdir, "history.json.tmp"), os.path.join(workdir, "history.json"))
    print(json.dumps({"acked": sum(len(v) for v in history.acked.values()),
                      "fatal": len(history.fatal)}))


def main():
    phase, addrs, topic, partitions = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    if phase == "create":
        watchdog(60)
        create(addrs, topic, partitions)
    elif phase == "run":
        run(addrs, topic, partitions, sys.argv[5])
    else:
        sys.exit(f"unknown phase {phase}")


if __name__ == "__main__":
    main()
