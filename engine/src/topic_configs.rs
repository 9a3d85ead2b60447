//! Kafka's topic configurations: the names Tidelog accepts, how each value is parsed, stored,
//! checked and described (DescribeConfigs, AlterConfigs, IncrementalAlterConfigs,
//! CreateTopics).
//!
//! Every accepted name is one [`ConfigDef`] in [`TOPIC_CONFIGS`]. A topic stores only its
//! overrides, each as an `i64` ([`TopicConfig::get`]): numbers as themselves, a choice as its
//! index, a ratio in millionths, a boolean as 0/1. `retention.*` and `segment.*` live in
//! [`TopicConfig`]'s own fields (they predate this table); every other name in
//! [`Overrides`], persisted by its [`ConfigDef::tag`] (a tag is never reused).
//!
//! Which names are acted on and which are stored only is [`ConfigDef::honoured`]; tuning.md
//! lists the inert ones with why.

use crate::config::LogConfig;
use crate::meta::{Limit, TopicConfig};

/// Kafka's DescribeConfigs `ConfigType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i8)]
pub enum ConfigType {
    /// true / false.
    Boolean = 1,
    /// A string (or a choice among names).
    String = 2,
    /// A 32-bit number.
    Int = 3,
    /// A 64-bit number.
    Long = 5,
    /// A double.
    Double = 6,
    /// A comma-separated list.
    List = 7,
}

/// How a value is written and stored.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// An integer in `min..=max`.
    Number {
        /// Smallest accepted.
        min: i64,
        /// Largest accepted.
        max: i64,
        /// Kafka's type of it.
        ty: ConfigType,
    },
    /// One of these names (stored as its index).
    Choice(&'static [&'static str]),
    /// A double in `[0, 1]` (stored in millionths).
    Ratio,
    /// `true` or `false`.
    Bool,
}

/// One accepted topic configuration.
#[derive(Debug, Clone, Copy)]
pub struct ConfigDef {
    /// Kafka's name.
    pub name: &'static str,
    /// The broker-level synonym Kafka reports (`log.retention.ms` for `retention.ms`).
    pub synonym: &'static str,
    /// Value syntax.
    pub kind: Kind,
    /// Persisted tag of an [`Overrides`] entry (0: one of [`TopicConfig`]'s own fields).
    pub tag: u8,
    /// Whether Tidelog acts on it today; an inert one is accepted, stored and described.
    pub honoured: bool,
    /// One line of documentation (DescribeConfigs v3+).
    pub doc: &'static str,
}

const LONG: ConfigType = ConfigType::Long;
const INT: ConfigType = ConfigType::Int;
const fn num(min: i64, max: i64, ty: ConfigType) -> Kind {
    Kind::Number { min, max, ty }
}

/// `cleanup.policy` values (index = stored value).
pub const CLEANUP_POLICIES: &[&str] = &["delete", "compact", "compact,delete"];
/// The stored value of `cleanup.policy=compact` (alone).
pub const CLEANUP_COMPACT: i64 = 1;
/// `message.timestamp.type` values.
pub const TIMESTAMP_TYPES: &[&str] = &["CreateTime", "LogAppendTime"];
/// `compression.type` values.
pub const COMPRESSION_TYPES: &[&str] =
    &["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"];

/// Tags of the overrides the produce path and the log configuration read directly (an
/// array index, not a search of [`TOPIC_CONFIGS`] by name on every produce request).
pub const TAG_CLEANUP_POLICY: u8 = 1;
/// See [`TAG_CLEANUP_POLICY`].
pub const TAG_COMPRESSION_TYPE: u8 = 2;
/// See [`TAG_CLEANUP_POLICY`].
pub const TAG_MAX_MESSAGE_BYTES: u8 = 9;
/// See [`TAG_CLEANUP_POLICY`].
pub const TAG_TIMESTAMP_AFTER: u8 = 10;
/// See [`TAG_CLEANUP_POLICY`].
pub const TAG_TIMESTAMP_BEFORE: u8 = 11;
/// See [`TAG_CLEANUP_POLICY`].
pub const TAG_TIMESTAMP_TYPE: u8 = 12;

/// Overrides held in [`Overrides`]; the index into its array.
const EXTRA: usize = 19;

