//! Repairs the HTTP/2 `:authority` of requests that arrive on the CRI's unix socket.
//!
//! Why this exists: when they dial a unix socket, grpc-go (crictl, critest, kubelet) sends the
//! socket path, percent-encoded, as `:authority`; grpc-python sends `unix:…`-derived text and
//! grpc-java the raw path. h2, under tonic, parses `:authority` as a URI authority and resets
//! the stream with PROTOCOL_ERROR before any handler runs; it has no option to relax that. Over
//! a unix socket the authority names nothing, so this layer, sitting between the accepted socket
//! and h2, replaces an authority that is not a valid URI authority with `localhost`. A valid one
//! is kept. TCP listeners never get this layer.
//!
//! How: the client → server bytes are split into HTTP/2 frames. Every frame other than HEADERS
//! and CONTINUATION passes through unchanged, streamed (never buffered whole). A header block
//! (HEADERS and its CONTINUATIONs) is decoded with an HPACK decoder that follows the client's
//! encoder, fixed, and encoded again by an encoder whose dynamic table h2's decoder follows: the
//! two compression contexts are separate, so every block is re-encoded, fixed or not. The new
//! block goes out as HEADERS plus CONTINUATIONs of at most 16 KiB, the frame size every peer
//! must accept whatever it advertises; padding is dropped, priority and END_STREAM are kept.
//! The server → client bytes pass unchanged; only the server's SETTINGS are read, for the
//! header-table size both contexts must respect.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use httlib_hpack::{Decoder, Encoder};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_BYTES: usize = 9;
/// Every HTTP/2 peer accepts frames of this size, whatever it advertises (RFC 9113 §4.2).
pub const MIN_MAX_FRAME_BYTES: usize = 16_384;
/// SETTINGS_HEADER_TABLE_SIZE until a peer says otherwise (RFC 9113 §6.5.2).
const DEFAULT_HEADER_TABLE_BYTES: usize = 4_096;
/// A header block larger than this closes the connection. hyper refuses header lists over
/// 16 KiB anyway, and an encoded block is never much larger than its list; the bound keeps what
/// one client can make the server buffer and decode small.
pub const MAX_HEADER_BLOCK_BYTES: usize = 32 * 1024;
/// What an invalid authority becomes.
pub const REPLACEMENT_AUTHORITY: &[u8] = b"localhost";

const TYPE_HEADERS: u8 = 0x1;
const TYPE_SETTINGS: u8 = 0x4;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_ACK: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
const PRIORITY_BYTES: usize = 5;
const SETTING_HEADER_TABLE_SIZE: u16 = 0x1;
const SETTING_ENTRY_BYTES: usize = 6;

/// Why a client's byte stream could not be re-encoded; the connection is closed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FrameError {
    #[error("expected CONTINUATION on stream {expected}, got frame type {frame_type:#x} on stream {stream_id}")]
    ContinuationExpected { expected: u32, frame_type: u8, stream_id: u32 },
    #[error("CONTINUATION on stream {0} without a header block in progress")]
    UnexpectedContinuation(u32),
    #[error("header block of stream {0} exceeds {MAX_HEADER_BLOCK_BYTES} bytes")]
    HeaderBlockTooLarge(u32),
    #[error("HEADERS on stream {0} with invalid padding or priority fields")]
    MalformedHeaders(u32),
    #[error("HPACK re-encoding failed: {0:?}")]
    Encode(httlib_hpack::EncoderError),
    #[error("HPACK decoding of stream {stream_id}'s header block failed: {source}")]
    Hpack {
        stream_id: u32,
        #[source]
        source: httlib_hpack::DecoderError,
    },
}

#[derive(Clone, Copy, Debug)]
struct FrameHeader {
    payload_bytes: usize,
    kind: u8,
    flags: u8,
    stream_id: u32,
}

impl FrameHeader {
    fn parse(bytes: &[u8]) -> FrameHeader {
        FrameHeader {
            payload_bytes: (usize::from(bytes[0]) << 16) | (usize::from(bytes[1]) << 8) | usize::from(bytes[2]),
            kind: bytes[3],
            flags: bytes[4],
            stream_id: u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff,
        }
    }

    fn write(out: &mut Vec<u8>, payload_bytes: usize, kind: u8, flags: u8, stream_id: u32) {
        debug_assert!(payload_bytes <= MIN_MAX_FRAME_BYTES);
        let len = (payload_bytes as u32).to_be_bytes();
        out.extend_from_slice(&len[1..]);
        out.push(kind);
        out.push(flags);
        out.extend_from_slice(&stream_id.to_be_bytes());
    }
}

