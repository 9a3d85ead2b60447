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
              record 150 with its timestamp; earliest and latest answer 0 and 300. A topic
              with message.timestamp.type=LogAppendTime gives its record the append time
              (TIMESTAMP_LOG_APPEND_TIME); one with message.timestamp.after.max.ms=1h refuses
              a record 2 h ahead (INVALID_TIMESTAMP) and takes one at the current time.
  configs     Topic configs through confluent-kafka and kafka-python: creation with overrides
              (including Kafka UI's max.message.bytes 1048588), DescribeConfigs with values and
              sources, IncrementalAlterConfigs SET/DELETE and validate_only, INVALID_CONFIG for
              unknown names and bad values, retention.bytes applied to the running partition at
              once, max.message.bytes enforced, AlterConfigs replacing the whole set, the
              broker resource (read-only).
  records     DeleteRecords (both clients; a consumer from the beginning starts at the new low
              watermark; past the end is OFFSET_OUT_OF_RANGE), CreatePartitions 2 -> 4 (fewer
              refused; the new partitions take records), DescribeLogDirs sizes; a topic with
              compression.type=zstd stores uncompressed batches recompressed (far smaller on
              disk) and serves every record back; DescribeProducers (kafka-python) shows an
              idempotent producer with its last sequence.
  groups      DeleteGroups (then GROUP_ID_NOT_FOUND; a group with a member NON_EMPTY_GROUP),
              OffsetDelete of one partition (a subscribed topic GROUP_SUBSCRIBED_TO_TOPIC).
  metrics     (only when named, with --metrics) /health, /ready and /metrics parsed by
              prometheus_client: families with their types, per-partition records and ends,
              group lag from committed offsets, produce request counts and latencies, and
              series that move with more load.
  configs-after-restart (only when named, after `configs` and `records`) The overrides and
              the moved low watermark survive a restart.

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


def topic_size(kadmin, topic):
    """Bytes of `topic`'s partitions on disk (DescribeLogDirs): partition -> size."""
    sizes = {}
    for broker in kadmin.describe_log_dirs():
        for d in broker.get("log_dirs", broker.get("results", [])):
            for t in d.get("topics", []):
                if t.get("name", t.get("topic")) == topic:
                    for part in t["partitions"]:
                        sizes[part["partition_index"]] = part["partition_size"]
    return sizes


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
    # message.timestamp.type=LogAppendTime: the broker's time replaces the producer's.
    from confluent_kafka import KafkaError, TIMESTAMP_LOG_APPEND_TIME

    lat = f"{a.topic}-lat"
    admin.create_topics([NewTopic(lat, 1, 1, config={
        "message.timestamp.type": "LogAppendTime"})])[lat].result(30)
    bounded = f"{a.topic}-bounded"
    admin.create_topics([NewTopic(bounded, 1, 1, config={
        "message.timestamp.after.max.ms": "3600000"})])[bounded].result(30)
    before = int(time.time() * 1000)
    reports = []
    p = Producer({"bootstrap.servers": a.bootstrap, "acks": "all", "retries": 0})
    p.produce(lat, value=b"old", partition=0, timestamp=T0,
              on_delivery=lambda err, msg: reports.append(("lat", err, msg.timestamp())))
    p.produce(bounded, value=b"future", partition=0, timestamp=before + 2 * 3600_000,
              on_delivery=lambda err, msg: reports.append(("future", err and err.code(), None)))
    # Separate batches: Kafka refuses a whole batch for one record outside the window.
    p.flush(30)
    p.produce(bounded, value=b"now", partition=0, timestamp=before,
              on_delivery=lambda err, msg: reports.append(("now", err and err.code(), None)))
    p.flush(30)
    after = int(time.time() * 1000) + 1000
    got = {name: (err, ts) for name, err, ts in reports}
    if got.get("future", (None,))[0] != KafkaError.INVALID_TIMESTAMP or got.get("now") != (None, None):
        fail(f"message.timestamp.after.max.ms: delivery reports {reports}")
    c = Consumer({"bootstrap.servers": a.bootstrap, "group.id": f"{lat}-g"})
    c.assign([TopicPartition(lat, 0, 0)])
    m = None
    deadline = time.time() + 20
    while m is None and time.time() < deadline:
        m = c.poll(1)
        if m is not None and m.error():
            m = None
    c.close()
    if m is None:
        fail("nothing read back from the LogAppendTime topic")
    kind, stamp = m.timestamp()
    if kind != TIMESTAMP_LOG_APPEND_TIME or not before - 1000 <= stamp <= after:
        fail(f"LogAppendTime record timestamp {(kind, stamp)}, want the append time "
             f"within [{before}, {after}]")
    print(f"admin_apis: timestamps: exact record lookups in gzip batches, none past the end, "
          f"max timestamp at {results['max'][0]}; LogAppendTime stamped, a timestamp past "
          f"message.timestamp.after.max.ms refused", flush=True)


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


def configs(a):
    """Topic configs: create with overrides, describe, incremental and full alters,
    validate_only, refusals, a retention change applied at once, broker describe."""
    from confluent_kafka import Producer, Consumer, TopicPartition
    from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry,
                                       ConfigResource, ConfigSource, NewTopic)
    from confluent_kafka.error import KafkaException
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource as KResource, ConfigResourceType

    topic = f"{a.topic}-cfg"
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    # Kafka UI's create form sends max.message.bytes 1048588 (Kafka's default), above
    # Tidelog's own batch cap: accepted.
    admin.create_topics([NewTopic(topic, 1, 1, config={
        "cleanup.policy": "delete", "retention.ms": "600000", "segment.bytes": "1048576",
        "max.message.bytes": "1048588", "unclean.leader.election.enable": "false"})])[topic].result(30)

    # Names starting "__" that are not the broker's own are topics (Debezium's heartbeats);
    # the broker's own and Kafka's internal ones are refused.
    heartbeat = f"__debezium-heartbeat.{a.topic}"
    admin.create_topics([NewTopic(heartbeat, 1, 1)])[heartbeat].result(30)
    for internal in ["__consumer_offsets", "__meta"]:
        try:
            admin.create_topics([NewTopic(internal, 1, 1)])[internal].result(30)
            fail(f"{internal} was created")
        except KafkaException as e:
            if e.args[0].code() != 17:  # INVALID_TOPIC_EXCEPTION
                fail(f"creating {internal}: {e}")

    def describe(name=topic, rtype=ConfigResource.Type.TOPIC):
        res = ConfigResource(rtype, name)
        return admin.describe_configs([res])[res].result(30)

    d = describe()
    want_set = {"retention.ms": "600000", "segment.bytes": "1048576",
                "max.message.bytes": "1048588", "cleanup.policy": "delete",
                "unclean.leader.election.enable": "false"}
    for name, value in want_set.items():
        e = d.get(name)
        if e is None or e.value != value or e.source != ConfigSource.DYNAMIC_TOPIC_CONFIG.value:
            fail(f"describe {name}: {e and (e.value, e.source)}, want {value} from the topic")
    r = d.get("retention.bytes")
    if r is None or r.value != "-1" or r.source != ConfigSource.DEFAULT_CONFIG.value:
        fail(f"describe retention.bytes (not set): {r and (r.value, r.source)}")
    for must in ["compression.type", "message.timestamp.type", "min.insync.replicas",
                 "delete.retention.ms", "min.cleanable.dirty.ratio"]:
        if must not in d:
            fail(f"describe lacks {must}: {sorted(d)}")

    # Incremental: set one, delete one; validate_only changes nothing.
    res = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "3600000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("max.message.bytes", None, incremental_operation=AlterConfigOpType.DELETE)])
    admin.incremental_alter_configs([res], validate_only=True)[res].result(30)
    if describe()["retention.ms"].value != "600000":
        fail("validate_only changed retention.ms")
    admin.incremental_alter_configs([res])[res].result(30)
    d = describe()
    if d["retention.ms"].value != "3600000":
        fail(f"incremental SET: retention.ms = {d['retention.ms'].value}")
    if d["max.message.bytes"].source != ConfigSource.DEFAULT_CONFIG.value:
        fail(f"incremental DELETE: max.message.bytes still from {d['max.message.bytes'].source}")

    # Refusals: an unknown name and a bad value, as INVALID_CONFIG; nothing changes.
    for bad in [ConfigEntry("no.such.config", "1", incremental_operation=AlterConfigOpType.SET),
                ConfigEntry("retention.ms", "-7", incremental_operation=AlterConfigOpType.SET),
                ConfigEntry("cleanup.policy", "shred", incremental_operation=AlterConfigOpType.SET)]:
        res = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[bad])
        try:
            admin.incremental_alter_configs([res])[res].result(30)
            fail(f"{bad.name}={bad.value} accepted")
        except KafkaException as e:
            if e.args[0].code() != 40:  # INVALID_CONFIG
                fail(f"{bad.name}={bad.value}: {e}")
    res = ConfigResource(ConfigResource.Type.TOPIC, "no-such-topic", incremental_configs=[
        ConfigEntry("retention.ms", "1", incremental_operation=AlterConfigOpType.SET)])
    try:
        admin.incremental_alter_configs([res])[res].result(30)
        fail("altering an unknown topic succeeded")
    except KafkaException:
        pass

    # A retention change applies to the running partition at once: 3 MiB in 1 MiB segments,
    # then retention.bytes 1 MiB deletes the oldest segments within a few retention checks.
    producer = Producer({"bootstrap.servers": a.bootstrap, "linger.ms": 5})
    for i in range(3000):
        producer.produce(topic, value=b"x" * 1024, key=str(i).encode(), partition=0)
        if i % 500 == 0:
            producer.poll(0)
    producer.flush(30)
    res = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.bytes", "1048576", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([res])[res].result(30)
    consumer = Consumer({"bootstrap.servers": a.bootstrap, "group.id": f"{topic}-g"})
    deadline = time.time() + 20
    while True:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        if low > 0:
            break
        if time.time() > deadline:
            fail(f"retention.bytes set to 1 MiB deleted nothing in 20 s (offsets {low}..{high})")
        time.sleep(0.2)
    consumer.close()

    # max.message.bytes is enforced per topic: 2000 refuses a 4000-byte batch
    # (MESSAGE_TOO_LARGE) and takes a small one.
    res = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("max.message.bytes", "2000", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([res])[res].result(30)
    reports = []
    producer = Producer({"bootstrap.servers": a.bootstrap, "acks": "all", "retries": 0})
    for value in [b"y" * 4000, b"z" * 100]:
        producer.produce(topic, value=value, partition=0,
                         on_delivery=lambda err, msg: reports.append(err and err.code()))
        producer.flush(30)
    from confluent_kafka import KafkaError
    if reports != [KafkaError.MSG_SIZE_TOO_LARGE, None]:
        fail(f"max.message.bytes 2000: delivery reports {reports}")

    # AlterConfigs (not incremental) replaces the whole set: unnamed overrides go.
    res = ConfigResource(ConfigResource.Type.TOPIC, topic,
                         set_config={"cleanup.policy": "compact,delete", "retention.ms": "-1"})
    admin.alter_configs([res])[res].result(30)
    d = describe()
    if d["cleanup.policy"].value != "compact,delete" or d["retention.ms"].value != "-1":
        fail(f"alter_configs: {d['cleanup.policy'].value} {d['retention.ms'].value}")
    if d["segment.bytes"].source != ConfigSource.DEFAULT_CONFIG.value:
        fail("alter_configs kept an override it did not name")

    # The broker resource: described, read-only.
    b = describe("0", ConfigResource.Type.BROKER)
    if "log.retention.ms" not in b or not b["num.partitions"].is_read_only:
        fail(f"broker describe: {sorted(b)[:10]}")

    # kafka-python sees the same (its filter 'modified' lists the topic's own overrides).
    kadmin = KafkaAdminClient(bootstrap_servers=a.bootstrap)
    got = kadmin.describe_configs([KResource(ConfigResourceType.TOPIC, topic)])
    text = repr(got)
    if "compact,delete" not in text:
        fail(f"kafka-python describe_configs: {text[:500]}")
    kadmin.close()
    print(f"admin_apis: configs: created with overrides, described with sources, "
          f"incremental and full alters, refusals, retention applied at once (start {low})",
          flush=True)


def records(a):
    """DeleteRecords, CreatePartitions and DescribeLogDirs."""
    from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic
    from kafka import KafkaAdminClient
    from kafka import TopicPartition as KTP

    topic = f"{a.topic}-rec"
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": a.bootstrap, "acks": "all"})
    for i in range(500):
        producer.produce(topic, value=f"v{i}".encode(), partition=i % 2)
    producer.flush(30)

    # DeleteRecords through both clients: librdkafka on partition 0, kafka-python on 1.
    tp0 = TopicPartition(topic, 0, 100)
    got = admin.delete_records([tp0])[tp0].result(30)
    if got.low_watermark != 100:
        fail(f"delete_records low watermark {got.low_watermark}, want 100")
    kadmin = KafkaAdminClient(bootstrap_servers=a.bootstrap)
    kgot = kadmin.delete_records({KTP(topic, 1): 40})
    if kgot[KTP(topic, 1)]["low_watermark"] != 40:
        fail(f"kafka-python delete_records: {kgot}")
    consumer = Consumer({"bootstrap.servers": a.bootstrap, "group.id": f"{topic}-g",
                         "auto.offset.reset": "earliest"})
    for p, low in [(0, 100), (1, 40)]:
        lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        if (lo, hi) != (low, 250):
            fail(f"partition {p} watermarks {(lo, hi)}, want {(low, 250)}")
    # A consumer from the beginning starts at the new low watermark.
    consumer.assign([TopicPartition(topic, 0, -2)])
    first = None
    deadline = time.time() + 20
    while first is None and time.time() < deadline:
        m = consumer.poll(1)
        if m is not None and not m.error():
            first = m.offset()
    consumer.close()
    if first != 100:
        fail(f"a consumer from the beginning first read offset {first}, want 100")
    # Past the high watermark: OFFSET_OUT_OF_RANGE.
    far = TopicPartition(topic, 0, 10_000)
    try:
        admin.delete_records([far])[far].result(30)
        fail("delete_records past the end succeeded")
    except KafkaException as e:
        if e.args[0].code() != 1:
            fail(f"delete_records past the end: {e}")

    # CreatePartitions: 2 -> 4; fewer is refused (INVALID_PARTITIONS); the new ones work.
    f = admin.create_partitions([NewPartitions(topic, 4)])[topic]
    f.result(30)
    try:
        admin.create_partitions([NewPartitions(topic, 3)])[topic].result(30)
        fail("shrinking to 3 partitions succeeded")
    except KafkaException as e:
        if e.args[0].code() != 37:
            fail(f"shrinking: {e}")
    meta = admin.list_topics(topic, timeout=10).topics[topic]
    if sorted(meta.partitions) != [0, 1, 2, 3]:
        fail(f"partitions after growing: {sorted(meta.partitions)}")
    reports = []
    producer = Producer({"bootstrap.servers": a.bootstrap, "acks": "all"})
    for i in range(20):
        producer.produce(topic, value=b"new", partition=3,
                         on_delivery=lambda err, msg: reports.append((err, msg.offset())))
    producer.flush(30)
    if [r for r in reports if r[0] is not None] or len(reports) != 20:
        fail(f"producing to the new partition: {reports[:3]}")

    # DescribeLogDirs: every partition of the topic, with its size.
    sizes = topic_size(kadmin, topic)
    if sorted(sizes) != [0, 1, 2, 3] or not all(sizes[p] > 0 for p in (0, 1, 3)):
        fail(f"describe_log_dirs sizes {sizes}")
    # DescribeProducers: an idempotent producer's id, epoch and last sequence.
    idem = Producer({"bootstrap.servers": a.bootstrap, "enable.idempotence": True})
    for _ in range(10):
        idem.produce(topic, value=b"idem", partition=1)
    idem.flush(30)
    states = kadmin.describe_producers([KTP(topic, 1)])[KTP(topic, 1)].active_producers
    if len(states) != 1 or states[0].producer_id < 0 or states[0].last_sequence != 9:
        fail(f"describe_producers: {states}")

    # compression.type=zstd: uncompressed batches are stored recompressed, read back whole.
    zt = f"{a.topic}-zstd"
    admin.create_topics([NewTopic(zt, 1, 1, config={"compression.type": "zstd"})])[zt].result(30)
    plain = Producer({"bootstrap.servers": a.bootstrap, "acks": "all",
                      "compression.type": "none", "linger.ms": 50})
    texts = [f"{i:05d} " + "the same words again and again " * 30 for i in range(300)]
    for t in texts:
        plain.produce(zt, value=t.encode(), partition=0)
    plain.flush(30)
    c = Consumer({"bootstrap.servers": a.bootstrap, "group.id": f"{zt}-g"})
    c.assign([TopicPartition(zt, 0, 0)])
    read = []
    deadline = time.time() + 30
    while len(read) < len(texts) and time.time() < deadline:
        m = c.poll(1)
        if m is not None and not m.error():
            read.append(m.value().decode())
    c.close()
    if read != texts:
        fail(f"read back {len(read)} of {len(texts)} records from the zstd topic")
    stored = sum(topic_size(kadmin, zt).values())
    raw = sum(len(t) for t in texts)
    if not 0 < stored < raw // 4:
        fail(f"the zstd topic takes {stored} bytes for {raw} bytes sent uncompressed")
    kadmin.close()
    print(f"admin_apis: records: delete_records moved low watermarks to 100 and 40, "
          f"partitions 2 -> 4, log dir sizes {sizes}; compression.type=zstd stored "
          f"{stored} bytes for {raw} sent uncompressed", flush=True)


def groups(a):
    """DeleteGroups and OffsetDelete."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic
    from kafka import KafkaAdminClient
    from kafka import TopicPartition as KTP

    topic = f"{a.topic}-grp"
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(30)

    def commit(group, offsets):
        c = Consumer({"bootstrap.servers": a.bootstrap, "group.id": group})
        c.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets], asynchronous=False)
        c.close()

    def committed(group):
        c = Consumer({"bootstrap.servers": a.bootstrap, "group.id": group})
        got = c.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=10)
        c.close()
        return [t.offset for t in got]

    commit("doomed", [(0, 5), (1, 7)])
    commit("pruned", [(0, 3), (1, 4)])
    if committed("doomed") != [5, 7]:
        fail(f"committed before deletion: {committed('doomed')}")
    admin.delete_consumer_groups(["doomed"])["doomed"].result(30)
    if committed("doomed") != [-1001, -1001]:
        fail(f"a deleted group's offsets: {committed('doomed')}")
    try:
        admin.delete_consumer_groups(["doomed"])["doomed"].result(30)
        fail("deleting a deleted group succeeded")
    except KafkaException as e:
        if e.args[0].code() != 69:  # GROUP_ID_NOT_FOUND
            fail(f"deleting again: {e}")
    # A group with a live member is not deleted (NON_EMPTY_GROUP).
    live = Consumer({"bootstrap.servers": a.bootstrap, "group.id": "busy",
                     "session.timeout.ms": 6000})
    live.subscribe([topic])
    deadline = time.time() + 20
    while not live.assignment() and time.time() < deadline:
        live.poll(0.2)
    try:
        admin.delete_consumer_groups(["busy"])["busy"].result(30)
        fail("deleting a group with a member succeeded")
    except KafkaException as e:
        if e.args[0].code() != 68:  # NON_EMPTY_GROUP
            fail(f"deleting a live group: {e}")
    # OffsetDelete (kafka-python): one partition's position goes, the other stays; the live
    # group's subscribed topic is refused per partition.
    kadmin = KafkaAdminClient(bootstrap_servers=a.bootstrap)
    result = kadmin.delete_group_offsets("pruned", [KTP(topic, 0)])
    if [e.__name__ for e in result.values()] != ["NoError"]:
        fail(f"delete_group_offsets: {result}")
    if committed("pruned") != [-1001, 4]:
        fail(f"after delete_group_offsets: {committed('pruned')}")
    result = kadmin.delete_group_offsets("busy", [KTP(topic, 0)])
    if [e.__name__ for e in result.values()] != ["GroupSubscribedToTopicError"]:
        fail(f"delete_group_offsets of a subscribed topic: {result}")
    kadmin.close()
    live.close()
    print("admin_apis: groups: a group deleted (then not found), a live one refused, "
          "one partition's offset deleted", flush=True)


def metrics(a):
    """The metrics endpoint, parsed by Prometheus' own Python parser."""
    import urllib.request
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic
    from prometheus_client.parser import text_string_to_metric_families

    if not a.metrics:
        fail("the metrics phase needs --metrics HOST:PORT")
    base = f"http://{a.metrics}"

    def get(path):
        try:
            with urllib.request.urlopen(base + path, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def scrape():
        status, text = get("/metrics")
        if status != 200:
            fail(f"/metrics answered {status}")
        samples = {}
        families = {}
        for family in text_string_to_metric_families(text):
            families[family.name] = family.type
            for s in family.samples:
                samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return families, samples

    def value(samples, name, **labels):
        want = set(labels.items())
        return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))

    if get("/health")[0] != 200 or get("/ready")[0] != 200:
        fail(f"/health {get('/health')} /ready {get('/ready')}")
    if get("/nope")[0] != 404:
        fail("an unknown path is not 404")

    topic = f"{a.topic}-met"
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": a.bootstrap, "acks": "all"})

    def produce(n):
        for i in range(n):
            producer.produce(topic, value=b"m" * 100, partition=i % 2)
        producer.flush(30)

    produce(100)
    group = f"{topic}-g"
    c = Consumer({"bootstrap.servers": a.bootstrap, "group.id": group})
    c.commit(offsets=[TopicPartition(topic, 0, 10), TopicPartition(topic, 1, 50)],
             asynchronous=False)
    c.close()
    families, first = scrape()
    for name, kind in [("tidelog_partition_in_bytes", "counter"),
                       ("tidelog_partition_records_in", "counter"),
                       ("tidelog_partition_log_end_offset", "gauge"),
                       ("tidelog_partition_size_bytes", "gauge"),
                       ("tidelog_kafka_requests", "counter"),
                       ("tidelog_kafka_request_duration_seconds", "histogram"),
                       ("tidelog_fsync_duration_seconds", "histogram"),
                       ("tidelog_fsyncs", "counter"),
                       ("tidelog_connections", "gauge"),
                       ("tidelog_cache_used_bytes", "gauge"),
                       ("tidelog_group_lag", "gauge")]:
        if families.get(name) != kind:
            fail(f"family {name}: {families.get(name)}, want {kind}")
    records = value(first, "tidelog_partition_records_in_total", topic=topic)
    ends = value(first, "tidelog_partition_log_end_offset", topic=topic)
    if records != 100 or ends != 100:
        fail(f"records in {records}, log ends {ends}, want 100 each")
    lag = {p: value(first, "tidelog_group_lag", group=group, topic=topic, partition=str(p))
           for p in (0, 1)}
    if lag != {0: 40, 1: 0}:
        fail(f"group lag {lag}, want {{0: 40, 1: 0}}")
    produces = value(first, "tidelog_kafka_requests_total", api="produce")
    synced = value(first, "tidelog_kafka_request_duration_seconds_count", api="produce",
                   acks="all")
    if produces < 1 or synced < 1:
        fail(f"produce requests {produces}, acks=all latencies {synced}")
    # The series move with the load.
    produce(100)
    _, second = scrape()
    moved = {
        "bytes in": (value(first, "tidelog_partition_in_bytes_total", topic=topic),
                     value(second, "tidelog_partition_in_bytes_total", topic=topic)),
        "fsyncs": (value(first, "tidelog_fsyncs_total"), value(second, "tidelog_fsyncs_total")),
        "lag": (lag[0], value(second, "tidelog_group_lag", group=group, topic=topic,
                              partition="0")),
    }
    for what, (before, after) in moved.items():
        if not after > before:
            fail(f"{what} did not move: {before} -> {after}")
    print(f"admin_apis: metrics: /health, /ready, {len(families)} families parsed by "
          f"prometheus_client, lag {lag}, series moving {moved}", flush=True)


