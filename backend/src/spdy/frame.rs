//! SPDY/3 frames: their in-memory form, the encoder (which owns the sending zlib stream) and an
//! incremental decoder (which owns the receiving one).
//!
//! Every frame starts with 8 bytes. A control frame: `1 | version(15) | type(16)` then
//! `flags(8) | length(24)`; a data frame: `0 | stream id(31)` then `flags(8) | length(24)`.
//! `length` counts the bytes after these 8.

use bytes::{Buf, Bytes, BytesMut};

use super::headers::{HeaderBlockError, HeaderCompressor, HeaderDecompressor, Headers};

pub(crate) const VERSION: u16 = 3;
const HEADER_BYTES: usize = 8;
/// The largest length the 24-bit field holds.
pub const MAX_FRAME_LENGTH: usize = (1 << 24) - 1;
/// Stream ids and window deltas are 31-bit.
pub(crate) const MAX_STREAM_ID: u32 = 0x7fff_ffff;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

const FLAG_FIN: u8 = 0x01;
const FLAG_UNIDIRECTIONAL: u8 = 0x02;
const FLAG_CLEAR_SETTINGS: u8 = 0x01;

/// SETTINGS id of the initial per-stream window.
pub(crate) const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;

/// RST_STREAM status codes (SPDY/3 section 2.4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RstStatus {
    ProtocolError,
    InvalidStream,
    RefusedStream,
    UnsupportedVersion,
    Cancel,
    InternalError,
    FlowControlError,
    StreamInUse,
    StreamAlreadyClosed,
    InvalidCredentials,
    FrameTooLarge,
    /// A code this implementation does not know; kept so that it can be reported.
    Other(u32),
}

impl RstStatus {
    pub fn code(self) -> u32 {
        match self {
            RstStatus::ProtocolError => 1,
            RstStatus::InvalidStream => 2,
            RstStatus::RefusedStream => 3,
            RstStatus::UnsupportedVersion => 4,
            RstStatus::Cancel => 5,
            RstStatus::InternalError => 6,
            RstStatus::FlowControlError => 7,
            RstStatus::StreamInUse => 8,
            RstStatus::StreamAlreadyClosed => 9,
            RstStatus::InvalidCredentials => 10,
            RstStatus::FrameTooLarge => 11,
            RstStatus::Other(code) => code,
        }
    }

    pub fn from_code(code: u32) -> Self {
        match code {
            1 => RstStatus::ProtocolError,
            2 => RstStatus::InvalidStream,
            3 => RstStatus::RefusedStream,
            4 => RstStatus::UnsupportedVersion,
            5 => RstStatus::Cancel,
            6 => RstStatus::InternalError,
            7 => RstStatus::FlowControlError,
            8 => RstStatus::StreamInUse,
            9 => RstStatus::StreamAlreadyClosed,
            10 => RstStatus::InvalidCredentials,
            11 => RstStatus::FrameTooLarge,
            other => RstStatus::Other(other),
        }
    }
}

/// GOAWAY status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GoAwayStatus {
    Ok,
    ProtocolError,
    InternalError,
    Other(u32),
}

impl GoAwayStatus {
    pub fn code(self) -> u32 {
        match self {
            GoAwayStatus::Ok => 0,
            GoAwayStatus::ProtocolError => 1,
            GoAwayStatus::InternalError => 2,
            GoAwayStatus::Other(code) => code,
        }
    }

    pub fn from_code(code: u32) -> Self {
        match code {
            0 => GoAwayStatus::Ok,
            1 => GoAwayStatus::ProtocolError,
            2 => GoAwayStatus::InternalError,
            other => GoAwayStatus::Other(other),
        }
    }
}

