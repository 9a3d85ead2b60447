"""Three Tidelog nodes as one Kafka cluster, driven by kafka-python (tests/tests/it/cluster.rs).

Phases (argv[1]):
  spread ADDRS   create a 6-partition topic through the last node; every node's metadata
                 shows the same leaders, spread over the three nodes; an idempotent acks=all
                 producer bootstrapped on the first node writes 100 records to every partition;
                 a group consumer bootstrapped on the second node reads them back exactly once
                 and in order, and commits; a new member of the group starts after them.
  create ADDRS NAME   create NAME (3 partitions) through the first address.
  readback ADDRS NAME write 50 records to every partition of NAME and read them back.
  count ADDRS NAME    read NAME from the beginning; report the records per partition.
Prints one JSON line of findings; exits non-zero on a failed check.
"""
import json
import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import InvalidReplicationFactorError


def leaders(addr, topic):
    admin = KafkaAdminClient(bootstrap_servers=[addr], request_timeout_ms=10000)
    try:
        parts = admin.describe_topics([topic])[0]["partitions"]
        return {p["partition_index"]: p["leader_id"] for p in parts}
    finally:
        admin.close()


def write_and_read(addrs, topic, partitions, per_partition, group=None):
    producer = KafkaProducer(bootstrap_servers=[addrs[0]], acks="all",
                             enable_idempotence=True, retries=20)
    for i in range(per_partition):
        for p in range(partitions):
            producer.send(topic, value=b"%d-%d" % (p, i), partition=p)
    producer.flush(timeout=30)
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=[addrs[1 % len(addrs)]], group_id=group,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=8000)
    if group:
        consumer.subscribe([topic])
    else:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
    seen = {p: [] for p in range(partitions)}
    deadline = time.time() + 60
    while sum(len(v) for v in seen.values()) < partitions * per_partition and time.time() < deadline:
        for records in consumer.poll(timeout_ms=1000).values():
            for r in records:
                seen[r.partition].append(r.value)
    if group:
        consumer.commit()
    consumer.close()
    for p in range(partitions):
        want = [b"%d-%d" % (p, i) for i in range(per_partition)]
        assert seen[p] == want, f"partition {p}: read {len(seen[p])} records, not exactly {per_partition} in order"
    return sum(len(v) for v in seen.values())


def main():
    phase, addrs = sys.argv[1], sys.argv[2].split(",")
    out = {}
    if phase == "spread":
        admin = KafkaAdminClient(bootstrap_servers=[addrs[-1]], request_timeout_ms=10000)
        admin.create_topics([NewTopic("spread", num_partitions=6, replication_factor=1)])
        try:
            admin.create_topics([NewTopic("replicated", num_partitions=1, replication_factor=2)])
            out["rf2"] = "accepted"
        except InvalidReplicationFactorError:
            out["rf2"] = "refused"
        try:
            admin.create_topics([NewTopic("too-many", num_partitions=1, replication_factor=4)])
            out["rf4"] = "accepted"
        except InvalidReplicationFactorError:
            out["rf4"] = "refused"
        # A deletion reaches every node.
        admin.create_topics([NewTopic("gone", num_partitions=3, replication_factor=1)])
        admin.delete_topics(["gone"])
        admin.close()
        deadline = time.time() + 20
        while True:
            left = []
            for a in addrs:
                other = KafkaAdminClient(bootstrap_servers=[a])
                if "gone" in other.list_topics():
                    left.append(a)
                other.close()
            if not left or time.time() > deadline:
                break
            time.sleep(0.2)
        assert not left, f"nodes still list a deleted topic: {left}"
        out["deleted_everywhere"] = True
        views = [leaders(a, "spread") for a in addrs]
        assert all(v == views[0] for v in views), f"nodes disagree on leaders: {views}"
        out["leader_nodes"] = len(set(views[0].values()))
        assert -1 not in views[0].values(), views[0]
        out["read"] = write_and_read(addrs, "spread", 6, 100, group="g1")
        # The group's commit: a new consumer in the group finds nothing left to read.
        consumer = KafkaConsumer(bootstrap_servers=[addrs[2]], group_id="g1",
                                 auto_offset_reset="earliest", consumer_timeout_ms=4000)
        consumer.subscribe(["spread"])
        out["after_commit"] = sum(1 for _ in consumer)
        consumer.close()
    elif phase == "create":
        admin = KafkaAdminClient(bootstrap_servers=[addrs[0]], request_timeout_ms=15000)
        admin.create_topics([NewTopic(sys.argv[3], num_partitions=3, replication_factor=1)])
        admin.close()
        out["created"] = sys.argv[3]
    elif phase == "readback":
        out["read"] = write_and_read(addrs, sys.argv[3], 3, 50)
    elif phase == "count":
        topic = sys.argv[3]
        consumer = KafkaConsumer(bootstrap_servers=addrs, auto_offset_reset="earliest",
                                 enable_auto_commit=False, consumer_timeout_ms=8000)
        partitions = sorted(consumer.partitions_for_topic(topic) or [])
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        counts = {p: 0 for p in partitions}
        for record in consumer:
            counts[record.partition] += 1
        consumer.close()
        out["counts"] = [counts[p] for p in partitions]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
