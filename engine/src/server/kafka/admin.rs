//! Metadata, topics, offsets lookups and producer ids over the Kafka protocol.

use super::{code, error_code, KafkaConnError, KafkaConnection, RequestMeta};
use crate::meta::TopicConfig;
use crate::shard::{partition_index, ListedOffset, Route, ShardError};
use tidelog_wire::kafka::generated::{
    create_topics_request::CreateTopicsRequest,
    create_topics_response::{CreatableTopicResult, CreateTopicsResponse},
    delete_topics_request::DeleteTopicsRequest,
    delete_topics_response::{DeletableTopicResult, DeleteTopicsResponse},
    init_producer_id_request::InitProducerIdRequest,
    init_producer_id_response::InitProducerIdResponse,
    list_offsets_request::ListOffsetsRequest,
    list_offsets_response::{
        ListOffsetsPartitionResponse, ListOffsetsResponse, ListOffsetsTopicResponse,
    },
    metadata_request::MetadataRequest,
    metadata_response::{
        MetadataResponse, MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    },
    offset_for_leader_epoch_request::OffsetForLeaderEpochRequest,
    offset_for_leader_epoch_response::{
        EpochEndOffset, OffsetForLeaderEpochResponse, OffsetForLeaderTopicResult,
    },
};

/// The cluster id every node reports.
pub(super) const CLUSTER_ID: &str = "tidelog";

/// The controller a client is told of. Any node takes admin requests (it proposes them to
/// the metadata Raft, which forwards to its leader), so a client is pointed at the node it
/// already talks to: a dead metadata leader is never advertised while a new one is elected.
pub(super) fn controller_id(view: Option<&crate::shard::cluster::View>) -> i32 {
    match view {
        None => 0,
        Some(view) => crate::cluster::kafka_broker_id(view.me, 0),
    }
}

