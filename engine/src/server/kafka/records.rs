//! DeleteRecords, DescribeLogDirs, CreatePartitions and DescribeProducers over the Kafka
//! protocol.

use super::{code, error_code, KafkaConnError, KafkaConnection, RequestMeta};
use crate::shard::partition_index;
use tidelog_wire::kafka::generated::{
    create_partitions_request::CreatePartitionsRequest,
    create_partitions_response::{CreatePartitionsResponse, CreatePartitionsTopicResult},
    delete_records_request::DeleteRecordsRequest,
    delete_records_response::{
        DeleteRecordsPartitionResult, DeleteRecordsResponse, DeleteRecordsTopicResult,
    },
    describe_log_dirs_request::DescribeLogDirsRequest,
    describe_log_dirs_response::{
        DescribeLogDirsPartition, DescribeLogDirsResponse, DescribeLogDirsResult,
        DescribeLogDirsTopic,
    },
    describe_producers_request::DescribeProducersRequest,
    describe_producers_response::{
        DescribeProducersResponse, PartitionResponse as ProducersPartition, ProducerState,
        TopicResponse as ProducersTopic,
    },
};

impl KafkaConnection {
    /// The idempotent producers of partitions this shard leads (no transactions: coordinator
    /// epoch and transaction start -1; the last timestamp is not kept: -1).
    pub(super) async fn describe_producers(
        &mut self,
        meta: &RequestMeta,
        request: DescribeProducersRequest,
    ) -> Result<(), KafkaConnError> {
        let shard = std::rc::Rc::clone(self.shard());
        let mut response = DescribeProducersResponse::default();
        for topic in request.topics {
            let mut out = ProducersTopic {
                name: topic.name.clone(),
                partitions: Vec::with_capacity(topic.partition_indexes.len()),
            };
            for index in topic.partition_indexes {
                let mut part = ProducersPartition {
                    partition_index: index,
                    ..Default::default()
                };
                let producers =
                    partition_index(index).and_then(|p| shard.describe_producers(&topic.name, p));
                match producers {
                    Ok(list) => {
                        part.active_producers = list
                            .into_iter()
                            .map(|(id, epoch, last_seq)| ProducerState {
                                producer_id: id,
                                producer_epoch: i32::from(epoch),
                                last_sequence: last_seq,
                                last_timestamp: -1,
                                coordinator_epoch: -1,
                                current_txn_start_offset: -1,
                            })
                            .collect();
                    }
                    Err(e) => {
                        part.error_code = error_code(&e);
                        part.error_message = Some(e.to_string());
                    }
                }
                out.partitions.push(part);
            }
            response.topics.push(out);
        }
        self.respond(meta, |out, v| response.encode(out, v)).await
    }

    pub(super) async fn create_partitions(
        &mut self,
        meta: &RequestMeta,
        request: CreatePartitionsRequest,
    ) -> Result<(), KafkaConnError> {
        let shard = std::rc::Rc::clone(self.shard());
        let mut response = CreatePartitionsResponse::default();
        for topic in request.topics {
            let have = shard.topics().get(&topic.name).map(|c| c.partitions);
            let refused = match (have, u32::try_from(topic.count)) {
                (None, _) => Some((
                    code::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("no topic {:?}", topic.name),
                )),
                (_, Err(_)) => Some((
                    code::INVALID_PARTITIONS,
                    format!("{} partitions", topic.count),
                )),
                (Some(have), Ok(count)) if count <= have => Some((
                    code::INVALID_PARTITIONS,
                    format!(
                        "{} has {have} partitions: the new count must be more, not {count}",
                        topic.name
                    ),
                )),
                (Some(_), Ok(count)) if count > crate::meta::PARTITIONS_MAX => Some((
                    code::INVALID_PARTITIONS,
                    format!(
                        "at most {} partitions per topic",
                        crate::meta::PARTITIONS_MAX
                    ),
                )),
                _ if topic.assignments.as_ref().is_some_and(|a| !a.is_empty()) => Some((
                    code::INVALID_REQUEST,
                    "manual replica assignment is not supported".into(),
                )),
                _ => None,
            };
            let (error_code, error_message) = match refused {
                Some((code, message)) => (code, Some(message)),
                None if request.validate_only => (code::NONE, None),
                None => match shard
                    .create_partitions(&topic.name, topic.count as u32)
                    .await
                {
                    Ok(()) => (code::NONE, None),
                    Err(e) => (error_code(&e), Some(e.to_string())),
                },
            };
            response.results.push(CreatePartitionsTopicResult {
                name: topic.name,
                error_code,
                error_message,
            });
        }
        self.respond(meta, |out, v| response.encode(out, v)).await
    }