def configs_after_restart(a):
    from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource

    topic = f"{a.topic}-cfg"
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    d = admin.describe_configs([res])[res].result(30)
    if (d["cleanup.policy"].value, d["retention.ms"].value) != ("compact,delete", "-1") \
            or d["cleanup.policy"].source != ConfigSource.DYNAMIC_TOPIC_CONFIG.value:
        fail(f"after restart: {d['cleanup.policy'].value} {d['retention.ms'].value}")
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": a.bootstrap, "group.id": f"{topic}-g2"})
    lo, _ = consumer.get_watermark_offsets(TopicPartition(f"{a.topic}-rec", 0), timeout=10)
    consumer.close()
    if lo != 100:
        fail(f"after restart the low watermark of {a.topic}-rec/0 is {lo}, want 100")
    print("admin_apis: configs-after-restart: overrides and deleted records survived the "
          "restart", flush=True)


PHASES = {"versions": versions, "timestamps": timestamps, "configs": configs,
          "records": records, "groups": groups, "metrics": metrics,
          "configs-after-restart": configs_after_restart}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--phase", action="append", choices=sorted(PHASES))
    p.add_argument("--metrics", help="the broker's metrics address (HOST:PORT)")
    p.add_argument("--timeout", type=float, default=120.0)
    a = p.parse_args()
    watchdog(a.timeout)
    skipped = {"configs-after-restart", "metrics"}
    for name in a.phase or [p for p in PHASES if p not in skipped]:
        PHASES[name](a)


if __name__ == "__main__":
    main()