/// One SETTINGS entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setting {
    pub flags: u8,
    /// 24-bit id.
    pub id: u32,
    pub value: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_id: u32,
        priority: u8,
        fin: bool,
        unidirectional: bool,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: RstStatus,
    },
    Settings {
        clear: bool,
        entries: Vec<Setting>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: GoAwayStatus,
    },
    Headers {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        fin: bool,
        data: Bytes,
    },
    /// A control frame of a type SPDY/3 does not define: skipped whole, as the spec asks.
    Unknown {
        frame_type: u16,
    },
}

/// What the decoder refused, and how far the damage goes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("control frame of version {0}, only SPDY/3 is spoken")]
    UnsupportedVersion(u16),
    #[error("frame of {length_bytes} bytes exceeds the limit of {limit_bytes}")]
    TooLarge { length_bytes: usize, limit_bytes: usize },
    #[error("frame type {frame_type} with length {length_bytes} is malformed")]
    BadLength { frame_type: u16, length_bytes: usize },
    #[error("frame type {frame_type} names stream 0")]
    ZeroStreamId { frame_type: u16 },
    #[error("RST_STREAM on stream {stream_id} with status 0")]
    ZeroRstStatus { stream_id: u32 },
    #[error("header block of stream {stream_id}: {source}")]
    HeaderBlock { stream_id: u32, source: HeaderBlockError },
}

impl FrameError {
    /// The stream to reset when the error concerns only that stream; `None` when the session
    /// cannot go on (the framing or the shared zlib stream is out of step).
    pub fn stream_id(&self) -> Option<u32> {
        match self {
            FrameError::ZeroRstStatus { stream_id } => Some(*stream_id),
            _ => None,
        }
    }
}

/// Writes frames; owns the session's sending zlib stream, so frames must be encoded in the
/// order they go on the wire.
pub(crate) struct Encoder {
    compressor: HeaderCompressor,
    block: Vec<u8>,
}

impl Encoder {
    pub(crate) fn new() -> Self {
        Self { compressor: HeaderCompressor::new(), block: Vec::new() }
    }

    /// Appends the wire form of `frame` to `out`. Panics on a frame no caller may build (a DATA
    /// payload over 16 MiB, a zero stream id): the session checks these before it queues.
    pub(crate) fn encode(&mut self, frame: &Frame, out: &mut Vec<u8>) {
        match frame {
            Frame::SynStream { stream_id, associated_id, priority, fin, unidirectional, headers } => {
                self.compress(headers);
                let flags = flag(*fin, FLAG_FIN) | flag(*unidirectional, FLAG_UNIDIRECTIONAL);
                control_header(out, TYPE_SYN_STREAM, flags, 10 + self.block.len());
                out.extend_from_slice(&nonzero_id(*stream_id).to_be_bytes());
                out.extend_from_slice(&(associated_id & MAX_STREAM_ID).to_be_bytes());
                out.push((priority & 0x07) << 5);
                out.push(0); // credential slot: unused
                out.extend_from_slice(&self.block);
            }
            Frame::SynReply { stream_id, fin, headers } => {
                self.compress(headers);
                control_header(out, TYPE_SYN_REPLY, flag(*fin, FLAG_FIN), 4 + self.block.len());
                out.extend_from_slice(&nonzero_id(*stream_id).to_be_bytes());
                out.extend_from_slice(&self.block);
            }
            Frame::Headers { stream_id, fin, headers } => {
                self.compress(headers);
                control_header(out, TYPE_HEADERS, flag(*fin, FLAG_FIN), 4 + self.block.len());
                out.extend_from_slice(&nonzero_id(*stream_id).to_be_bytes());
                out.extend_from_slice(&self.block);
            }
            Frame::RstStream { stream_id, status } => {
                control_header(out, TYPE_RST_STREAM, 0, 8);
                out.extend_from_slice(&nonzero_id(*stream_id).to_be_bytes());
                out.extend_from_slice(&status.code().to_be_bytes());
            }
            Frame::Settings { clear, entries } => {
                control_header(out, TYPE_SETTINGS, flag(*clear, FLAG_CLEAR_SETTINGS), 4 + 8 * entries.len());
                out.extend_from_slice(&u32::try_from(entries.len()).expect("few settings").to_be_bytes());
                for entry in entries {
                    let flags_and_id = (u32::from(entry.flags) << 24) | (entry.id & 0x00ff_ffff);
                    out.extend_from_slice(&flags_and_id.to_be_bytes());
                    out.extend_from_slice(&entry.value.to_be_bytes());
                }
            }
            Frame::Ping { id } => {
                control_header(out, TYPE_PING, 0, 4);
                out.extend_from_slice(&id.to_be_bytes());
            }
            Frame::GoAway { last_good_stream_id, status } => {
                control_header(out, TYPE_GOAWAY, 0, 8);
                out.extend_from_slice(&(last_good_stream_id & MAX_STREAM_ID).to_be_bytes());
                out.extend_from_slice(&status.code().to_be_bytes());
            }
            Frame::WindowUpdate { stream_id, delta } => {
                control_header(out, TYPE_WINDOW_UPDATE, 0, 8);
                out.extend_from_slice(&(stream_id & MAX_STREAM_ID).to_be_bytes());
                out.extend_from_slice(&(delta & MAX_STREAM_ID).to_be_bytes());
            }
            Frame::Data { stream_id, fin, data } => {
                assert!(data.len() <= MAX_FRAME_LENGTH, "DATA payload of {} bytes", data.len());
                out.extend_from_slice(&(nonzero_id(*stream_id) & MAX_STREAM_ID).to_be_bytes());
                out.extend_from_slice(&flags_and_length(flag(*fin, FLAG_FIN), data.len()).to_be_bytes());
                out.extend_from_slice(data);
            }
            Frame::Unknown { frame_type } => control_header(out, *frame_type, 0, 0),
        }
    }

