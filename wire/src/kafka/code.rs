//! Kafka error codes (Kafka's `Errors` enum) that Tidelog's listener, coordinator and load
//! generator send or act on. One table, so the three never disagree.

/// Something unexpected.
pub const UNKNOWN_SERVER_ERROR: i16 = -1;
/// Success.
pub const NONE: i16 = 0;
/// The fetch or list offset is outside the log.
pub const OFFSET_OUT_OF_RANGE: i16 = 1;
/// A batch's CRC does not match.
pub const CORRUPT_MESSAGE: i16 = 2;
/// The topic or partition does not exist (yet).
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
/// No leader right now (e.g. just after creation).
pub const LEADER_NOT_AVAILABLE: i16 = 5;
/// This node does not lead the partition: refresh metadata.
pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
/// The request did not complete in time (e.g. a metadata change not yet committed).
pub const REQUEST_TIMED_OUT: i16 = 7;
/// A batch is larger than allowed.
pub const MESSAGE_TOO_LARGE: i16 = 10;
/// Commit metadata is longer than allowed.
pub const OFFSET_METADATA_TOO_LARGE: i16 = 12;
/// The coordinator is still loading the group's state.
pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
/// The coordinator cannot take the group now.
pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
/// This node does not coordinate the group: find the coordinator again.
pub const NOT_COORDINATOR: i16 = 16;
/// The topic name breaks the naming rules.
pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
/// `acks` is not 0, 1 or -1.
pub const INVALID_REQUIRED_ACKS: i16 = 21;
/// The generation in the request is not the group's.
pub const ILLEGAL_GENERATION: i16 = 22;
/// Protocol type or protocols do not match the group's.
pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
/// Empty or over-long group id.
pub const INVALID_GROUP_ID: i16 = 24;
/// The member id is not a member of the group.
pub const UNKNOWN_MEMBER_ID: i16 = 25;
/// The session timeout is outside the configured range.
pub const INVALID_SESSION_TIMEOUT: i16 = 26;
/// A rebalance is in progress: re-join.
pub const REBALANCE_IN_PROGRESS: i16 = 27;
/// A producer set LogAppendTime, or a timestamp is out of range.
pub const INVALID_TIMESTAMP: i16 = 32;
/// The API version is not supported.
pub const UNSUPPORTED_VERSION: i16 = 35;
/// CreateTopics: the topic exists.
pub const TOPIC_ALREADY_EXISTS: i16 = 36;
/// CreateTopics: a partition count below 1.
pub const INVALID_PARTITIONS: i16 = 37;
/// The request breaks a broker policy (here: the partition cap).
pub const POLICY_VIOLATION: i16 = 44;
/// CreateTopics: a replication factor this broker cannot provide.
pub const INVALID_REPLICATION_FACTOR: i16 = 38;
/// Fewer in-sync replicas than `min.insync.replicas`: the write was not appended.
pub const NOT_ENOUGH_REPLICAS: i16 = 19;
/// The write is in the log, but the in-sync set shrank below `min.insync.replicas` before it
/// was replicated.
pub const NOT_ENOUGH_REPLICAS_AFTER_APPEND: i16 = 20;
/// The leader epoch named is older than the leader's.
pub const FENCED_LEADER_EPOCH: i16 = 74;
/// The leader epoch named is newer than the leader's.
pub const UNKNOWN_LEADER_EPOCH: i16 = 75;
/// This node cannot make the metadata change now (no metadata leader): retry.
pub const NOT_CONTROLLER: i16 = 41;
/// CreateTopics: an unknown or malformed topic config.
pub const INVALID_CONFIG: i16 = 40;
/// The request is malformed or over a bound.
pub const INVALID_REQUEST: i16 = 42;
/// An idempotent producer's batch does not continue its sequence.
pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
/// An idempotent producer's epoch is older than the partition's.
pub const INVALID_PRODUCER_EPOCH: i16 = 47;
/// A transactional id was given; transactions are not supported.
pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
/// The partition's storage failed (disk full, fsync error).
pub const KAFKA_STORAGE_ERROR: i16 = 56;
/// The batch's compression codec is unknown or not allowed at this Produce version.
pub const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;
/// KIP-394: re-join with the member id in this response.
pub const MEMBER_ID_REQUIRED: i16 = 79;
/// The group has as many members as it may have.
pub const GROUP_MAX_SIZE_REACHED: i16 = 81;
/// Another member now owns this `group_instance_id`.
pub const FENCED_INSTANCE_ID: i16 = 82;
/// ElectLeaders: the preferred replica is not a live in-sync replica.
pub const PREFERRED_LEADER_NOT_AVAILABLE: i16 = 80;
/// ElectLeaders: the preferred replica leads already.
pub const ELECTION_NOT_NEEDED: i16 = 84;
/// AlterPartitionReassignments: replicas named twice, none, or an unknown broker.
pub const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
/// AlterPartitionReassignments: a cancellation, and no reassignment under way.
pub const NO_REASSIGNMENT_IN_PROGRESS: i16 = 85;
/// DescribeCluster: controllers were asked of a broker endpoint (Tidelog's nodes answer for
/// brokers only).
pub const MISMATCHED_ENDPOINT_TYPE: i16 = 114;
/// A batch breaks a record-batch rule (count, control bit, magic, ...).
pub const INVALID_RECORD: i16 = 87;
/// DeleteGroups: the group still has members.
pub const NON_EMPTY_GROUP: i16 = 68;
/// DeleteGroups: no such group (no members, no committed offsets).
pub const GROUP_ID_NOT_FOUND: i16 = 69;
/// OffsetDelete: a member of the group is subscribed to the topic.
pub const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;