/// Every topic configuration Tidelog accepts, in the order DescribeConfigs lists them.
pub const TOPIC_CONFIGS: &[ConfigDef] = &[
    ConfigDef { name: "cleanup.policy", synonym: "log.cleanup.policy", kind: Kind::Choice(CLEANUP_POLICIES), tag: TAG_CLEANUP_POLICY, honoured: false,
        doc: "delete: old segments are deleted by retention; compact: retention deletes nothing (no cleaner runs yet, so every record is kept)" },
    ConfigDef { name: "compression.type", synonym: "compression.type", kind: Kind::Choice(COMPRESSION_TYPES), tag: TAG_COMPRESSION_TYPE, honoured: true,
        doc: "producer keeps each batch as sent; a codec name (or uncompressed) recompresses each produced batch on append" },
    ConfigDef { name: "delete.retention.ms", synonym: "log.cleaner.delete.retention.ms", kind: num(0, i64::MAX, LONG), tag: 3, honoured: false,
        doc: "how long tombstones stay readable in a compacted topic" },
    ConfigDef { name: "file.delete.delay.ms", synonym: "log.segment.delete.delay.ms", kind: num(0, i64::MAX, LONG), tag: 4, honoured: false,
        doc: "accepted for compatibility; Tidelog deletes segment files once no reader holds them" },
    ConfigDef { name: "flush.messages", synonym: "log.flush.interval.messages", kind: num(1, i64::MAX, LONG), tag: 5, honoured: false,
        doc: "accepted for compatibility; acks=all writes are always synced, others per --flush-bytes" },
    ConfigDef { name: "flush.ms", synonym: "log.flush.interval.ms", kind: num(0, i64::MAX, LONG), tag: 6, honoured: false,
        doc: "accepted for compatibility; acks=all writes are always synced, others per --flush-interval-ms" },
    ConfigDef { name: "index.interval.bytes", synonym: "log.index.interval.bytes", kind: num(0, i32::MAX as i64, INT), tag: 7, honoured: false,
        doc: "accepted for compatibility; the sparse index interval is the broker's" },
    ConfigDef { name: "max.compaction.lag.ms", synonym: "log.cleaner.max.compaction.lag.ms", kind: num(1, i64::MAX, LONG), tag: 8, honoured: false,
        doc: "longest a record may stay uncompacted" },
    ConfigDef { name: "max.message.bytes", synonym: "message.max.bytes", kind: num(0, i32::MAX as i64, INT), tag: TAG_MAX_MESSAGE_BYTES, honoured: true,
        doc: "largest record batch accepted (capped by the broker's own batch limit)" },
    ConfigDef { name: "message.timestamp.after.max.ms", synonym: "log.message.timestamp.after.max.ms", kind: num(0, i64::MAX, LONG), tag: TAG_TIMESTAMP_AFTER, honoured: true,
        doc: "how far in the future a CreateTime timestamp may be" },
    ConfigDef { name: "message.timestamp.before.max.ms", synonym: "log.message.timestamp.before.max.ms", kind: num(0, i64::MAX, LONG), tag: TAG_TIMESTAMP_BEFORE, honoured: true,
        doc: "how far in the past a CreateTime timestamp may be" },
    ConfigDef { name: "message.timestamp.type", synonym: "log.message.timestamp.type", kind: Kind::Choice(TIMESTAMP_TYPES), tag: TAG_TIMESTAMP_TYPE, honoured: true,
        doc: "CreateTime keeps the producer's timestamps; LogAppendTime stamps each batch with the broker's time on append" },
    ConfigDef { name: "min.cleanable.dirty.ratio", synonym: "log.cleaner.min.cleanable.ratio", kind: Kind::Ratio, tag: 13, honoured: false,
        doc: "share of uncompacted bytes past which a compacted topic is cleaned" },
    ConfigDef { name: "min.compaction.lag.ms", synonym: "log.cleaner.min.compaction.lag.ms", kind: num(0, i64::MAX, LONG), tag: 14, honoured: false,
        doc: "shortest a record stays uncompacted" },
    ConfigDef { name: "min.insync.replicas", synonym: "min.insync.replicas", kind: num(1, i32::MAX as i64, INT), tag: 15, honoured: false,
        doc: "in-sync replicas an acks=all write needs (the broker's --min-insync-replicas applies)" },
    ConfigDef { name: "preallocate", synonym: "log.preallocate", kind: Kind::Bool, tag: 16, honoured: false,
        doc: "accepted for compatibility; Tidelog always preallocates segment space ahead of the write head" },
    ConfigDef { name: "retention.bytes", synonym: "log.retention.bytes", kind: num(-1, i64::MAX, LONG), tag: 0, honoured: true,
        doc: "largest size of a partition before its oldest segments are deleted (-1: no limit)" },
    ConfigDef { name: "retention.ms", synonym: "log.retention.ms", kind: num(-1, i64::MAX, LONG), tag: 0, honoured: true,
        doc: "age after which a segment is deleted (-1: keep forever)" },
    ConfigDef { name: "segment.bytes", synonym: "log.segment.bytes", kind: num(1 << 20, i32::MAX as i64, INT), tag: 0, honoured: true,
        doc: "segment file size at which the log rolls a new one" },
    ConfigDef { name: "segment.index.bytes", synonym: "log.index.size.max.bytes", kind: num(4, i32::MAX as i64, INT), tag: 17, honoured: false,
        doc: "accepted for compatibility; Tidelog's indexes grow with their segment" },
    ConfigDef { name: "segment.jitter.ms", synonym: "log.roll.jitter.ms", kind: num(0, i64::MAX, LONG), tag: 18, honoured: false,
        doc: "accepted for compatibility; segments roll at segment.ms exactly" },
    ConfigDef { name: "segment.ms", synonym: "log.roll.ms", kind: num(1, i64::MAX, LONG), tag: 0, honoured: true,
        doc: "age at which the active segment is rolled" },
    ConfigDef { name: "unclean.leader.election.enable", synonym: "unclean.leader.election.enable", kind: Kind::Bool, tag: 19, honoured: false,
        doc: "accepted for compatibility; Tidelog never elects an out-of-sync replica" },
];