    fn compress(&mut self, headers: &Headers) {
        self.block.clear();
        self.compressor.compress(headers, &mut self.block);
    }
}

fn flag(set: bool, bit: u8) -> u8 {
    if set { bit } else { 0 }
}

fn nonzero_id(stream_id: u32) -> u32 {
    assert!(stream_id != 0 && stream_id <= MAX_STREAM_ID, "stream id {stream_id} out of range");
    stream_id
}

fn flags_and_length(flags: u8, length: usize) -> u32 {
    assert!(length <= MAX_FRAME_LENGTH, "frame length {length}");
    (u32::from(flags) << 24) | u32::try_from(length).expect("checked above")
}

fn control_header(out: &mut Vec<u8>, frame_type: u16, flags: u8, length: usize) {
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&frame_type.to_be_bytes());
    out.extend_from_slice(&flags_and_length(flags, length).to_be_bytes());
}

/// Reads frames from a byte buffer that fills up in arbitrary chunks; owns the session's
/// receiving zlib stream.
pub(crate) struct Decoder {
    headers: HeaderDecompressor,
    max_frame_bytes: usize,
}

impl Decoder {
    pub(crate) fn new(max_frame_bytes: usize, max_header_block_bytes: usize) -> Self {
        assert!(max_frame_bytes <= MAX_FRAME_LENGTH);
        Self { headers: HeaderDecompressor::new(max_header_block_bytes), max_frame_bytes }
    }