enum Stage {
    /// Matching the client preface; `seen` bytes of it so far.
    Preface { seen: usize },
    /// At a frame boundary.
    Frames,
    /// Forwarding the rest of a frame that is not part of a header block.
    Passing { remaining: usize },
    /// Not HTTP/2: everything passes untouched and h2 answers as it does.
    Opaque,
}

struct PendingBlock {
    stream_id: u32,
    end_stream: bool,
    priority: Option<[u8; PRIORITY_BYTES]>,
    fragment: Vec<u8>,
}

/// The client → server half: a sans-I/O rewriter fed with whatever the socket gave.
pub struct AuthorityRewriter {
    stage: Stage,
    /// Received bytes not consumed yet (at most one frame header or one header-block frame).
    input: Vec<u8>,
    block: Option<PendingBlock>,
    decoder: Decoder<'static>,
    encoder: Encoder<'static>,
    encoder_table_bytes: usize,
    /// A dynamic-table size update owed to h2 at the start of the next header block.
    table_size_update: Option<usize>,
    rewritten: u64,
}

impl Default for AuthorityRewriter {
    fn default() -> Self {
        AuthorityRewriter {
            stage: Stage::Preface { seen: 0 },
            input: Vec::new(),
            block: None,
            decoder: Decoder::default(),
            encoder: Encoder::with_dynamic_size(DEFAULT_HEADER_TABLE_BYTES as u32),
            encoder_table_bytes: DEFAULT_HEADER_TABLE_BYTES,
            table_size_update: None,
            rewritten: 0,
        }
    }
}

/// True when h2 takes `value` as an `:authority`.
pub fn is_valid_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