impl KafkaConnection {
    pub(super) async fn metadata(
        &mut self,
        meta: &RequestMeta,
        request: MetadataRequest,
    ) -> Result<(), KafkaConnError> {
        let shard = std::rc::Rc::clone(self.shard());
        let wanted: Option<Vec<String>> = match request.topics {
            None => None,
            Some(topics) if topics.is_empty() && meta.version == 0 => None,
            Some(topics) => Some(topics.into_iter().filter_map(|t| t.name).collect()),
        };
        // Unknown topics are created when the client allows it (v4+ asks; before, always).
        let mut create_errors = std::collections::HashMap::new();
        if let Some(names) = &wanted {
            let auto = meta.version < 4 || request.allow_auto_topic_creation;
            let mut creates = 0;
            for name in names {
                if shard.has_topic(name) {
                    continue;
                }
                if !auto || creates == crate::limits::AUTO_CREATES_PER_REQUEST_MAX {
                    continue;
                }
                creates += 1;
                let config = TopicConfig::with_partitions(self.server().config.default_partitions);
                match shard.create_topic(name, config).await {
                    Ok(()) | Err(ShardError::TopicExists(_)) => {}
                    Err(e) => {
                        create_errors.insert(name.clone(), error_code(&e));
                    }
                }
            }
        }
        let view = shard.view();
        let brokers = self
            .brokers(view.as_deref())
            .into_iter()
            .map(|(node_id, host, port)| MetadataResponseBroker {
                node_id,
                host,
                port,
                rack: None,
            })
            .collect();
        // A partition's Kafka broker id: its node's shard that owns it.
        let broker_of = |topic: &str, p: u32, node: crate::cluster::NodeId| -> Option<i32> {
            let view = view.as_ref()?;
            let info = view.state.nodes.get(&node)?;
            let s = crate::meta::shard_for(topic, p, info.shards());
            Some(crate::cluster::kafka_broker_id(node, s))
        };
        let topics = {
            let topics = shard.topics();
            let names: Vec<String> = match wanted {
                Some(names) => names,
                None => topics.keys().cloned().collect(),
            };
            names
                .into_iter()
                .map(|name| {
                    let mut topic = MetadataResponseTopic::default();
                    match topics.get(&name) {
                        Some(config) => {
                            topic.partitions = (0..config.partitions)
                                .map(|p| match &view {
                                    None => {
                                        let leader = shard.owner(&name, p) as i32;
                                        MetadataResponsePartition {
                                            error_code: code::NONE,
                                            partition_index: p as i32,
                                            leader_id: leader,
                                            leader_epoch: 0,
                                            replica_nodes: vec![leader],
                                            isr_nodes: vec![leader],
                                            offline_replicas: Vec::new(),
                                        }
                                    }
                                    Some(view) => {
                                        let part = view
                                            .state
                                            .topics
                                            .get(&name)
                                            .and_then(|t| t.partitions.get(p as usize));
                                        let replicas: Vec<crate::cluster::NodeId> =
                                            part.map(|m| m.replicas.clone()).unwrap_or_default();
                                        let ids_of = |nodes: &[crate::cluster::NodeId]| {
                                            nodes
                                                .iter()
                                                .map(|&n| broker_of(&name, p, n).unwrap_or(-1))
                                                .collect::<Vec<i32>>()
                                        };
                                        let ids = ids_of(&replicas);
                                        let isr = part.map(|m| ids_of(&m.isr)).unwrap_or_default();
                                        let leader = part
                                            .and_then(|m| m.leader)
                                            .filter(|&n| view.state.is_live(n))
                                            .and_then(|n| broker_of(&name, p, n));
                                        let offline: Vec<i32> = replicas
                                            .iter()
                                            .filter(|&&n| !view.state.is_live(n))
                                            .map(|&n| broker_of(&name, p, n).unwrap_or(-1))
                                            .collect();
                                        MetadataResponsePartition {
                                            // The leader's node is fenced or not registered.
                                            error_code: if leader.is_some() {
                                                code::NONE
                                            } else {
                                                code::LEADER_NOT_AVAILABLE
                                            },
                                            partition_index: p as i32,
                                            leader_id: leader.unwrap_or(-1),
                                            leader_epoch: part.map_or(0, |m| {
                                                i32::try_from(m.leader_epoch).unwrap_or(i32::MAX)
                                            }),
                                            replica_nodes: ids,
                                            isr_nodes: isr,
                                            offline_replicas: offline,
                                        }
                                    }
                                })
                                .collect();
                        }
                        None => {
                            topic.error_code = create_errors
                                .get(&name)
                                .copied()
                                .unwrap_or(code::UNKNOWN_TOPIC_OR_PARTITION);
                        }
                    }
                    // Clients leave internal topics out of pattern subscriptions.
                    topic.is_internal = name == crate::groups::OFFSETS_TOPIC;
                    topic.name = Some(name);
                    topic
                })
                .collect()
        };
        let response = MetadataResponse {
            brokers,
            cluster_id: Some(CLUSTER_ID.into()),
            controller_id: controller_id(view.as_deref()),
            topics,
            ..Default::default()
        };
        self.respond(meta, |out, v| response.encode(out, v)).await
    }

    /// The Kafka brokers as `(id, host, port)`: this node's shards on a single node; every
    /// shard of every live registered node in a cluster (a fenced node is left out, as Kafka
    /// leaves out fenced brokers, so clients do not try it).
    pub(super) fn brokers(
        &self,
        view: Option<&crate::shard::cluster::View>,
    ) -> Vec<(i32, String, i32)> {
        match view {
            None => (0..self.shard().shards())
                .map(|node| {
                    let (host, port) = self.node(node);
                    (node as i32, host, port)
                })
                .collect(),
            Some(view) => view
                .live_shards()
                .filter_map(|(node, s)| {
                    let port = node.kafka_ports.get(s)?;
                    Some((
                        crate::cluster::kafka_broker_id(node.id, s),
                        node.kafka_host.clone(),
                        i32::from(*port),
                    ))
                })
                .collect(),
        }
    }

    pub(super) async fn list_offsets(
        &mut self,
        meta: &RequestMeta,
        request: ListOffsetsRequest,
    ) -> Result<(), KafkaConnError> {
        let shard = std::rc::Rc::clone(self.shard());
        let mut response = ListOffsetsResponse::default();
        for topic in request.topics {
            let mut result = ListOffsetsTopicResponse {
                name: topic.name.clone(),
                partitions: Vec::with_capacity(topic.partitions.len()),
            };
            for p in topic.partitions {
                let mut out = ListOffsetsPartitionResponse {
                    partition_index: p.partition_index,
                    timestamp: -1,
                    offset: -1,
                    leader_epoch: 0,
                    ..Default::default()
                };
                let listed = match partition_index(p.partition_index) {
                    Err(e) => Err(e),
                    Ok(index) => {
                        shard
                            .list_offset(&topic.name, index, p.timestamp, Route::Local)
                            .await
                    }
                };
                match listed {
                    Ok(ListedOffset { offset, timestamp }) => {
                        out.offset = offset;
                        out.timestamp = timestamp;
                        if meta.version == 0 {
                            out.old_style_offsets = vec![offset];
                        }
                    }
                    Err(e) => out.error_code = error_code(&e),
                }
                result.partitions.push(out);
            }
            response.topics.push(result);
        }
        self.respond(meta, |out, v| response.encode(out, v)).await
    }

