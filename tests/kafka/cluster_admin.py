#!/usr/bin/env python3
"""Cluster administration through confluent-kafka's AdminClient (librdkafka), for
tests/tests/it/cluster.rs:

  cluster_admin.py elect ADDRS TOPIC
      DescribeCluster (brokers, controller); then a preferred-leader election over every
      partition of TOPIC (ElectLeaders); then the leaders again. Prints one JSON line:
        brokers      broker ids DescribeCluster listed
        controller   its controller id
        preferred    per partition, its first replica
        before       per partition, the leader before the election
        after        per partition, the leader after (as metadata shows once it settles)
        results      per partition, the election's error code (0, or e.g. 84
                     ELECTION_NOT_NEEDED)
  cluster_admin.py commit ADDRS TOPIC GROUP OFFSET
      GROUP commits OFFSET on every partition of TOPIC (a synchronous commit, no
      subscription); prints {"committed": OFFSET}
  cluster_admin.py config ADDRS TOPIC
      IncrementalAlterConfigs sets TOPIC's retention.ms to 123456000 through the first
      address; then DescribeConfigs asks every node (each address alone) until all report it
      (up to 20 s). Prints {"retention_ms": [value per node], "source": [source per node]}
  cluster_admin.py delete-records ADDRS TOPIC PARTITION OFFSET
      DeleteRecords below OFFSET on the partition's leader; prints {"low": low watermark}
  cluster_admin.py low ADDRS TOPIC PARTITION
      the partition's low watermark as its leader answers, once it has one (up to 30 s);
      prints {"low": offset}
  cluster_admin.py committed ADDRS TOPIC GROUP
      prints {"committed": [offset per partition]} as GROUP's coordinator answers
      (-1001: none)
"""

import json
import sys
import time

from confluent_kafka import Consumer, ElectionType, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient


BROKERS = 3


def leaders(admin, topic):
    meta = admin.list_topics(topic=topic, timeout=20).topics[topic]
    ids = sorted(meta.partitions)
    return ([meta.partitions[p].leader for p in ids], [meta.partitions[p].replicas[0] for p in ids])


def elect(addrs, topic):
    admin = AdminClient({"bootstrap.servers": addrs})
    # Nodes apply metadata one after another: a node just unfenced may be missing from the
    # view of the one asked for a moment.
    deadline = time.time() + 10
    while True:
        cluster = admin.describe_cluster(request_timeout=20).result(timeout=30)
        if len(cluster.nodes) >= BROKERS or time.time() > deadline:
            break
        time.sleep(0.2)
    before, preferred = leaders(admin, topic)
    partitions = [TopicPartition(topic, p) for p in range(len(before))]
    # No timeout arguments: confluent-kafka 2.16.1's binding rejects any keyword argument
    # of elect_leaders (SystemError from its argument parser).
    results = [0] * len(before)
    # PREFERRED_LEADER_NOT_AVAILABLE (80) while the preferred replica is briefly out of the
    # in-sync set (a node starved past the fencing period under a loaded CI machine is
    # fenced, then rejoins): retried for those partitions, as an operator would.
    deadline = time.time() + 30
    while partitions:
        outcome = admin.elect_leaders(ElectionType.PREFERRED, partitions).result(timeout=40)
        retry = []
        for tp, error in outcome.items():
            code = 0
            if error is not None:
                # A KafkaError, or a KafkaException wrapping one.
                inner = error.args[0] if getattr(error, "args", None) else error
                code = inner.code()
            results[tp.partition] = code
            if code == 80 and time.time() < deadline:
                retry.append(TopicPartition(topic, tp.partition))
        partitions = retry
        if partitions:
            time.sleep(0.5)
    # The proposing node answered once it applied the change; the node metadata comes from
    # may apply it a moment later.
    deadline = time.time() + 20
    while True:
        after, _ = leaders(admin, topic)
        if after == preferred or time.time() > deadline:
            break
        time.sleep(0.2)
    print(json.dumps({
        "brokers": sorted(n.id for n in cluster.nodes),
        "controller": cluster.controller.id if cluster.controller else -1,
        "preferred": preferred,
        "before": before,
        "after": after,
        "results": results,
    }))


def consumer(addrs, group):
    return Consumer({"bootstrap.servers": addrs, "group.id": group,
                     "enable.auto.commit": False, "socket.timeout.ms": 10000})


def coordinator_retries(call):
    """Right after a coordinator moved, the node a client was sent to may not have applied
    the change yet (NOT_COORDINATOR) or may still be loading the slot
    (COORDINATOR_LOAD_IN_PROGRESS); librdkafka hands both to the application for commit()
    and committed(), and the application retries."""
    deadline = time.time() + 20
    while True:
        try:
            return call()
        except KafkaException as e:
            code = e.args[0].code()
            retriable = (KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS)
            if code not in retriable or time.time() > deadline:
                raise
            time.sleep(0.2)


def partition_count(addrs, topic):
    admin = AdminClient({"bootstrap.servers": addrs})
    return len(admin.list_topics(topic=topic, timeout=20).topics[topic].partitions)


def commit(addrs, topic, group, offset):
    n = partition_count(addrs, topic)
    c = consumer(addrs, group)
    coordinator_retries(lambda: c.commit(
        offsets=[TopicPartition(topic, p, offset) for p in range(n)], asynchronous=False))
    c.close()
    print(json.dumps({"committed": offset}))


def committed(addrs, topic, group):
    n = partition_count(addrs, topic)
    c = consumer(addrs, group)
    got = coordinator_retries(
        lambda: c.committed([TopicPartition(topic, p) for p in range(n)], timeout=30))
    c.close()
    print(json.dumps({"committed": [tp.offset for tp in sorted(got, key=lambda t: t.partition)]}))


def config(addrs, topic):
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

    first = addrs.split(",")[0]
    admin = AdminClient({"bootstrap.servers": first})
    res = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "123456000", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([res])[res].result(30)
    values, sources = [], []
    for addr in addrs.split(","):
        node = AdminClient({"bootstrap.servers": addr})
        deadline = time.time() + 20
        while True:
            res = ConfigResource(ConfigResource.Type.TOPIC, topic)
            entry = node.describe_configs([res])[res].result(30)["retention.ms"]
            if entry.value == "123456000" or time.time() > deadline:
                break
            time.sleep(0.2)
        values.append(entry.value)
        sources.append(entry.source)
    print(json.dumps({"retention_ms": values, "source": sources}))


def delete_records(addrs, topic, partition, offset):
    admin = AdminClient({"bootstrap.servers": addrs})
    tp = TopicPartition(topic, partition, offset)
    got = admin.delete_records([tp])[tp].result(30)
    print(json.dumps({"low": got.low_watermark}))


def low(addrs, topic, partition):
    deadline = time.time() + 30
    last = None
    while time.time() < deadline:
        c = Consumer({"bootstrap.servers": addrs, "group.id": "cluster-admin-low"})
        try:
            lo, _ = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=5)
            print(json.dumps({"low": lo}))
            return
        except KafkaException as e:  # no leader yet
            last = e
        finally:
            c.close()
        time.sleep(0.5)
    sys.exit(f"no low watermark for {topic}-{partition}: {last}")


def main():
    phase = sys.argv[1]
    if phase == "elect":
        elect(sys.argv[2], sys.argv[3])
    elif phase == "commit":
        commit(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    elif phase == "config":
        config(sys.argv[2], sys.argv[3])
    elif phase == "delete-records":
        delete_records(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    elif phase == "low":
        low(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif phase == "committed":
        committed(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(f"unknown phase {phase}")


if __name__ == "__main__":
    main()