    pub(super) async fn delete_records(
        &mut self,
        meta: &RequestMeta,
        request: DeleteRecordsRequest,
    ) -> Result<(), KafkaConnError> {
        let shard = std::rc::Rc::clone(self.shard());
        let mut response = DeleteRecordsResponse::default();
        for topic in request.topics {
            let mut result = DeleteRecordsTopicResult {
                name: topic.name.clone(),
                partitions: Vec::with_capacity(topic.partitions.len()),
            };
            for p in topic.partitions {
                let mut out = DeleteRecordsPartitionResult {
                    partition_index: p.partition_index,
                    low_watermark: -1,
                    ..Default::default()
                };
                let deleted = match partition_index(p.partition_index) {
                    Ok(index) => shard.delete_records(&topic.name, index, p.offset).await,
                    Err(e) => Err(e),
                };
                match deleted {
                    Ok(start) => out.low_watermark = i64::try_from(start).unwrap_or(i64::MAX),
                    Err(e) => out.error_code = error_code(&e),
                }
                result.partitions.push(out);
            }
            response.topics.push(result);
        }
        self.respond(meta, |out, v| response.encode(out, v)).await
    }

    /// The partitions this shard (one Kafka broker) holds, with their sizes, in its one log
    /// directory: the data directory.
    pub(super) async fn describe_log_dirs(
        &mut self,
        meta: &RequestMeta,
        request: DescribeLogDirsRequest,
    ) -> Result<(), KafkaConnError> {
        let shard = self.shard();
        let data_dir = shard.settings().data_dir.clone();
        let wanted = request.topics.as_ref();
        let mut topics: Vec<DescribeLogDirsTopic> = Vec::new();
        for (topic, partition, size, lag) in shard.local_partitions() {
            let asked = wanted.is_none_or(|w| {
                w.iter()
                    .any(|t| t.topic == topic && t.partitions.contains(&(partition as i32)))
            });
            if !asked {
                continue;
            }
            let entry = DescribeLogDirsPartition {
                partition_index: partition as i32,
                partition_size: i64::try_from(size).unwrap_or(i64::MAX),
                offset_lag: i64::try_from(lag).unwrap_or(i64::MAX),
                is_future_key: false,
            };
            match topics.last_mut() {
                Some(last) if last.name == topic => last.partitions.push(entry),
                _ => topics.push(DescribeLogDirsTopic {
                    name: topic,
                    partitions: vec![entry],
                }),
            }
        }
        let (total, usable) = disk_space(&data_dir).unwrap_or((-1, -1));
        let response = DescribeLogDirsResponse {
            results: vec![DescribeLogDirsResult {
                error_code: code::NONE,
                log_dir: data_dir.display().to_string(),
                topics,
                total_bytes: total,
                usable_bytes: usable,
            }],
            ..Default::default()
        };
        self.respond(meta, |out, v| response.encode(out, v)).await
    }
}

/// Total and available bytes of the filesystem holding `dir`.
fn disk_space(dir: &std::path::Path) -> Option<(i64, i64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: `path` is a valid NUL-terminated string and `stat` a zeroed struct that
    // statvfs fills; both outlive the call.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    let frsize = stat.f_frsize as i64;
    Some((
        (stat.f_blocks as i64).saturating_mul(frsize),
        (stat.f_bavail as i64).saturating_mul(frsize),
    ))
}
