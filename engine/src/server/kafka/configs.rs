//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs over the Kafka protocol.
//!
//! Topic resources read and change the topic's overrides ([`crate::topic_configs`]); a
//! change is persisted in the metadata log and applied by every shard before the answer.
//! Broker resources are described (the broker's settings, read-only: they come from its
//! flags); changing them is refused with INVALID_REQUEST.

use super::{code, error_code, KafkaConnError, KafkaConnection, RequestMeta};
use crate::meta::TopicConfig;
use crate::topic_configs::{self, ConfigDef, InvalidConfig, Kind, TOPIC_CONFIGS};
use tidelog_wire::kafka::generated::{
    alter_configs_request::AlterConfigsRequest,
    alter_configs_response::{AlterConfigsResourceResponse as AlterResult, AlterConfigsResponse},
    describe_configs_request::DescribeConfigsRequest,
    describe_configs_response::{
        DescribeConfigsResourceResult, DescribeConfigsResponse, DescribeConfigsResult,
        DescribeConfigsSynonym,
    },
    incremental_alter_configs_request::IncrementalAlterConfigsRequest,
    incremental_alter_configs_response::{
        AlterConfigsResourceResponse as IncrementalResult, IncrementalAlterConfigsResponse,
    },
};

/// Kafka's resource types.
const TOPIC: i8 = 2;
const BROKER: i8 = 4;

/// Kafka's config sources (DescribeConfigs v1+).
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// One answered config: (name, value, source, read-only, type, doc, synonyms).
struct Described {
    name: String,
    value: String,
    source: i8,
    read_only: bool,
    config_type: i8,
    doc: &'static str,
    synonyms: Vec<(String, String, i8)>,
}

impl KafkaConnection {
    /// The broker-wide values a topic without overrides gets.
    fn topic_defaults(&self) -> (crate::config::LogConfig, usize) {
        let shard = self.shard();
        let log = shard.log_defaults().clone();
        let max_batch = self.server().config.kafka_limits.max_batch_bytes.min(
            log.max_batch_bytes
                .saturating_sub(tidelog_wire::batch::HEADER_LEN),
        );
        (log, max_batch)
    }

    /// Every topic config of `config`, as DescribeConfigs reports it.
    fn describe_topic(&self, config: &TopicConfig) -> Vec<Described> {
        let (log, max_batch) = self.topic_defaults();
        TOPIC_CONFIGS
            .iter()
            .map(|def| {
                let broker = def.render(def.broker_default(&log, max_batch));
                let mut synonyms = Vec::new();
                let (value, source) = match config.get(def) {
                    Some(v) => {
                        let text = def.render(v);
                        synonyms.push((def.name.to_owned(), text.clone(), SOURCE_TOPIC));
                        (text, SOURCE_TOPIC)
                    }
                    None => (broker.clone(), SOURCE_DEFAULT),
                };
                synonyms.push((def.synonym.to_owned(), broker, SOURCE_DEFAULT));
                Described {
                    name: def.name.to_owned(),
                    value,
                    source,
                    read_only: false,
                    config_type: def.config_type() as i8,
                    doc: def.doc,
                    synonyms,
                }
            })
            .collect()
    }