/// A topic's stored overrides of the names that are not [`TopicConfig`] fields, by tag.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overrides([Option<i64>; EXTRA]);

impl Overrides {
    /// The override with `tag` (1-based).
    pub fn get(&self, tag: u8) -> Option<i64> {
        self.0
            .get(usize::from(tag).checked_sub(1)?)
            .copied()
            .flatten()
    }

    fn set(&mut self, tag: u8, value: Option<i64>) {
        if let Some(slot) = usize::from(tag)
            .checked_sub(1)
            .and_then(|i| self.0.get_mut(i))
        {
            *slot = value;
        }
    }

    /// `(tag, value)` of every override set.
    pub fn iter(&self) -> impl Iterator<Item = (u8, i64)> + '_ {
        self.0
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| (i as u8 + 1, v)))
    }

    /// Sets a decoded entry; false for an unknown tag (a newer broker's name).
    pub fn restore(&mut self, tag: u8, value: i64) -> bool {
        if tag == 0 || usize::from(tag) > EXTRA {
            return false;
        }
        self.set(tag, Some(value));
        true
    }
}

/// The definition of `name`, if Tidelog accepts it.
pub fn def(name: &str) -> Option<&'static ConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// Why a value was refused: Kafka's INVALID_CONFIG with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidConfig(pub String);

impl ConfigDef {
    /// Parses `text` into the stored form.
    ///
    /// # Errors
    /// [`InvalidConfig`] naming the config and what is accepted.
    pub fn parse(&self, text: &str) -> Result<i64, InvalidConfig> {
        let bad = |what: String| {
            InvalidConfig(format!("invalid value {text:?} for {}: {what}", self.name))
        };
        let text = text.trim();
        match self.kind {
            Kind::Number { min, max, .. } => {
                let v: i64 = text.parse().map_err(|_| bad("not a number".into()))?;
                if v < min || v > max {
                    return Err(bad(format!("must be {min} to {max}")));
                }
                Ok(v)
            }
            Kind::Choice(names) => {
                // `compact,delete` and `delete,compact` (with or without spaces) are one policy.
                let mut parts: Vec<&str> = text.split(',').map(str::trim).collect();
                parts.sort_unstable();
                parts.dedup();
                let canonical = parts.join(",");
                names
                    .iter()
                    .position(|n| n.eq_ignore_ascii_case(&canonical) || *n == text)
                    .map(|i| i as i64)
                    .ok_or_else(|| bad(format!("must be one of {}", names.join(" | "))))
            }
            Kind::Ratio => {
                let v: f64 = text.parse().map_err(|_| bad("not a number".into()))?;
                if !(0.0..=1.0).contains(&v) {
                    return Err(bad("must be 0 to 1".into()));
                }
                Ok((v * 1e6).round() as i64)
            }
            Kind::Bool => match text.to_ascii_lowercase().as_str() {
                "true" => Ok(1),
                "false" => Ok(0),
                _ => Err(bad("must be true or false".into())),
            },
        }
    }