    /// Takes the next whole frame off the front of `buf`, or returns `Ok(None)` until one has
    /// arrived. A refused frame is consumed too, so that a stream-level error lets the caller
    /// go on with the next frame.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some(head) = buf.first_chunk::<HEADER_BYTES>() else { return Ok(None) };
        let first = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let flags = head[4];
        let length = (u32::from_be_bytes([0, head[5], head[6], head[7]])) as usize;
        if length > self.max_frame_bytes {
            return Err(FrameError::TooLarge { length_bytes: length, limit_bytes: self.max_frame_bytes });
        }
        if buf.len() < HEADER_BYTES + length {
            buf.reserve(HEADER_BYTES + length - buf.len());
            return Ok(None);
        }
        buf.advance(HEADER_BYTES);
        let payload = buf.split_to(length).freeze();
        if first & 0x8000_0000 == 0 {
            let stream_id = first & MAX_STREAM_ID;
            if stream_id == 0 {
                return Err(FrameError::ZeroStreamId { frame_type: 0 });
            }
            return Ok(Some(Frame::Data { stream_id, fin: flags & FLAG_FIN != 0, data: payload }));
        }
        let version = ((first >> 16) & 0x7fff) as u16;
        let frame_type = (first & 0xffff) as u16;
        if version != VERSION {
            return Err(FrameError::UnsupportedVersion(version));
        }
        self.control(frame_type, flags, &payload).map(Some)
    }

    fn control(&mut self, frame_type: u16, flags: u8, payload: &[u8]) -> Result<Frame, FrameError> {
        let bad_length = || FrameError::BadLength { frame_type, length_bytes: payload.len() };
        let fin = flags & FLAG_FIN != 0;
        match frame_type {
            TYPE_SYN_STREAM => {
                let fixed: &[u8; 10] = payload.first_chunk().ok_or_else(bad_length)?;
                let stream_id = be32(&fixed[0..4]) & MAX_STREAM_ID;
                let associated_id = be32(&fixed[4..8]) & MAX_STREAM_ID;
                let priority = fixed[8] >> 5;
                // Inflate before judging the id: the zlib stream must stay in step either way.
                let headers = self.header_block(stream_id, &payload[10..])?;
                if stream_id == 0 {
                    return Err(FrameError::ZeroStreamId { frame_type });
                }
                let unidirectional = flags & FLAG_UNIDIRECTIONAL != 0;
                Ok(Frame::SynStream { stream_id, associated_id, priority, fin, unidirectional, headers })
            }
            TYPE_SYN_REPLY | TYPE_HEADERS => {
                let fixed: &[u8; 4] = payload.first_chunk().ok_or_else(bad_length)?;
                let stream_id = be32(fixed) & MAX_STREAM_ID;
                let headers = self.header_block(stream_id, &payload[4..])?;
                if stream_id == 0 {
                    return Err(FrameError::ZeroStreamId { frame_type });
                }
                if frame_type == TYPE_SYN_REPLY {
                    Ok(Frame::SynReply { stream_id, fin, headers })
                } else {
                    Ok(Frame::Headers { stream_id, fin, headers })
                }
            }
            TYPE_RST_STREAM => {
                let fixed: &[u8; 8] = payload.try_into().map_err(|_| bad_length())?;
                let stream_id = be32(&fixed[0..4]) & MAX_STREAM_ID;
                let code = be32(&fixed[4..8]);
                if stream_id == 0 {
                    return Err(FrameError::ZeroStreamId { frame_type });
                }
                if code == 0 {
                    return Err(FrameError::ZeroRstStatus { stream_id });
                }
                Ok(Frame::RstStream { stream_id, status: RstStatus::from_code(code) })
            }
            TYPE_SETTINGS => {
                let count = be32(payload.first_chunk::<4>().ok_or_else(bad_length)?) as usize;
                let entries_bytes = &payload[4..];
                if count.checked_mul(8) != Some(entries_bytes.len()) {
                    return Err(bad_length());
                }
                let entries = entries_bytes
                    .chunks_exact(8)
                    .map(|entry| {
                        let flags_and_id = be32(&entry[0..4]);
                        Setting {
                            flags: (flags_and_id >> 24) as u8,
                            id: flags_and_id & 0x00ff_ffff,
                            value: be32(&entry[4..8]),
                        }
                    })
                    .collect();
                Ok(Frame::Settings { clear: flags & FLAG_CLEAR_SETTINGS != 0, entries })
            }
            TYPE_PING => {
                let fixed: &[u8; 4] = payload.try_into().map_err(|_| bad_length())?;
                Ok(Frame::Ping { id: be32(fixed) })
            }
            TYPE_GOAWAY => {
                // SPDY/2 sent 4 bytes; SPDY/3 adds the status.
                let fixed: &[u8; 8] = payload.try_into().map_err(|_| bad_length())?;
                Ok(Frame::GoAway {
                    last_good_stream_id: be32(&fixed[0..4]) & MAX_STREAM_ID,
                    status: GoAwayStatus::from_code(be32(&fixed[4..8])),
                })
            }
            TYPE_WINDOW_UPDATE => {
                let fixed: &[u8; 8] = payload.try_into().map_err(|_| bad_length())?;
                Ok(Frame::WindowUpdate {
                    stream_id: be32(&fixed[0..4]) & MAX_STREAM_ID,
                    delta: be32(&fixed[4..8]) & MAX_STREAM_ID,
                })
            }
            other => Ok(Frame::Unknown { frame_type: other }),
        }
    }

    fn header_block(&mut self, stream_id: u32, block: &[u8]) -> Result<Headers, FrameError> {
        self.headers.decompress(block).map_err(|source| FrameError::HeaderBlock { stream_id, source })
    }
}

