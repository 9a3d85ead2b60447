//! [`FrameEncoder`]: writes a frame's prefix and header; the body (record
//! batches) is never copied into it.

use bytes::{BufMut, BytesMut};
use flatbuffers::{FlatBufferBuilder, WIPOffset};

use super::{
    BodyRef, EpochStart, ErrorCode, ErrorResponse, ErrorResponseArgs, FetchPartitionResult,
    FetchPartitionResultArgs, FetchResponse, FetchResponseArgs, Message, MessageArgs, MessageT,
    ProducePartition, ProducePartitionArgs, ProduceRequest, ProduceRequestArgs, FRAME_LEN_FIELD,
    FRAME_PREFIX_LEN, MESSAGE_IDENTIFIER,
};
use crate::generated::native::Body;
use crate::WireError;

/// One partition of a produce request for
/// [`FrameEncoder::encode_produce_request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceRequestPartition<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// Partition index.
    pub partition: i32,
    /// Bytes of this partition's batches in the body (one or more whole
    /// batches), which the caller sends in partition order.
    pub batches_len: usize,
}

/// One partition of a fetch response for
/// [`FrameEncoder::encode_fetch_response`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchResponsePartition<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// Partition index.
    pub partition: i32,
    /// Outcome for this partition.
    pub error: ErrorCode,
    /// Offset after the last committed record.
    pub high_watermark: i64,
    /// First offset still in the log.
    pub log_start: i64,
    /// Bytes of this partition's batches in the body (0: none), which the
    /// caller sends in partition order.
    pub batches_len: usize,
    /// What a replica fetch is told besides (`None` for consumers).
    pub replica: Option<&'a ReplicaAnswer>,
}

/// The replica-fetch fields of a fetch response partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaAnswer {
    /// The leader's epoch.
    pub leader_epoch: i32,
    /// `(epoch, end offset)` when the follower's log diverges from the leader's.
    pub diverging: Option<(i32, i64)>,
    /// The leader's epochs newer than the follower's last fetched one: `(epoch, start)`.
    pub epochs: Vec<(u32, u64)>,
}

/// Reusable encoder of native frames.
///
/// Build a `Message` in [`builder`](Self::builder) (or use one of the
/// `encode_*` helpers), then [`finish_frame`](Self::finish_frame) appends
/// `frame_len | header_len | header` to a `BytesMut`. The caller sends those
/// bytes followed by `body_len` bytes of body, typically with one vectored
/// write over the header and cached batch buffers, without concatenating
/// them. The builder and scratch vectors keep their capacity across frames,
/// so steady-state encoding does not allocate beyond growing `out`.
pub struct FrameEncoder {
    fbb: FlatBufferBuilder<'static>,
    produce_parts: Vec<WIPOffset<ProducePartition<'static>>>,
    fetch_parts: Vec<WIPOffset<FetchPartitionResult<'static>>>,
}

impl Default for FrameEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for FrameEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameEncoder").finish_non_exhaustive()
    }
}

impl FrameEncoder {
    /// A new encoder with a 1 KiB builder.
    pub fn new() -> Self {
        Self::with_capacity(1024)
    }