impl AuthorityRewriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many `:authority` values were replaced so far.
    pub fn rewritten(&self) -> u64 {
        self.rewritten
    }

    /// Takes `bytes` from the client and appends what h2 should read to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
        if let Stage::Opaque = self.stage {
            out.extend_from_slice(bytes);
            return Ok(());
        }
        let mut input = std::mem::take(&mut self.input);
        input.extend_from_slice(bytes);
        let result = self.process(&input, out);
        let consumed = result.as_ref().copied().unwrap_or(input.len());
        input.drain(..consumed);
        self.input = input;
        result.map(drop)
    }

    /// Consumes complete units of `input`; returns how many bytes it consumed.
    fn process(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, FrameError> {
        let mut pos = 0;
        loop {
            let avail = &input[pos..];
            match self.stage {
                Stage::Preface { seen } => {
                    let n = avail.len().min(PREFACE.len() - seen);
                    if avail[..n] != PREFACE[seen..seen + n] {
                        self.stage = Stage::Opaque;
                        continue;
                    }
                    out.extend_from_slice(&avail[..n]);
                    pos += n;
                    if seen + n < PREFACE.len() {
                        self.stage = Stage::Preface { seen: seen + n };
                        return Ok(pos);
                    }
                    self.stage = Stage::Frames;
                }
                Stage::Frames => {
                    if avail.len() < FRAME_HEADER_BYTES {
                        return Ok(pos);
                    }
                    let header = FrameHeader::parse(avail);
                    if let Some(block) = &self.block
                        && (header.kind != TYPE_CONTINUATION || header.stream_id != block.stream_id)
                    {
                        return Err(FrameError::ContinuationExpected {
                            expected: block.stream_id,
                            frame_type: header.kind,
                            stream_id: header.stream_id,
                        });
                    }
                    if header.kind == TYPE_HEADERS || header.kind == TYPE_CONTINUATION {
                        // Checked before waiting for the payload: it bounds what we buffer.
                        if header.payload_bytes > MAX_HEADER_BLOCK_BYTES {
                            return Err(FrameError::HeaderBlockTooLarge(header.stream_id));
                        }
                        let end = FRAME_HEADER_BYTES + header.payload_bytes;
                        if avail.len() < end {
                            return Ok(pos);
                        }
                        self.header_frame(header, &avail[FRAME_HEADER_BYTES..end], out)?;
                        pos += end;
                    } else {
                        out.extend_from_slice(&avail[..FRAME_HEADER_BYTES]);
                        pos += FRAME_HEADER_BYTES;
                        self.stage = Stage::Passing { remaining: header.payload_bytes };
                    }
                }
                Stage::Passing { remaining } => {
                    if remaining == 0 {
                        self.stage = Stage::Frames;
                        continue;
                    }
                    if avail.is_empty() {
                        return Ok(pos);
                    }
                    let n = avail.len().min(remaining);
                    out.extend_from_slice(&avail[..n]);
                    pos += n;
                    self.stage = Stage::Passing { remaining: remaining - n };
                }
                Stage::Opaque => {
                    out.extend_from_slice(avail);
                    return Ok(input.len());
                }
            }
        }
    }

    fn header_frame(&mut self, header: FrameHeader, payload: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
        let stream_id = header.stream_id;
        if header.kind == TYPE_HEADERS {
            let malformed = || FrameError::MalformedHeaders(stream_id);
            let mut rest = payload;
            let mut padding = 0;
            if header.flags & FLAG_PADDED != 0 {
                let (&pad, tail) = rest.split_first().ok_or_else(malformed)?;
                padding = usize::from(pad);
                rest = tail;
            }
            let mut priority = None;
            if header.flags & FLAG_PRIORITY != 0 {
                if rest.len() < PRIORITY_BYTES {
                    return Err(malformed());
                }
                let (fields, tail) = rest.split_at(PRIORITY_BYTES);
                priority = Some(fields.try_into().expect("five bytes"));
                rest = tail;
            }
            let fragment_bytes = rest.len().checked_sub(padding).ok_or_else(malformed)?;
            self.block = Some(PendingBlock {
                stream_id,
                end_stream: header.flags & FLAG_END_STREAM != 0,
                priority,
                fragment: rest[..fragment_bytes].to_vec(),
            });
        } else {
            let block = self.block.as_mut().ok_or(FrameError::UnexpectedContinuation(stream_id))?;
            if block.fragment.len() + payload.len() > MAX_HEADER_BLOCK_BYTES {
                return Err(FrameError::HeaderBlockTooLarge(stream_id));
            }
            block.fragment.extend_from_slice(payload);
        }
        if header.flags & FLAG_END_HEADERS != 0 {
            let block = self.block.take().expect("a block is in progress");
            self.emit_block(block, out)?;
        }
        Ok(())
    }

    fn emit_block(&mut self, block: PendingBlock, out: &mut Vec<u8>) -> Result<(), FrameError> {
        let stream_id = block.stream_id;
        let mut headers = Vec::new();
        let mut fragment = block.fragment;
        let fragment_bytes = fragment.len();
        self.decoder.decode(&mut fragment, &mut headers).map_err(|source| FrameError::Hpack { stream_id, source })?;
        for (name, value, _) in &mut headers {
            if name.as_slice() == b":authority" && !is_valid_authority(value) {
                tracing::debug!(stream_id, authority = %String::from_utf8_lossy(value), "replacing an invalid :authority");
                *value = REPLACEMENT_AUTHORITY.to_vec();
                self.rewritten += 1;
            }
        }
        let mut encoded = Vec::with_capacity(fragment_bytes + 8);
        // A block may not consist of a size update alone; an empty block keeps it owed.
        if !headers.is_empty()
            && let Some(size) = self.table_size_update.take()
        {
            self.encoder.update_max_dynamic_size(size as u32, &mut encoded).map_err(encode_failed)?;
        }
        for (name, value, flags) in headers {
            // The client's choice of indexing (and never-indexed, for sensitive values) is kept;
            // what to reference is found in our own table, never taken from the client's indices.
            let keep = flags & (Decoder::WITH_INDEXING | Decoder::NEVER_INDEXED);
            self.encoder.encode((name, value, keep | Encoder::BEST_FORMAT), &mut encoded).map_err(encode_failed)?;
        }

        let priority_bytes = if block.priority.is_some() { PRIORITY_BYTES } else { 0 };
        let (first, mut rest) = encoded.split_at(encoded.len().min(MIN_MAX_FRAME_BYTES - priority_bytes));
        let mut flags = 0;
        if block.end_stream {
            flags |= FLAG_END_STREAM;
        }
        if block.priority.is_some() {
            flags |= FLAG_PRIORITY;
        }
        if rest.is_empty() {
            flags |= FLAG_END_HEADERS;
        }
        FrameHeader::write(out, priority_bytes + first.len(), TYPE_HEADERS, flags, stream_id);
        if let Some(fields) = block.priority {
            out.extend_from_slice(&fields);
        }
        out.extend_from_slice(first);
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(rest.len().min(MIN_MAX_FRAME_BYTES));
            let flags = if tail.is_empty() { FLAG_END_HEADERS } else { 0 };
            FrameHeader::write(out, chunk.len(), TYPE_CONTINUATION, flags, stream_id);
            out.extend_from_slice(chunk);
            rest = tail;
        }
        Ok(())
    }

    /// The server advertised SETTINGS_HEADER_TABLE_SIZE = `bytes`: the client's encoder may now
    /// use up to that, and ours must not use more.
    pub fn server_header_table_size(&mut self, bytes: u32) {
        self.decoder.set_max_dynamic_size(bytes.max(DEFAULT_HEADER_TABLE_BYTES as u32));
        // Staying at the default when more is allowed is fine; shrinking must be announced (the
        // update, at the start of the next block, also resizes the encoder's table).
        let wanted = (bytes as usize).min(DEFAULT_HEADER_TABLE_BYTES);
        if wanted != self.encoder_table_bytes {
            self.encoder_table_bytes = wanted;
            self.table_size_update = Some(wanted);
        }
    }
}