    /// The text of a stored value.
    pub fn render(&self, value: i64) -> String {
        match self.kind {
            Kind::Number { .. } => value.to_string(),
            Kind::Choice(names) => usize::try_from(value)
                .ok()
                .and_then(|i| names.get(i))
                .map_or_else(|| value.to_string(), |n| (*n).to_owned()),
            Kind::Ratio => {
                let text = format!("{}", value as f64 / 1e6);
                if text.contains('.') {
                    text
                } else {
                    format!("{text}.0")
                }
            }
            Kind::Bool => (value != 0).to_string(),
        }
    }

    /// Kafka's ConfigType of this config.
    pub fn config_type(&self) -> ConfigType {
        match self.kind {
            Kind::Number { ty, .. } => ty,
            Kind::Choice(names) if names == CLEANUP_POLICIES => ConfigType::List,
            Kind::Choice(_) => ConfigType::String,
            Kind::Ratio => ConfigType::Double,
            Kind::Bool => ConfigType::Boolean,
        }
    }

    /// The value a topic without an override has: the broker's setting (from `log` and
    /// `max_batch_bytes`) or Kafka's default.
    pub fn broker_default(&self, log: &LogConfig, max_batch_bytes: usize) -> i64 {
        match self.name {
            "retention.ms" => log.retention_ms.unwrap_or(-1),
            "retention.bytes" => log
                .retention_bytes
                .map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX)),
            "segment.bytes" => i64::try_from(log.segment_bytes).unwrap_or(i64::MAX),
            "segment.ms" => log.segment_ms,
            "max.message.bytes" => i64::try_from(max_batch_bytes).unwrap_or(i64::MAX),
            "index.interval.bytes" => i64::from(log.index_interval_bytes),
            "delete.retention.ms" => 86_400_000,
            "file.delete.delay.ms" => 60_000,
            "min.cleanable.dirty.ratio" => 500_000,
            "segment.index.bytes" => 10 << 20,
            "min.insync.replicas" | "preallocate" => 1,
            "max.compaction.lag.ms"
            | "message.timestamp.after.max.ms"
            | "message.timestamp.before.max.ms"
            | "flush.messages"
            | "flush.ms" => i64::MAX,
            // cleanup.policy delete, compression.type producer, CreateTime, 0 lag, false.
            _ => 0,
        }
    }
}

impl TopicConfig {
    /// The override of `def` (stored form), `None` when the topic has none.
    pub fn get(&self, def: &ConfigDef) -> Option<i64> {
        let limit = |l: Limit| l.to_kafka();
        match def.name {
            "retention.ms" => limit(self.retention_ms),
            "retention.bytes" => limit(self.retention_bytes),
            "segment.bytes" => self
                .segment_bytes
                .map(|b| i64::try_from(b).unwrap_or(i64::MAX)),
            "segment.ms" => self.segment_ms,
            _ => self.overrides.get(def.tag),
        }
    }

    /// Sets (`Some`) or removes (`None`, back to the broker's value) the override of `def`;
    /// `value` is in stored form, already checked by [`ConfigDef::parse`].
    pub fn set(&mut self, def: &ConfigDef, value: Option<i64>) {
        let limit = |v: Option<i64>| v.and_then(Limit::from_kafka).unwrap_or(Limit::Default);
        match def.name {
            "retention.ms" => self.retention_ms = limit(value),
            "retention.bytes" => self.retention_bytes = limit(value),
            "segment.bytes" => self.segment_bytes = value.and_then(|v| u64::try_from(v).ok()),
            "segment.ms" => self.segment_ms = value,
            _ => self.overrides.set(def.tag, value),
        }
    }

    /// The value in force: the override, else the broker's.
    pub fn effective(&self, def: &ConfigDef, log: &LogConfig, max_batch_bytes: usize) -> i64 {
        self.get(def)
            .unwrap_or_else(|| def.broker_default(log, max_batch_bytes))
    }