    /// A new encoder whose builder starts with `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            fbb: FlatBufferBuilder::with_capacity(capacity),
            produce_parts: Vec::new(),
            fetch_parts: Vec::new(),
        }
    }

    /// The builder to create a `Message` in, for [`finish_frame`](Self::finish_frame).
    pub fn builder(&mut self) -> &mut FlatBufferBuilder<'static> {
        &mut self.fbb
    }

    /// Finishes `root` (built in [`builder`](Self::builder)) with the
    /// `"TLG1"` identifier and appends the 8-byte prefix and the header to
    /// `out`. The frame is complete once the caller sends `body_len` more
    /// bytes. The builder is reset either way.
    ///
    /// # Errors
    ///
    /// [`WireError::FrameTooLarge`] if the frame would not fit the `u32`
    /// length field; `out` is left unchanged then.
    pub fn finish_frame(
        &mut self,
        root: WIPOffset<Message<'static>>,
        body_len: usize,
        out: &mut BytesMut,
    ) -> Result<(), WireError> {
        self.fbb.finish(root, Some(MESSAGE_IDENTIFIER));
        let result = write_frame(self.fbb.finished_data(), body_len, out);
        self.fbb.reset();
        result
    }

    /// Encodes an owned message (object API; allocation is in building
    /// `msg`, not here). For cold paths and tests.
    ///
    /// # Errors
    ///
    /// As [`finish_frame`](Self::finish_frame).
    pub fn encode_message(
        &mut self,
        msg: &MessageT,
        body_len: usize,
        out: &mut BytesMut,
    ) -> Result<(), WireError> {
        let root = msg.pack(&mut self.fbb);
        self.finish_frame(root, body_len, out)
    }

    /// Encodes a produce request whose partitions' batches follow in the body
    /// in the order given, back to back. Returns the body length to send.
    ///
    /// # Errors
    ///
    /// [`WireError::FrameTooLarge`] if the body or frame exceeds `u32`.
    pub fn encode_produce_request(
        &mut self,
        correlation_id: u32,
        acks: i8,
        timeout_ms: i32,
        partitions: &[ProduceRequestPartition<'_>],
        out: &mut BytesMut,
    ) -> Result<usize, WireError> {
        let body_len = body_len(partitions.iter().map(|p| p.batches_len))?;
        self.produce_parts.clear();
        let mut offset = 0u32;
        for p in partitions {
            // In range: body_len checked that the whole body fits u32.
            let batches = BodyRef::new(offset, p.batches_len as u32);
            offset += p.batches_len as u32;
            let topic = self.fbb.create_string(p.topic);
            let part = ProducePartition::create(
                &mut self.fbb,
                &ProducePartitionArgs {
                    topic: Some(topic),
                    partition: p.partition,
                    batches: Some(&batches),
                },
            );
            self.produce_parts.push(part);
        }
        let parts = self.fbb.create_vector(&self.produce_parts);
        let req = ProduceRequest::create(
            &mut self.fbb,
            &ProduceRequestArgs {
                acks,
                timeout_ms,
                partitions: Some(parts),
            },
        );
        let root = Message::create(
            &mut self.fbb,
            &MessageArgs {
                correlation_id,
                body_type: Body::ProduceRequest,
                body: Some(req.as_union_value()),
            },
        );
        self.finish_frame(root, body_len, out)?;
        Ok(body_len)
    }

    /// Encodes a fetch response whose partitions' batches follow in the body
    /// in the order given, back to back. Partitions with `batches_len == 0`
    /// get no `BodyRef`. Returns the body length to send.
    ///
    /// # Errors
    ///
    /// [`WireError::FrameTooLarge`] if the body or frame exceeds `u32`.
    pub fn encode_fetch_response(
        &mut self,
        correlation_id: u32,
        partitions: &[FetchResponsePartition<'_>],
        out: &mut BytesMut,
    ) -> Result<usize, WireError> {
        let body_len = body_len(partitions.iter().map(|p| p.batches_len))?;
        self.fetch_parts.clear();
        let mut offset = 0u32;
        for p in partitions {
            // In range: body_len checked that the whole body fits u32.
            let batches = BodyRef::new(offset, p.batches_len as u32);
            offset += p.batches_len as u32;
            let topic = self.fbb.create_string(p.topic);
            let epochs = p.replica.filter(|r| !r.epochs.is_empty()).map(|r| {
                let starts: Vec<EpochStart> = r
                    .epochs
                    .iter()
                    .map(|&(epoch, start)| EpochStart::new(epoch, start))
                    .collect();
                self.fbb.create_vector(&starts)
            });
            let (diverging_epoch, diverging_end_offset) =
                p.replica.and_then(|r| r.diverging).unwrap_or((-1, -1));
            let part = FetchPartitionResult::create(
                &mut self.fbb,
                &FetchPartitionResultArgs {
                    topic: Some(topic),
                    partition: p.partition,
                    error: p.error,
                    high_watermark: p.high_watermark,
                    log_start: p.log_start,
                    batches: (p.batches_len > 0).then_some(&batches),
                    leader_epoch: p.replica.map_or(-1, |r| r.leader_epoch),
                    diverging_epoch,
                    diverging_end_offset,
                    epochs,
                },
            );
            self.fetch_parts.push(part);
        }
        let parts = self.fbb.create_vector(&self.fetch_parts);
        let resp = FetchResponse::create(
            &mut self.fbb,
            &FetchResponseArgs {
                partitions: Some(parts),
            },
        );
        let root = Message::create(
            &mut self.fbb,
            &MessageArgs {
                correlation_id,
                body_type: Body::FetchResponse,
                body: Some(resp.as_union_value()),
            },
        );
        self.finish_frame(root, body_len, out)?;
        Ok(body_len)
    }

    /// Encodes an `ErrorResponse` (the answer to a frame that could not be
    /// understood) with an empty body.
    ///
    /// # Errors
    ///
    /// [`WireError::FrameTooLarge`] if `message` does not fit a frame.
    pub fn encode_error_response(
        &mut self,
        correlation_id: u32,
        error: ErrorCode,
        message: &str,
        out: &mut BytesMut,
    ) -> Result<(), WireError> {
        let message = self.fbb.create_string(message);
        let resp = ErrorResponse::create(
            &mut self.fbb,
            &ErrorResponseArgs {
                error,
                message: Some(message),
            },
        );
        let root = Message::create(
            &mut self.fbb,
            &MessageArgs {
                correlation_id,
                body_type: Body::ErrorResponse,
                body: Some(resp.as_union_value()),
            },
        );
        self.finish_frame(root, 0, out)
    }
}

/// A `BodyRef` for `[offset, offset + len)`, if both ends fit in `u32`.
/// Total length of a body made of these pieces back to back, which every `BodyRef` (u32
/// offset and length) must be able to address.
fn body_len(pieces: impl Iterator<Item = usize>) -> Result<usize, WireError> {
    let total = pieces.fold(0u64, |sum, len| sum.saturating_add(len as u64));
    if total > u64::from(u32::MAX) {
        return Err(WireError::FrameTooLarge {
            len: total,
            max: u32::MAX as usize,
        });
    }
    Ok(total as usize)
}

/// Appends `frame_len | header_len | header` to `out`.
fn write_frame(header: &[u8], body_len: usize, out: &mut BytesMut) -> Result<(), WireError> {
    let total = (FRAME_PREFIX_LEN as u64)
        .saturating_add(header.len() as u64)
        .saturating_add(body_len as u64);
    let too_large = || WireError::FrameTooLarge {
        len: total,
        max: u32::MAX as usize + FRAME_LEN_FIELD,
    };
    let frame_len = u32::try_from(total - FRAME_LEN_FIELD as u64).map_err(|_| too_large())?;
    let header_len = u32::try_from(header.len()).map_err(|_| too_large())?;
    out.reserve(FRAME_PREFIX_LEN + header.len());
    out.put_u32_le(frame_len);
    out.put_u32_le(header_len);
    out.extend_from_slice(header);
    Ok(())
}
