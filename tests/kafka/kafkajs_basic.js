// kafkajs against a Kafka-compatible broker: admin, produce, a consumer group, offsets.
//
//   node kafkajs_basic.js BOOTSTRAP TOPIC
//
// 1. Admin: createTopics (3 partitions), listTopics, fetchTopicMetadata, describeConfigs of
//    the topic (retention.ms as created), createPartitions (3 -> 4).
// 2. A producer (acks=-1, idempotent) sends RECORDS keyed records; every send is
//    acknowledged.
// 3. Two consumers in one group read them all (eachMessage), each record exactly once
//    between them; the group commits.
// 4. Admin: describeGroups (two members, Stable), fetchOffsets for the group (the committed
//    offsets add up to RECORDS), fetchTopicOffsets (high watermarks add up to RECORDS),
//    deleteTopicRecords on partition 0, listGroups.
// Prints one summary line and exits 0, or prints the reason and exits 1. Bounded by a timer.
'use strict';
const path = require('path');
const { Kafka, logLevel, ConfigResourceTypes } = require(
  path.resolve(process.env.KAFKAJS_DIR || '.', 'node_modules', 'kafkajs'));

const [bootstrap, topic] = process.argv.slice(2);
const RECORDS = 600;
const fail = (msg) => {
  console.error(`kafkajs_basic: FAIL: ${msg}`);
  process.exit(1);
};
setTimeout(() => fail('timed out after 120 s'), 120000).unref();

async function main() {
  const kafka = new Kafka({ clientId: 'kafkajs-test', brokers: [bootstrap], logLevel: logLevel.ERROR });
  const admin = kafka.admin();
  await admin.connect();
  const created = await admin.createTopics({
    topics: [{ topic, numPartitions: 3, replicationFactor: 1,
      configEntries: [{ name: 'retention.ms', value: '3600000' }] }],
    waitForLeaders: true,
  });
  if (!created) fail('createTopics answered false');
  const topics = await admin.listTopics();
  if (!topics.includes(topic)) fail(`listTopics lacks ${topic}: ${topics}`);
  const configs = await admin.describeConfigs({
    resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configNames: ['retention.ms'] }],
    includeSynonyms: false,
  });
  const retention = configs.resources[0].configEntries.find((e) => e.configName === 'retention.ms');
  if (!retention || retention.configValue !== '3600000') {
    fail(`describeConfigs retention.ms: ${JSON.stringify(configs.resources[0])}`);
  }
  await admin.createPartitions({ topicPartitions: [{ topic, count: 4 }] });
  const meta = await admin.fetchTopicMetadata({ topics: [topic] });
  if (meta.topics[0].partitions.length !== 4) {
    fail(`partitions after createPartitions: ${meta.topics[0].partitions.length}`);
  }

  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const sent = new Set();
  for (let batch = 0; batch < RECORDS / 100; batch++) {
    const messages = [];
    for (let i = 0; i < 100; i++) {
      const n = batch * 100 + i;
      messages.push({ key: `k${n % 17}`, value: `v${n}` });
      sent.add(`v${n}`);
    }
    const acks = await producer.send({ topic, acks: -1, messages });
    if (acks.some((a) => a.errorCode !== 0)) fail(`send: ${JSON.stringify(acks)}`);
  }
  await producer.disconnect();

  const group = `${topic}-group`;
  const seen = new Map();
  const consumers = [0, 1].map(() => kafka.consumer({ groupId: group, sessionTimeout: 10000,
    heartbeatInterval: 500 }));
  for (const c of consumers) {
    await c.connect();
    await c.subscribe({ topic, fromBeginning: true });
  }
  await Promise.all(consumers.map((c) => c.run({
    eachMessage: async ({ message }) => {
      const v = message.value.toString();
      seen.set(v, (seen.get(v) || 0) + 1);
    },
  })));
  const deadline = Date.now() + 60000;
  while (seen.size < RECORDS) {
    if (Date.now() > deadline) fail(`consumed ${seen.size} of ${RECORDS}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const twice = [...seen.entries()].filter(([, n]) => n > 1);
  if (twice.length) fail(`consumed twice: ${twice.slice(0, 5)}`);
  if ([...sent].some((v) => !seen.has(v))) fail('a sent record was not consumed');

  // Wait until the group's commits cover everything, then look at the group.
  let committed = 0;
  const commitDeadline = Date.now() + 30000;
  while (committed !== RECORDS) {
    if (Date.now() > commitDeadline) fail(`committed offsets add up to ${committed}`);
    const offsets = await admin.fetchOffsets({ groupId: group, topics: [topic] });
    committed = offsets[0].partitions.reduce((s, p) => s + Math.max(0, Number(p.offset)), 0);
    if (committed !== RECORDS) await new Promise((r) => setTimeout(r, 200));
  }
  const described = await admin.describeGroups([group]);
  const g = described.groups[0];
  if (g.state !== 'Stable' || g.members.length !== 2) {
    fail(`describeGroups: ${g.state} with ${g.members.length} members`);
  }
  const listed = await admin.listGroups();
  if (!listed.groups.some((x) => x.groupId === group)) fail('listGroups lacks the group');
  const ends = await admin.fetchTopicOffsets(topic);
  const total = ends.reduce((s, p) => s + Number(p.high), 0);
  if (total !== RECORDS) fail(`high watermarks add up to ${total}`);
  const p0 = ends.find((p) => p.partition === 0);
  await admin.deleteTopicRecords({ topic, partitions: [{ partition: 0, offset: p0.high }] });
  const after = await admin.fetchTopicOffsets(topic);
  const p0After = after.find((p) => p.partition === 0);
  if (p0After.low !== p0.high) fail(`low watermark after deleteTopicRecords: ${p0After.low}`);
  for (const c of consumers) await c.disconnect();
  await admin.disconnect();
  console.log(`kafkajs_basic: admin (create, describeConfigs, createPartitions, groups, ` +
    `offsets, deleteTopicRecords), ${RECORDS} idempotent acks=-1 records consumed once ` +
    `by a 2-member group`);
}

main().catch((e) => fail(e && e.stack ? e.stack : e));