    /// The broker's settings, as DescribeConfigs reports a broker resource (read-only: they
    /// come from its flags).
    fn describe_broker(&self) -> Vec<Described> {
        let (log, max_batch) = self.topic_defaults();
        let shard = self.shard();
        let settings = shard.settings();
        let coordinator = &settings.coordinator;
        let mut out: Vec<(String, String, i8, &'static str)> = TOPIC_CONFIGS
            .iter()
            .filter(|def| def.synonym != def.name || matches!(def.kind, Kind::Bool))
            .map(|def| {
                (
                    def.synonym.to_owned(),
                    def.render(def.broker_default(&log, max_batch)),
                    topic_configs::ConfigType::Long as i8,
                    def.doc,
                )
            })
            .collect();
        let long = topic_configs::ConfigType::Long as i8;
        let int = topic_configs::ConfigType::Int as i8;
        let boolean = topic_configs::ConfigType::Boolean as i8;
        out.extend([
            (
                "num.partitions".to_owned(),
                self.server().config.default_partitions.to_string(),
                int,
                "partitions of topics created without a count",
            ),
            (
                "default.replication.factor".to_owned(),
                settings.default_replication_factor.to_string(),
                int,
                "replicas of topics created without a factor",
            ),
            (
                "min.insync.replicas".to_owned(),
                settings.min_insync_replicas.to_string(),
                int,
                "in-sync replicas an acks=all write needs",
            ),
            (
                "auto.create.topics.enable".to_owned(),
                "true".to_owned(),
                boolean,
                "Metadata for an unknown topic creates it",
            ),
            (
                "offsets.retention.minutes".to_owned(),
                (settings.offsets_retention.as_secs() / 60).to_string(),
                int,
                "committed offsets of an empty group expire after this long",
            ),
            (
                "group.min.session.timeout.ms".to_owned(),
                coordinator.session_timeout_ms_min.to_string(),
                int,
                "shortest session timeout a member may ask for",
            ),
            (
                "group.max.session.timeout.ms".to_owned(),
                coordinator.session_timeout_ms_max.to_string(),
                int,
                "longest session timeout a member may ask for",
            ),
            (
                "group.initial.rebalance.delay.ms".to_owned(),
                coordinator.initial_rebalance_delay_ms.to_string(),
                int,
                "how long a new group waits for more members",
            ),
            (
                "socket.request.max.bytes".to_owned(),
                self.server()
                    .config
                    .kafka_limits
                    .max_request_bytes
                    .to_string(),
                int,
                "largest request accepted",
            ),
            (
                "log.flush.interval.ms".to_owned(),
                log.flush_interval_ms.to_string(),
                long,
                "buffered appends are synced at least this often",
            ),
        ]);
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.dedup_by(|a, b| a.0 == b.0);
        out.into_iter()
            .map(|(name, value, config_type, doc)| Described {
                synonyms: vec![(name.clone(), value.clone(), SOURCE_STATIC_BROKER)],
                name,
                value,
                source: SOURCE_STATIC_BROKER,
                read_only: true,
                config_type,
                doc,
            })
            .collect()
    }

    pub(super) async fn describe_configs(
        &mut self,
        meta: &RequestMeta,
        request: DescribeConfigsRequest,
    ) -> Result<(), KafkaConnError> {
        let mut response = DescribeConfigsResponse::default();
        for resource in request.resources {
            let mut result = DescribeConfigsResult {
                resource_type: resource.resource_type,
                resource_name: resource.resource_name.clone(),
                ..Default::default()
            };
            let described = match resource.resource_type {
                TOPIC => {
                    let config = self.shard().topics().get(&resource.resource_name).copied();
                    match config {
                        Some(config) => Ok(self.describe_topic(&config)),
                        None => Err((
                            code::UNKNOWN_TOPIC_OR_PARTITION,
                            format!("no topic {:?}", resource.resource_name),
                        )),
                    }
                }
                BROKER => Ok(self.describe_broker()),
                other => Err((
                    code::INVALID_REQUEST,
                    format!("resource type {other} has no configs here"),
                )),
            };
            match described {
                Err((error, message)) => {
                    result.error_code = error;
                    result.error_message = Some(message);
                }
                Ok(all) => {
                    let keys = resource.configuration_keys.as_ref();
                    result.configs = all
                        .into_iter()
                        .filter(|d| keys.is_none_or(|k| k.contains(&d.name)))
                        .map(|d| DescribeConfigsResourceResult {
                            is_default: d.source == SOURCE_DEFAULT,
                            synonyms: if request.include_synonyms {
                                d.synonyms
                                    .into_iter()
                                    .map(|(name, value, source)| DescribeConfigsSynonym {
                                        name,
                                        value: Some(value),
                                        source,
                                    })
                                    .collect()
                            } else {
                                Vec::new()
                            },
                            name: d.name,
                            value: Some(d.value),
                            read_only: d.read_only,
                            config_source: d.source,
                            is_sensitive: false,
                            config_type: d.config_type,
                            documentation: request.include_documentation.then(|| d.doc.to_owned()),
                        })
                        .collect();
                }
            }
            response.results.push(result);
        }
        self.respond(meta, |out, v| response.encode(out, v)).await
    }

    /// Applies one resource's change: `edit` turns the topic's current configuration into
    /// the new one. Answers (error code, message).
    async fn alter_resource(
        &mut self,
        resource_type: i8,
        name: &str,
        validate_only: bool,
        edit: impl FnOnce(TopicConfig) -> Result<TopicConfig, InvalidConfig>,
    ) -> (i16, Option<String>) {
        match resource_type {
            TOPIC => {}
            BROKER => return (
                code::INVALID_REQUEST,
                Some(
                    "broker configs come from the broker's flags and cannot be changed at run time"
                        .into(),
                ),
            ),
            other => {
                return (
                    code::INVALID_REQUEST,
                    Some(format!("resource type {other} has no configs here")),
                )
            }
        }
        if name == crate::groups::OFFSETS_TOPIC {
            return (
                code::INVALID_REQUEST,
                Some(format!("{name} is internal: its configuration is fixed")),
            );
        }
        let current = self.shard().topics().get(name).copied();
        let Some(current) = current else {
            return (
                code::UNKNOWN_TOPIC_OR_PARTITION,
                Some(format!("no topic {name:?}")),
            );
        };
        let new = match edit(current) {
            Ok(new) => new,
            Err(e) => return (code::INVALID_CONFIG, Some(e.0)),
        };
        let shard = std::rc::Rc::clone(self.shard());
        if let Err(e) = new.validate(shard.log_defaults()) {
            return (code::INVALID_CONFIG, Some(e.to_string()));
        }
        if validate_only {
            return (code::NONE, None);
        }
        match shard.alter_topic(name, new).await {
            Ok(()) => (code::NONE, None),
            Err(e) => (error_code(&e), Some(e.to_string())),
        }
    }

    pub(super) async fn alter_configs(
        &mut self,
        meta: &RequestMeta,
        request: AlterConfigsRequest,
    ) -> Result<(), KafkaConnError> {
        let mut response = AlterConfigsResponse::default();
        for resource in request.resources {
            // AlterConfigs replaces the whole set of overrides: a name not given goes back
            // to the broker's value.
            let configs = resource.configs;
            let (error_code, error_message) = self
                .alter_resource(
                    resource.resource_type,
                    &resource.resource_name,
                    request.validate_only,
                    |current| {
                        let mut new = TopicConfig::with_partitions(current.partitions);
                        for entry in &configs {
                            topic_configs::apply(&mut new, &entry.name, entry.value.as_deref())?;
                        }
                        Ok(new)
                    },
                )
                .await;
            response.responses.push(AlterResult {
                error_code,
                error_message,
                resource_type: resource.resource_type,
                resource_name: resource.resource_name,
            });
        }
        self.respond(meta, |out, v| response.encode(out, v)).await
    }

    pub(super) async fn incremental_alter_configs(
        &mut self,
        meta: &RequestMeta,
        request: IncrementalAlterConfigsRequest,
    ) -> Result<(), KafkaConnError> {
        let mut response = IncrementalAlterConfigsResponse::default();
        for resource in request.resources {
            let configs = resource.configs;
            let (error_code, error_message) = self
                .alter_resource(
                    resource.resource_type,
                    &resource.resource_name,
                    request.validate_only,
                    |mut new| {
                        for entry in &configs {
                            incremental(
                                &mut new,
                                &entry.name,
                                entry.config_operation,
                                entry.value.as_deref(),
                            )?;
                        }
                        Ok(new)
                    },
                )
                .await;
            response.responses.push(IncrementalResult {
                error_code,
                error_message,
                resource_type: resource.resource_type,
                resource_name: resource.resource_name,
            });
        }
        self.respond(meta, |out, v| response.encode(out, v)).await
    }
}

/// One IncrementalAlterConfigs operation on `config`.
fn incremental(
    config: &mut TopicConfig,
    name: &str,
    op: i8,
    value: Option<&str>,
) -> Result<(), InvalidConfig> {
    let def: &ConfigDef = topic_configs::def(name)
        .ok_or_else(|| InvalidConfig(format!("unknown topic config {name:?}")))?;
    match op {
        OP_SET => topic_configs::apply(config, name, Some(value.unwrap_or_default())),
        OP_DELETE => topic_configs::apply(config, name, None),
        OP_APPEND | OP_SUBTRACT => {
            // Only list configs take these: cleanup.policy is the one list here.
            if def.config_type() != topic_configs::ConfigType::List {
                return Err(InvalidConfig(format!(
                    "{name} is not a list: APPEND and SUBTRACT do not apply"
                )));
            }
            let current = config
                .get(def)
                .map(|v| def.render(v))
                .unwrap_or_else(|| "delete".into());
            let mut items: Vec<String> = current.split(',').map(|s| s.trim().to_owned()).collect();
            for item in value
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
            {
                if op == OP_APPEND {
                    if !items.iter().any(|i| i == item) {
                        items.push(item.to_owned());
                    }
                } else {
                    items.retain(|i| i != item);
                }
            }
            if items.is_empty() {
                return Err(InvalidConfig(format!("{name} cannot be empty")));
            }
            topic_configs::apply(config, name, Some(&items.join(",")))
        }
        other => Err(InvalidConfig(format!("unknown config operation {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incremental_operations_set_delete_append_and_subtract() {
        let mut config = TopicConfig::with_partitions(1);
        incremental(&mut config, "retention.ms", OP_SET, Some("1000")).expect("set");
        assert_eq!(config.retention_ms, crate::meta::Limit::At(1000));
        incremental(&mut config, "retention.ms", OP_DELETE, None).expect("delete");
        assert_eq!(config.retention_ms, crate::meta::Limit::Default);
        incremental(&mut config, "cleanup.policy", OP_APPEND, Some("compact")).expect("append");
        let policy = topic_configs::def("cleanup.policy").expect("known");
        assert_eq!(
            config.get(policy).map(|v| policy.render(v)).as_deref(),
            Some("compact,delete")
        );
        incremental(&mut config, "cleanup.policy", OP_SUBTRACT, Some("delete")).expect("subtract");
        assert_eq!(
            config.get(policy).map(|v| policy.render(v)).as_deref(),
            Some("compact")
        );
        assert!(incremental(&mut config, "cleanup.policy", OP_SUBTRACT, Some("compact")).is_err());
        assert!(incremental(&mut config, "retention.ms", OP_APPEND, Some("1")).is_err());
        assert!(incremental(&mut config, "no.such", OP_SET, Some("1")).is_err());
        assert!(incremental(&mut config, "retention.ms", 9, Some("1")).is_err());
    }
}