    pub(super) async fn init_producer_id(
        &mut self,
        meta: &RequestMeta,
        request: InitProducerIdRequest,
    ) -> Result<(), KafkaConnError> {
        let mut response = InitProducerIdResponse {
            producer_id: -1,
            producer_epoch: -1,
            ..Default::default()
        };
        if request
            .transactional_id
            .as_deref()
            .is_some_and(|t| !t.is_empty())
        {
            // Transactions are not supported (and their APIs are not advertised).
            response.error_code = code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
        } else if request.producer_id >= 0 && request.producer_epoch >= 0 {
            // KIP-360 epoch bump of a known producer; a new id once the epoch is exhausted.
            if request.producer_epoch < i16::MAX - 1 {
                response.producer_id = request.producer_id;
                response.producer_epoch = request.producer_epoch + 1;
            } else {
                match self.shard().allocate_producer_id().await {
                    Ok(id) => {
                        response.producer_id = id;
                        response.producer_epoch = 0;
                    }
                    Err(e) => response.error_code = error_code(&e),
                }
            }
        } else {
            match self.shard().allocate_producer_id().await {
                Ok(id) => {
                    response.producer_id = id;
                    response.producer_epoch = 0;
                }
                Err(e) => response.error_code = error_code(&e),
            }
        }
        self.respond(meta, |out, v| response.encode(out, v)).await
    }

    pub(super) async fn create_topics(
        &mut self,
        meta: &RequestMeta,
        request: CreateTopicsRequest,
    ) -> Result<(), KafkaConnError> {
        let shard = std::rc::Rc::clone(self.shard());
        let default_partitions = self.server().config.default_partitions;
        let mut response = CreateTopicsResponse::default();
        for topic in request.topics {
            let mut result = CreatableTopicResult {
                name: topic.name.clone(),
                num_partitions: -1,
                replication_factor: -1,
                ..Default::default()
            };
            match topic_config(&default_partitions, &topic) {
                Err((error, message)) => {
                    result.error_code = error;
                    result.error_message = Some(message);
                }
                Ok(config) if request.validate_only => {
                    result.num_partitions = config.partitions as i32;
                    result.replication_factor = topic.replication_factor.max(1);
                }
                Ok(config) => match shard
                    .create_topic_with(
                        &topic.name,
                        config,
                        u16::try_from(topic.replication_factor).ok(),
                    )
                    .await
                {
                    Ok(()) => {
                        result.num_partitions = config.partitions as i32;
                        result.replication_factor = topic.replication_factor.max(1);
                    }
                    Err(e) => {
                        result.error_code = error_code(&e);
                        result.error_message = Some(e.to_string());
                    }
                },
            }
            if meta.version >= 5 {
                result.configs = Some(Vec::new());
            }
            response.topics.push(result);
        }
        self.respond(meta, |out, v| response.encode(out, v)).await
    }

    pub(super) async fn delete_topics(
        &mut self,
        meta: &RequestMeta,
        request: DeleteTopicsRequest,
    ) -> Result<(), KafkaConnError> {
        let shard = std::rc::Rc::clone(self.shard());
        let names: Vec<Option<String>> = if meta.version >= 6 {
            request.topics.into_iter().map(|t| t.name).collect()
        } else {
            request.topic_names.into_iter().map(Some).collect()
        };
        let mut response = DeleteTopicsResponse::default();
        for name in names {
            let mut result = DeletableTopicResult {
                name: name.clone(),
                ..Default::default()
            };
            match name {
                // Deletion by topic id: topic ids are not supported (all zero).
                None => result.error_code = code::UNKNOWN_TOPIC_OR_PARTITION,
                Some(name) => {
                    if let Err(e) = shard.delete_topic(&name).await {
                        result.error_code = error_code(&e);
                        result.error_message = Some(e.to_string());
                    }
                }
            }
            response.responses.push(result);
        }
        self.respond(meta, |out, v| response.encode(out, v)).await
    }

