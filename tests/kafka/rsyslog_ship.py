#!/usr/bin/env python3
"""A real log shipper: rsyslog's omkafka (librdkafka) ships log lines to the broker.

  rsyslog_ship.py --bootstrap B --topic T --work DIR [--lines 100000]

Writes LINES numbered log lines to DIR/input.log, runs `rsyslogd -n` with a private config
(imfile reads the file from its start; omkafka sends each line to T with lz4 compression and
acks=all, its queue in memory, every setting in DIR), waits until the topic holds LINES
records, stops rsyslogd, and reads the topic back with confluent-kafka: every line must be
there exactly once. Needs rsyslog and rsyslog-kafka (Debian), and root or a user that may run
rsyslogd. Exits 0 with one line, or 1 with the reason. Bounded by --timeout.
"""

import argparse
import os
import signal
import subprocess
import sys
import threading
import time


def fail(msg):
    print(f"rsyslog_ship: FAIL: {msg}", file=sys.stderr, flush=True)
    os._exit(1)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--lines", type=int, default=100_000)
    p.add_argument("--timeout", type=float, default=240.0)
    a = p.parse_args()
    threading.Timer(a.timeout, lambda: fail(f"timed out after {a.timeout}s")).start()

    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    admin.create_topics([NewTopic(a.topic, 3, 1)])[a.topic].result(30)

    work = os.path.abspath(a.work)
    os.makedirs(work, exist_ok=True)
    spool = os.path.join(work, "spool")
    os.makedirs(spool, exist_ok=True)
    source = os.path.join(work, "input.log")
    with open(source, "w") as f:
        for i in range(a.lines):
            f.write(f"line {i:06d} from the shipper test, with some text to compress\n")
    conf = os.path.join(work, "rsyslog.conf")
    with open(conf, "w") as f:
        f.write(f"""
global(workDirectory="{spool}")
module(load="imfile")
module(load="omkafka")
input(type="imfile" File="{source}" Tag="shiptest" ruleset="tokafka"
      freshStartTail="off" reopenOnTruncate="on")
template(name="msgonly" type="string" string="%msg%")
ruleset(name="tokafka") {{
  action(type="omkafka" broker=["{a.bootstrap}"] topic="{a.topic}" template="msgonly"
         confParam=["compression.codec=lz4", "request.required.acks=-1",
                    "queue.buffering.max.ms=20", "message.send.max.retries=1000000"]
         partitions.auto="on" resubmitOnFailure="on"
         queue.type="LinkedList" queue.size="200000" action.resumeRetryCount="-1")
}}
""")
    pidfile = os.path.join(work, "rsyslogd.pid")
    log = open(os.path.join(work, "rsyslogd.out"), "w")
    rsyslogd = subprocess.Popen(["rsyslogd", "-n", "-f", conf, "-i", pidfile],
                                stdout=log, stderr=subprocess.STDOUT)
    consumer = Consumer({"bootstrap.servers": a.bootstrap, "group.id": f"{a.topic}-check"})
    start = time.time()
    total = 0
    while total < a.lines:
        if rsyslogd.poll() is not None:
            fail(f"rsyslogd exited with {rsyslogd.returncode}: "
                 f"{open(os.path.join(work, 'rsyslogd.out')).read()[-2000:]}")
        total = sum(consumer.get_watermark_offsets(TopicPartition(a.topic, p), timeout=10)[1]
                    for p in range(3))
        if time.time() - start > a.timeout - 60:
            fail(f"the topic holds {total} of {a.lines} lines")
        time.sleep(0.5)
    shipped = time.time() - start
    rsyslogd.send_signal(signal.SIGTERM)
    rsyslogd.wait(30)

    consumer.assign([TopicPartition(a.topic, p, 0) for p in range(3)])
    seen = {}
    idle = time.time()
    while len(seen) < a.lines or time.time() - idle < 2:
        msgs = consumer.consume(10_000, 0.5)
        if msgs:
            idle = time.time()
        for m in msgs:
            if m.error():
                fail(f"consume: {m.error()}")
            seen[m.value()] = seen.get(m.value(), 0) + 1
        if time.time() - idle > 20:
            break
    consumer.close()
    want = {f"line {i:06d} from the shipper test, with some text to compress".encode()
            for i in range(a.lines)}
    missing = want - set(seen)
    dupes = [k for k, n in seen.items() if n > 1]
    extra = set(seen) - want
    if missing or dupes or extra:
        fail(f"{len(missing)} missing, {len(dupes)} twice, {len(extra)} unexpected "
             f"(e.g. {sorted(missing)[:2]} {dupes[:2]} {sorted(extra)[:2]})")
    # The batches were stored lz4-compressed as sent: the topic is far smaller than the text.
    from kafka import KafkaAdminClient

    kadmin = KafkaAdminClient(bootstrap_servers=a.bootstrap)
    stored = 0
    for broker in kadmin.describe_log_dirs():
        for d in broker.get("log_dirs", broker.get("results", [])):
            for t in d.get("topics", []):
                if t.get("name", t.get("topic")) == a.topic:
                    stored += sum(part["partition_size"] for part in t["partitions"])
    kadmin.close()
    raw = sum(len(k) for k in want)
    if not 0 < stored < raw // 2:
        fail(f"the topic takes {stored} bytes for {raw} bytes of text: not compressed")
    print(f"rsyslog_ship: {a.lines} lines shipped by rsyslog omkafka (lz4, acks=all) in "
          f"{shipped:.1f}s, each exactly once; stored {stored} bytes for {raw} of text",
          flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
