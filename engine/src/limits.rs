//! Every bound the engine relies on, as a named constant, with compile-time checks of the
//! relationships between them. A limit that is not here does not exist.

/// Alignment of every O_DIRECT file position, length and buffer address. 4 KiB covers both
/// 512-byte and 4 KiB logical-block devices.
pub const IO_ALIGNMENT: usize = 4096;

/// Size of one segment write buffer. A full buffer is written with one DMA write; this is
/// also the largest single write the engine issues.
pub const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// Full-buffer writes that may be in flight at once per partition (queue depth). Writes that
/// overlap a page already being written are always serialized.
pub const WRITES_IN_FLIGHT_MAX: usize = 8;

/// Default cap on partitions per shard (`BrokerConfig::max_partitions_per_shard`, times the
/// shard count for the broker): each open partition holds file descriptors and
/// a housekeeping task, so an unbounded count lets one client exhaust them.
pub const PARTITIONS_PER_SHARD_DEFAULT: u32 = 1000;

/// Topics one Metadata request may have auto-created; the rest are answered
/// UNKNOWN_TOPIC_OR_PARTITION (the client asks again), so one request cannot start a
/// creation storm.
pub const AUTO_CREATES_PER_REQUEST_MAX: usize = 64;

/// Size of one read issued by recovery scans and index rebuilds.
pub const SCAN_READ_BYTES: usize = 1 << 20;

/// Largest batch the log accepts. Bigger batches are refused before anything is copied.
pub const BATCH_BYTES_MAX: usize = 16 << 20;

/// A segment can never be smaller than this (it must hold at least one maximal batch).
pub const SEGMENT_BYTES_MIN: u64 = 64 << 10;

/// Segment positions are stored as `u32` in the offset index.
pub const SEGMENT_BYTES_MAX: u64 = u32::MAX as u64;

/// Offsets inside a segment are stored relative to its base offset as `u32`.
pub const SEGMENT_OFFSETS_MAX: u64 = u32::MAX as u64;

/// Bytes reserved with fallocate ahead of the write head in one step.
pub const PREALLOCATE_STEP_BYTES: u64 = 256 << 20;

/// Most bytes of request read buffers that stored batches may keep alive per shard (the
/// listeners' ledger, `server/pinned.rs`): the batch cache keeps produced batches as slices of
/// the buffer they arrived in (no copy) while the buffers so kept total less than this; past
/// it, batches are copied into buffers of their own. Counted at each buffer's full size.
pub const PINNED_READ_BYTES_MAX: usize = 64 << 20;

/// Largest topic or partition directory name component.
pub const NAME_BYTES_MAX: usize = 249;

const _: () = {
    assert!(WRITE_BUFFER_BYTES.is_multiple_of(IO_ALIGNMENT));
    assert!(SCAN_READ_BYTES.is_multiple_of(IO_ALIGNMENT));
    assert!(PREALLOCATE_STEP_BYTES.is_multiple_of(IO_ALIGNMENT as u64));
    assert!(BATCH_BYTES_MAX as u64 <= SEGMENT_BYTES_MAX);
    assert!(WRITES_IN_FLIGHT_MAX >= 1);
};

/// Most shards (executors) one broker runs.
pub const SHARDS_MAX: usize = 1024;

/// Memory a shard gives to request frames read into buffers of their own (the large ones:
/// produce requests), all its connections together. A frame takes it as its bytes arrive
/// and gives it back when handled; while it is spent, those reads wait. It must exceed the
/// largest request a listener accepts (100 MiB), so any one request can always arrive.
pub const REQUEST_MEMORY_BYTES_PER_SHARD: usize = 256 << 20;

// One address may hold half of it, which must still fit the largest request (100 MiB).
const _: () = assert!(REQUEST_MEMORY_BYTES_PER_SHARD / 2 >= 100 << 20);

/// Default cap on connections from one client address per shard, both protocols together
/// (`BrokerConfig::max_connections_per_ip`): one host cannot take every connection slot.
pub const CONNECTIONS_PER_IP_PER_SHARD_DEFAULT: usize = 1000;

/// Requests (and pushes) from one peer shard a shard serves at once; past it, it stops
/// taking them from that peer's channel, which fills, so the peer waits (push-back).
pub const SHARD_REQUESTS_IN_FLIGHT: usize = 256;

/// Messages queued from one shard to another before the sender waits.
pub const SHARD_CHANNEL_DEPTH: usize = 1024;

/// Longest a connection's socket write may make no progress (a peer that stopped reading)
/// before the connection is closed, releasing the buffers its responses hold.
pub const WRITE_STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Memory for disk-read buffers per shard (`log::memory::ReadMemory`): fetch responses hold
/// their buffers until sent, read-aheads theirs until used. Reads wait (or, holding memory
/// already, go without) while it is spent.
pub const READ_MEMORY_BYTES_PER_SHARD: usize = 256 << 20;

/// Default receive buffer of accepted connections (`--socket-receive-buffer-bytes`, Kafka's
/// `socket.receive.buffer.bytes` is 100 KiB); `None` would leave it to the kernel's
/// autotuning, which lets every connection's unread bytes take up to `tcp_rmem`'s maximum
/// (6 MiB here) of kernel memory: 1,000 clients sending requests the broker is not reading
/// yet then push the kernel into TCP memory pressure, which throttles every socket.
pub const SOCKET_RECEIVE_BUFFER_DEFAULT: Option<usize> = Some(128 << 10);

/// Bytes appended but not yet written to their files, per shard, all partitions together
/// (`BatchCache::pinned_bytes`): past it an appender first waits for its partition's oldest
/// write in flight. Without it, each partition's buffer and writes in flight (9 MiB) times
/// the partitions would be the only bound. Exceeded by at most one buffer and one batch
/// per partition (a partition with nothing in flight appends into its buffer).
pub const DIRTY_BYTES_PER_SHARD: usize = 256 << 20;

/// The batch cache of an embedded broker (`BrokerConfig::default`), all shards together.
/// `tidelog serve` sizes it from the machine instead ([`CACHE_SHARE_OF_MEMORY_PERCENT`]).
pub const CACHE_BYTES_EMBEDDED_DEFAULT: u64 = 1 << 30;

/// `tidelog serve`'s default batch cache, as a share of the memory the process may use
/// (the smaller of the machine's and its cgroup's limit), all shards together. Modest on
/// purpose: every byte the cache holds is memory touched for the first time as it fills,
/// which on the development VM costs about 1-2 CPU-seconds per GiB (tuning.md), so a larger
/// default would halve a fresh broker's produce throughput until it is full. Raise it with
/// `--cache-bytes` on a dedicated broker.
pub const CACHE_SHARE_OF_MEMORY_PERCENT: u64 = 10;

/// Groups one ListGroups answer names from committed offsets alone (groups with members are
/// bounded by the coordinator's own `groups_max`).
pub const GROUPS_LISTED_MAX: usize = 10_000;