    /// The topic's rules for produced timestamps, `now_ms` read only when a rule needs it:
    /// LogAppendTime stamps the batch with it; otherwise the
    /// `message.timestamp.before/after.max.ms` window, when either is set.
    pub fn timestamp_policy(
        &self,
        now_ms: impl FnOnce() -> i64,
    ) -> tidelog_wire::kafka_records::TimestampPolicy {
        let o = &self.overrides;
        let mut policy = tidelog_wire::kafka_records::TimestampPolicy::default();
        if o.get(TAG_TIMESTAMP_TYPE) == Some(1) {
            policy.log_append_time = Some(now_ms());
            return policy;
        }
        let (before, after) = (o.get(TAG_TIMESTAMP_BEFORE), o.get(TAG_TIMESTAMP_AFTER));
        if before.is_some() || after.is_some() {
            policy.create_time_bounds = Some((
                now_ms(),
                before.unwrap_or(i64::MAX),
                after.unwrap_or(i64::MAX),
            ));
        }
        policy
    }

    /// The codec produced batches are stored with, when `compression.type` names one
    /// (`producer`, the default, keeps each batch as sent).
    pub fn compression_target(&self) -> Option<tidelog_wire::batch::Compression> {
        use tidelog_wire::batch::Compression;
        match self.overrides.get(TAG_COMPRESSION_TYPE)? {
            1 => Some(Compression::None),
            2 => Some(Compression::Gzip),
            3 => Some(Compression::Snappy),
            4 => Some(Compression::Lz4),
            5 => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// The largest batch this topic accepts, when it overrides `max.message.bytes`.
    pub fn max_message_bytes(&self) -> Option<usize> {
        self.overrides
            .get(TAG_MAX_MESSAGE_BYTES)
            .and_then(|v| usize::try_from(v).ok())
    }
}

/// Applies Kafka `name = value` pairs to `config` (CreateTopics, AlterConfigs).
///
/// # Errors
/// [`InvalidConfig`] for an unknown name (as Kafka answers) or a bad value.
pub fn apply(
    config: &mut TopicConfig,
    name: &str,
    value: Option<&str>,
) -> Result<(), InvalidConfig> {
    let def = def(name).ok_or_else(|| InvalidConfig(format!("unknown topic config {name:?}")))?;
    let value = match value {
        Some(text) => Some(def.parse(text)?),
        None => None,
    };
    config.set(def, value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_unique_and_fit() {
        let mut seen = std::collections::BTreeSet::new();
        for d in TOPIC_CONFIGS {
            if d.tag != 0 {
                assert!(usize::from(d.tag) <= EXTRA, "{}", d.name);
                assert!(seen.insert(d.tag), "tag {} reused by {}", d.tag, d.name);
            }
        }
        assert_eq!(seen.len(), EXTRA, "every slot has a name");
        let names: Vec<_> = TOPIC_CONFIGS.iter().map(|d| d.name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted, "listed by name, as Kafka lists them");
    }

    #[test]
    fn values_parse_render_and_round_trip() {
        let mut config = TopicConfig::with_partitions(1);
        for (name, text, back) in [
            ("cleanup.policy", "compact", "compact"),
            ("cleanup.policy", "delete, compact", "compact,delete"),
            ("compression.type", "zstd", "zstd"),
            ("min.cleanable.dirty.ratio", "0.25", "0.25"),
            ("min.cleanable.dirty.ratio", "1", "1.0"),
            ("preallocate", "TRUE", "true"),
            ("retention.ms", "-1", "-1"),
            ("max.message.bytes", "1048588", "1048588"),
            ("message.timestamp.type", "LogAppendTime", "LogAppendTime"),
        ] {
            apply(&mut config, name, Some(text)).expect(name);
            let d = def(name).expect("known");
            assert_eq!(d.render(config.get(d).expect("set")), back, "{name}");
        }
        assert_eq!(config.retention_ms, Limit::Unlimited);
        let decoded = TopicConfig::decode(&config.encode()).expect("decodes");
        assert_eq!(decoded, config, "every override survives encoding");
        apply(&mut config, "cleanup.policy", None).expect("delete");
        assert_eq!(config.get(def("cleanup.policy").expect("known")), None);
    }

    #[test]
    fn unknown_names_and_bad_values_are_refused() {
        let mut config = TopicConfig::with_partitions(1);
        for (name, text) in [
            ("no.such.config", "1"),
            ("cleanup.policy", "shred"),
            ("retention.ms", "-2"),
            ("retention.ms", "soon"),
            ("min.cleanable.dirty.ratio", "1.5"),
            ("segment.bytes", "100"),
            ("preallocate", "yes"),
        ] {
            let e = apply(&mut config, name, Some(text)).expect_err(name);
            assert!(e.0.contains(name), "{e}");
        }
        assert_eq!(config, TopicConfig::with_partitions(1), "nothing changed");
    }
}