fn be32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes(bytes.try_into().expect("callers pass 4 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode_all(frames: &[Frame]) -> Vec<u8> {
        let mut encoder = Encoder::new();
        let mut wire = Vec::new();
        for frame in frames {
            encoder.encode(frame, &mut wire);
        }
        wire
    }

    fn decode_all(wire: &[u8], chunk_ends: &[usize]) -> Vec<Frame> {
        let mut decoder = Decoder::new(MAX_FRAME_LENGTH, 1 << 20);
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        let mut start = 0;
        for &end in chunk_ends.iter().chain(std::iter::once(&wire.len())) {
            let end = end.clamp(start, wire.len());
            buf.extend_from_slice(&wire[start..end]);
            start = end;
            while let Some(frame) = decoder.decode(&mut buf).expect("valid frames") {
                frames.push(frame);
            }
        }
        assert!(buf.is_empty(), "{} bytes left over", buf.len());
        frames
    }

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        pairs.iter().copied().collect()
    }

    // Known answers, built by hand from the frame layouts of the SPDY/3 draft.

    #[test]
    fn ping_known_bytes() {
        let wire = encode_all(&[Frame::Ping { id: 0x0102_0304 }]);
        assert_eq!(wire, [0x80, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0x01, 0x02, 0x03, 0x04]);
        assert_eq!(decode_all(&wire, &[]), [Frame::Ping { id: 0x0102_0304 }]);
    }

    #[test]
    fn rst_goaway_window_update_data_known_bytes() {
        let frames = [
            Frame::RstStream { stream_id: 5, status: RstStatus::Cancel },
            Frame::GoAway { last_good_stream_id: 7, status: GoAwayStatus::ProtocolError },
            Frame::WindowUpdate { stream_id: 3, delta: 0x1_0000 },
            Frame::Data { stream_id: 3, fin: true, data: Bytes::from_static(b"hi") },
            Frame::Settings { clear: false, entries: vec![Setting { flags: 0, id: 7, value: 0x0001_0000 }] },
        ];
        let wire = encode_all(&frames);
        #[rustfmt::skip]
        let expected: &[u8] = &[
            0x80, 0x03, 0x00, 0x03, 0x00, 0x00, 0x00, 0x08, 0, 0, 0, 5, 0, 0, 0, 5,
            0x80, 0x03, 0x00, 0x07, 0x00, 0x00, 0x00, 0x08, 0, 0, 0, 7, 0, 0, 0, 1,
            0x80, 0x03, 0x00, 0x09, 0x00, 0x00, 0x00, 0x08, 0, 0, 0, 3, 0, 1, 0, 0,
            0x00, 0x00, 0x00, 0x03, 0x01, 0x00, 0x00, 0x02, b'h', b'i',
            0x80, 0x03, 0x00, 0x04, 0x00, 0x00, 0x00, 0x0c, 0, 0, 0, 1, 0, 0, 0, 7, 0, 1, 0, 0,
        ];
        assert_eq!(wire, expected);
        assert_eq!(decode_all(&wire, &[]), frames);
    }

    #[test]
    fn syn_stream_fixed_fields_known_bytes() {
        let frame = Frame::SynStream {
            stream_id: 1,
            associated_id: 0,
            priority: 2,
            fin: true,
            unidirectional: false,
            headers: headers(&[("streamtype", "error")]),
        };
        let wire = encode_all(std::slice::from_ref(&frame));
        // control bit + version 3, type 1, flags FIN, then the length of what follows.
        assert_eq!(wire[0..4], [0x80, 0x03, 0x00, 0x01]);
        assert_eq!(wire[4], 0x01);
        let length = u32::from_be_bytes([0, wire[5], wire[6], wire[7]]) as usize;
        assert_eq!(length, wire.len() - 8);
        // stream id, associated id, priority in the top 3 bits, slot.
        assert_eq!(wire[8..18], [0, 0, 0, 1, 0, 0, 0, 0, 0x40, 0]);
        // The header block opens a zlib stream primed with the dictionary (FDICT + id).
        assert_eq!(wire[18] & 0x0f, 8);
        assert_ne!(wire[19] & 0x20, 0);
        assert_eq!(decode_all(&wire, &[]), [frame]);
    }

    #[test]
    fn unknown_control_frames_are_skipped_whole() {
        // Type 0x0a (CREDENTIAL, unused) with 3 bytes of payload, then a PING.
        let mut wire = vec![0x80, 0x03, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x03, 9, 9, 9];
        wire.extend(encode_all(&[Frame::Ping { id: 1 }]));
        assert_eq!(decode_all(&wire, &[]), [Frame::Unknown { frame_type: 10 }, Frame::Ping { id: 1 }]);
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        let cases: &[(&[u8], FrameError)] = &[
            (&[0x80, 0x02, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 1], FrameError::UnsupportedVersion(2)),
            (&[0x80, 0x03, 0x00, 0x06, 0, 0, 0, 3, 0, 0, 1], FrameError::BadLength { frame_type: 6, length_bytes: 3 }),
            (&[0x80, 0x03, 0x00, 0x03, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1], FrameError::ZeroStreamId { frame_type: 3 }),
            (&[0x80, 0x03, 0x00, 0x03, 0, 0, 0, 8, 0, 0, 0, 3, 0, 0, 0, 0], FrameError::ZeroRstStatus { stream_id: 3 }),
            (&[0, 0, 0, 0, 0, 0, 0, 0], FrameError::ZeroStreamId { frame_type: 0 }),
            (
                &[0x80, 0x03, 0x00, 0x04, 0, 0, 0, 8, 0, 0, 0, 2, 0, 0, 0, 7],
                FrameError::BadLength { frame_type: 4, length_bytes: 8 },
            ),
            (&[0x80, 0x03, 0x00, 0x01, 0, 0, 0, 2, 0, 1], FrameError::BadLength { frame_type: 1, length_bytes: 2 }),
        ];
        for (wire, expected) in cases {
            let mut decoder = Decoder::new(1 << 20, 1 << 16);
            let mut buf = BytesMut::from(*wire);
            assert_eq!(decoder.decode(&mut buf).as_ref(), Err(expected), "{wire:?}");
            assert!(buf.is_empty(), "the refused frame is consumed");
        }
        let mut decoder = Decoder::new(16, 1 << 16);
        let mut buf = BytesMut::from(&[0u8, 0, 0, 1, 0, 0, 0, 17][..]);
        assert_eq!(decoder.decode(&mut buf), Err(FrameError::TooLarge { length_bytes: 17, limit_bytes: 16 }));
        // A SYN_STREAM whose block is not zlib.
        let mut decoder = Decoder::new(1 << 20, 1 << 16);
        let mut buf = BytesMut::from(&[0x80u8, 0x03, 0x00, 0x01, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2][..]);
        assert!(matches!(decoder.decode(&mut buf), Err(FrameError::HeaderBlock { stream_id: 1, .. })));
    }

    fn arb_headers() -> impl Strategy<Value = Headers> {
        proptest::collection::vec(("[a-z][a-z0-9-]{0,12}", "[ -~]{0,40}"), 0..6).prop_map(|pairs| {
            let mut seen = Vec::new();
            let mut headers = Headers::new();
            // Repeated names merge on the wire and come back grouped; keep names distinct so
            // that the round trip is the identity.
            for (name, value) in pairs {
                if !seen.contains(&name) {
                    headers.insert(name.clone(), value);
                    seen.push(name);
                }
            }
            headers
        })
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        let id = 1u32..=MAX_STREAM_ID;
        prop_oneof![
            (id.clone(), 0..=MAX_STREAM_ID, 0u8..8, any::<bool>(), any::<bool>(), arb_headers()).prop_map(
                |(stream_id, associated_id, priority, fin, unidirectional, headers)| Frame::SynStream {
                    stream_id,
                    associated_id,
                    priority,
                    fin,
                    unidirectional,
                    headers
                }
            ),
            (id.clone(), any::<bool>(), arb_headers()).prop_map(|(stream_id, fin, headers)| Frame::SynReply {
                stream_id,
                fin,
                headers
            }),
            (id.clone(), any::<bool>(), arb_headers()).prop_map(|(stream_id, fin, headers)| Frame::Headers {
                stream_id,
                fin,
                headers
            }),
            (id.clone(), 1u32..20)
                .prop_map(|(stream_id, code)| Frame::RstStream { stream_id, status: RstStatus::from_code(code) }),
            (any::<bool>(), proptest::collection::vec((any::<u8>(), 0u32..0x0100_0000, any::<u32>()), 0..4)).prop_map(
                |(clear, entries)| Frame::Settings {
                    clear,
                    entries: entries.into_iter().map(|(flags, id, value)| Setting { flags, id, value }).collect()
                }
            ),
            any::<u32>().prop_map(|id| Frame::Ping { id }),
            (0..=MAX_STREAM_ID, 0u32..5).prop_map(|(last_good_stream_id, code)| Frame::GoAway {
                last_good_stream_id,
                status: GoAwayStatus::from_code(code)
            }),
            (0..=MAX_STREAM_ID, 0..=MAX_STREAM_ID)
                .prop_map(|(stream_id, delta)| Frame::WindowUpdate { stream_id, delta }),
            (id, any::<bool>(), proptest::collection::vec(any::<u8>(), 0..300))
                .prop_map(|(stream_id, fin, data)| { Frame::Data { stream_id, fin, data: Bytes::from(data) } }),
        ]
    }

    proptest! {
        /// Any sequence of frames, cut into chunks anywhere, decodes to itself: the decoder
        /// neither depends on how reads split the stream nor lets the zlib streams drift.
        #[test]
        fn frames_survive_any_chunking(
            frames in proptest::collection::vec(arb_frame(), 1..20),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..30),
        ) {
            let wire = encode_all(&frames);
            let mut chunk_ends: Vec<usize> = cuts.iter().map(|cut| cut.index(wire.len() + 1)).collect();
            chunk_ends.sort_unstable();
            prop_assert_eq!(decode_all(&wire, &chunk_ends), frames.clone());
            // And byte by byte.
            let every_byte: Vec<usize> = (0..wire.len()).collect();
            prop_assert_eq!(decode_all(&wire, &every_byte), frames);
        }
    }
}