    pub(super) async fn offset_for_leader_epoch(
        &mut self,
        meta: &RequestMeta,
        request: OffsetForLeaderEpochRequest,
    ) -> Result<(), KafkaConnError> {
        let mut response = OffsetForLeaderEpochResponse::default();
        for topic in request.topics {
            let mut result = OffsetForLeaderTopicResult {
                topic: topic.topic.clone(),
                partitions: Vec::new(),
            };
            for p in topic.partitions {
                let mut out = EpochEndOffset {
                    partition: p.partition,
                    leader_epoch: -1,
                    end_offset: -1,
                    ..Default::default()
                };
                let answer = partition_index(p.partition).and_then(|index| {
                    self.shard()
                        .epoch_end_offset(&topic.topic, index, i64::from(p.leader_epoch))
                });
                match answer {
                    Ok((epoch, end)) => {
                        out.leader_epoch = i32::try_from(epoch).unwrap_or(-1);
                        out.end_offset = end;
                    }
                    Err(e) => out.error_code = error_code(&e),
                }
                result.partitions.push(out);
            }
            response.topics.push(result);
        }
        self.respond(meta, |out, v| response.encode(out, v)).await
    }
}

/// A CreateTopics entry as a topic configuration, or (error code, message).
fn topic_config(
    default_partitions: &u32,
    topic: &tidelog_wire::kafka::generated::create_topics_request::CreatableTopic,
) -> Result<TopicConfig, (i16, String)> {
    let partitions = match topic.num_partitions {
        -1 => *default_partitions,
        n if n >= 1 => n as u32,
        n => return Err((code::INVALID_PARTITIONS, format!("{n} partitions"))),
    };
    if !topic.assignments.is_empty() {
        return Err((
            code::INVALID_REQUEST,
            "manual replica assignment is not supported".into(),
        ));
    }
    if topic.replication_factor == 0 || topic.replication_factor < -1 {
        return Err((
            code::INVALID_REPLICATION_FACTOR,
            format!("replication factor {}", topic.replication_factor),
        ));
    }
    let mut config = TopicConfig::with_partitions(partitions);
    for entry in &topic.configs {
        // Kafka's names and values; an unknown name is INVALID_CONFIG, as Kafka answers.
        crate::topic_configs::apply(&mut config, &entry.name, entry.value.as_deref())
            .map_err(|e| (code::INVALID_CONFIG, e.0))?;
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::Limit;
    use tidelog_wire::kafka::generated::create_topics_request::{
        CreatableTopic, CreatableTopicConfig,
    };

    fn with_configs(configs: &[(&str, &str)]) -> Result<TopicConfig, (i16, String)> {
        let topic = CreatableTopic {
            name: "t".into(),
            num_partitions: 1,
            replication_factor: -1,
            configs: configs
                .iter()
                .map(|(name, value)| CreatableTopicConfig {
                    name: (*name).into(),
                    value: Some((*value).into()),
                })
                .collect(),
            ..Default::default()
        };
        topic_config(&1, &topic)
    }

    /// `retention.ms=-1` and `retention.bytes=-1` are Kafka's "keep forever": before, the
    /// first became a limit of -1 ms (every sealed segment deleted at the next retention
    /// pass) and the second "unset" (the broker default).
    #[test]
    fn minus_one_retention_means_no_limit() {
        let config = with_configs(&[("retention.ms", "-1"), ("retention.bytes", "-1")])
            .expect("valid configs");
        assert_eq!(config.retention_ms, Limit::Unlimited);
        assert_eq!(config.retention_bytes, Limit::Unlimited);
        let log = config.log_config(&crate::config::LogConfig::default());
        assert_eq!((log.retention_ms, log.retention_bytes), (None, None));
        log.validate().expect("a valid log configuration");
    }

    #[test]
    fn other_negative_retention_is_an_invalid_config() {
        for (name, value) in [("retention.ms", "-2"), ("retention.bytes", "-7")] {
            let refused = with_configs(&[(name, value)]).expect_err("refused");
            assert_eq!(refused.0, code::INVALID_CONFIG, "{name}={value}");
        }
        let kept = with_configs(&[("retention.ms", "60000")]).expect("valid");
        assert_eq!(kept.retention_ms, Limit::At(60_000));
    }
}
