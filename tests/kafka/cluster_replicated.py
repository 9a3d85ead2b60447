"""Replicated partitions under leader kills (tests/tests/it/cluster.rs), driven by
kafka-python. Phases (argv[1], then a comma-separated bootstrap list):

  create ADDRS              create topic TOPIC: 3 partitions, replication factor 3
  produce ADDRS TAG N       send N records per partition with an idempotent acks=all
                            producer; print the values acknowledged, per partition, in send
                            order
  leader ADDRS P            print the broker id leading partition P (-1: none)
  isr ADDRS                 print the smallest in-sync set size over the partitions
  read ADDRS                read every partition from the beginning; print the values
  describe ADDRS            print each partition's replicas, in-sync replicas and leader
  reassign ADDRS SPEC       AlterPartitionReassignments: SPEC is P=ID,ID;P=- (broker ids,
                            or - to cancel P's move); print each partition's error (null: ok)
  reassignments ADDRS       ListPartitionReassignments: print the moves under way

Each prints one JSON line. Environment: TOPIC (default rep), PARTITIONS (3),
REPLICATION_FACTOR (3), RECORD_BYTES
(values padded to this length), FLUSH_SECONDS (how long produce waits for acknowledgements;
what is not acknowledged by then is not reported).
"""
import json
import os
import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

PARTITIONS = int(os.environ.get("PARTITIONS", "3"))
TOPIC = os.environ.get("TOPIC", "rep")


def partitions(addrs):
    admin = KafkaAdminClient(bootstrap_servers=addrs, request_timeout_ms=10000)
    try:
        return admin.describe_topics([TOPIC])[0]["partitions"]
    finally:
        admin.close()


def main():
    phase, addrs = sys.argv[1], sys.argv[2].split(",")
    if phase == "create":
        admin = KafkaAdminClient(bootstrap_servers=addrs, request_timeout_ms=15000)
        rf = int(os.environ.get("REPLICATION_FACTOR", "3"))
        admin.create_topics([NewTopic(TOPIC, num_partitions=PARTITIONS, replication_factor=rf)])
        admin.close()
        print(json.dumps({"created": True}))
    elif phase == "produce":
        tag, n = sys.argv[3], int(sys.argv[4])
        size = int(os.environ.get("RECORD_BYTES", "0"))
        producer = KafkaProducer(bootstrap_servers=addrs, acks="all", enable_idempotence=True,
                                 retries=100, request_timeout_ms=40000,
                                 max_in_flight_requests_per_connection=1)
        sent = []
        for i in range(n):
            for p in range(PARTITIONS):
                value = ("%s-%05d" % (tag, i)).ljust(size, ".")
                sent.append((p, value, producer.send(TOPIC, value=value.encode(), partition=p)))
        try:
            producer.flush(timeout=float(os.environ.get("FLUSH_SECONDS", "90")))
        except Exception:  # noqa: BLE001 - what is not acknowledged by then is not reported
            pass
        acked_now = [(p, v) for p, v, f in sent if f.is_done and f.succeeded()]
        try:
            producer.close(timeout=1)
        except Exception:  # noqa: BLE001
            pass
        acked = {str(p): [] for p in range(PARTITIONS)}
        for p, value in acked_now:
            acked[str(p)].append(value)
        print(json.dumps({"acked": acked}))
    elif phase == "leader":
        p = int(sys.argv[3])
        deadline = time.time() + 30
        while True:
            leader = next(x["leader_id"] for x in partitions(addrs) if x["partition_index"] == p)
            if leader >= 0 or time.time() > deadline:
                break
            time.sleep(0.2)
        print(json.dumps({"leader": leader}))
    elif phase == "isr":
        print(json.dumps({"min_isr": min(len(x["isr_nodes"]) for x in partitions(addrs))}))
    elif phase == "describe":
        parts = partitions(addrs)
        out = {key: {} for key in ("replicas", "isr", "leader")}
        for x in parts:
            p = str(x["partition_index"])
            out["replicas"][p] = x["replica_nodes"]
            out["isr"][p] = sorted(x["isr_nodes"])
            out["leader"][p] = x["leader_id"]
        print(json.dumps(out))
    elif phase == "reassign":
        moves = {}
        for item in sys.argv[3].split(";"):
            p, ids = item.split("=")
            target = None if ids == "-" else [int(i) for i in ids.split(",")]
            moves[TopicPartition(TOPIC, int(p))] = target
        admin = KafkaAdminClient(bootstrap_servers=addrs, request_timeout_ms=20000)
        # NOT_CONTROLLER (the metadata quorum is electing a leader) is retried, as Kafka's
        # own tools do.
        deadline = time.time() + 40
        try:
            while True:
                results = admin.alter_partition_reassignments(moves)
                retry = [tp for tp, e in results.items()
                         if e is not None and e.__name__ == "NotControllerError"]
                if not retry or time.time() > deadline:
                    break
                time.sleep(0.5)
        finally:
            admin.close()
        print(json.dumps({"results": {str(tp.partition): (None if e is None else e.__name__)
                                      for tp, e in results.items()}}))
    elif phase == "reassignments":
        admin = KafkaAdminClient(bootstrap_servers=addrs, request_timeout_ms=20000)
        try:
            ongoing = admin.list_partition_reassignments()
        finally:
            admin.close()
        print(json.dumps({"ongoing": {"%s-%d" % (tp.topic, tp.partition): v
                                      for tp, v in ongoing.items()}}))
    elif phase == "read":
        consumer = KafkaConsumer(bootstrap_servers=addrs, auto_offset_reset="earliest",
                                 enable_auto_commit=False, consumer_timeout_ms=8000)
        consumer.assign([TopicPartition(TOPIC, p) for p in range(PARTITIONS)])
        read = {str(p): [] for p in range(PARTITIONS)}
        for record in consumer:
            read[str(record.partition)].append(record.value.decode())
        consumer.close()
        print(json.dumps({"read": read}))


if __name__ == "__main__":
    main()