/// The encoder only fails on values it cannot represent, which a decoded block never holds.
fn encode_failed(error: httlib_hpack::EncoderError) -> FrameError {
    FrameError::Encode(error)
}

/// The server → client half: reads SETTINGS frames out of bytes that pass unchanged.
#[derive(Default)]
pub struct ServerSettingsReader {
    header: Vec<u8>,
    /// Payload bytes of the current frame still to come.
    remaining: usize,
    /// The current frame's payload, when it is a SETTINGS frame worth reading.
    settings: Option<Vec<u8>>,
}

impl ServerSettingsReader {
    /// Looks at bytes the server sent; returns the last SETTINGS_HEADER_TABLE_SIZE they set.
    pub fn observe(&mut self, mut bytes: &[u8]) -> Option<u32> {
        let mut found = None;
        while !bytes.is_empty() {
            if self.remaining == 0 && self.settings.is_none() {
                let n = (FRAME_HEADER_BYTES - self.header.len()).min(bytes.len());
                self.header.extend_from_slice(&bytes[..n]);
                bytes = &bytes[n..];
                if self.header.len() < FRAME_HEADER_BYTES {
                    break;
                }
                let header = FrameHeader::parse(&self.header);
                self.header.clear();
                self.remaining = header.payload_bytes;
                if header.kind == TYPE_SETTINGS && header.flags & FLAG_ACK == 0 {
                    self.settings = Some(Vec::with_capacity(header.payload_bytes.min(MIN_MAX_FRAME_BYTES)));
                }
            }
            let n = self.remaining.min(bytes.len());
            if let Some(settings) = &mut self.settings {
                settings.extend_from_slice(&bytes[..n]);
            }
            bytes = &bytes[n..];
            self.remaining -= n;
            if self.remaining == 0
                && let Some(settings) = self.settings.take()
            {
                for entry in settings.chunks_exact(SETTING_ENTRY_BYTES) {
                    if u16::from_be_bytes([entry[0], entry[1]]) == SETTING_HEADER_TABLE_SIZE {
                        found = Some(u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]));
                    }
                }
            }
        }
        found
    }
}

/// A server-side connection whose client → server header blocks go through an
/// [`AuthorityRewriter`]. Writes pass straight to the socket.
pub struct AuthorityFixingStream<S> {
    inner: S,
    rewriter: AuthorityRewriter,
    settings: ServerSettingsReader,
    scratch: Box<[u8]>,
    /// Rewritten bytes h2 has not read yet, from `ready_pos`.
    ready: Vec<u8>,
    ready_pos: usize,
    eof: bool,
}

/// Bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 32 * 1024;

impl<S> AuthorityFixingStream<S> {
    pub fn new(inner: S) -> Self {
        AuthorityFixingStream {
            inner,
            rewriter: AuthorityRewriter::new(),
            settings: ServerSettingsReader::default(),
            scratch: vec![0; READ_CHUNK_BYTES].into_boxed_slice(),
            ready: Vec::new(),
            ready_pos: 0,
            eof: false,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFixingStream<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.ready_pos < this.ready.len() {
                let n = buf.remaining().min(this.ready.len() - this.ready_pos);
                buf.put_slice(&this.ready[this.ready_pos..this.ready_pos + n]);
                this.ready_pos += n;
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut read = ReadBuf::new(&mut this.scratch);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            let n = read.filled().len();
            if n == 0 {
                this.eof = true;
                continue;
            }
            this.ready.clear();
            this.ready_pos = 0;
            if let Err(error) = this.rewriter.feed(&this.scratch[..n], &mut this.ready) {
                tracing::warn!(%error, "closing a CRI connection whose HTTP/2 headers cannot be re-encoded");
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, error)));
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFixingStream<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        if let Some(size) = this.settings.observe(&buf[..n]) {
            this.rewriter.server_header_table_size(size);
        }
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        let mut left = written;
        for buf in bufs {
            if left == 0 {
                break;
            }
            let n = left.min(buf.len());
            if let Some(size) = this.settings.observe(&buf[..n]) {
                this.rewriter.server_header_table_size(size);
            }
            left -= n;
        }
        Poll::Ready(Ok(written))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(unix)]
impl tonic::transport::server::Connected for AuthorityFixingStream<tokio::net::UnixStream> {
    type ConnectInfo = tonic::transport::server::UdsConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests;
