//! The rewriter against an HPACK decoder that plays h2: what h2 decodes must be what the client
//! sent, with only invalid authorities replaced, whatever the framing and the chunking.

use loona_hpack::{Decoder, Encoder};
use proptest::prelude::*;

use super::*;

type HeaderList = Vec<(Vec<u8>, Vec<u8>)>;
/// A header block being reassembled: stream, END_STREAM, priority fields, fragment.
type OpenBlock = (u32, bool, Option<[u8; 5]>, Vec<u8>);

/// A frame as a peer sees it once header blocks are reassembled and decoded.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    Headers { stream_id: u32, end_stream: bool, priority: Option<[u8; 5]>, headers: HeaderList },
    Other { kind: u8, flags: u8, stream_id: u32, payload: Vec<u8> },
}

/// Decodes a client byte stream (preface, then frames) as h2 would, with one HPACK context.
fn decode_stream(bytes: &[u8]) -> Vec<Event> {
    assert!(bytes.starts_with(PREFACE), "the preface comes first");
    let mut rest = &bytes[PREFACE.len()..];
    let mut decoder = Decoder::new();
    let mut events = Vec::new();
    let mut block: Option<OpenBlock> = None;
    while !rest.is_empty() {
        let header = FrameHeader::parse(rest);
        let payload = &rest[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + header.payload_bytes];
        rest = &rest[FRAME_HEADER_BYTES + header.payload_bytes..];
        match header.kind {
            TYPE_HEADERS => {
                assert!(block.is_none());
                let mut p = payload;
                let mut pad = 0;
                if header.flags & FLAG_PADDED != 0 {
                    pad = usize::from(p[0]);
                    p = &p[1..];
                }
                let priority = (header.flags & FLAG_PRIORITY != 0).then(|| {
                    let fields: [u8; 5] = p[..5].try_into().unwrap();
                    p = &p[5..];
                    fields
                });
                block = Some((
                    header.stream_id,
                    header.flags & FLAG_END_STREAM != 0,
                    priority,
                    p[..p.len() - pad].to_vec(),
                ));
            }
            TYPE_CONTINUATION => block.as_mut().expect("continuation inside a block").3.extend_from_slice(payload),
            kind => {
                assert!(block.is_none(), "no frame interleaves a header block");
                events.push(Event::Other {
                    kind,
                    flags: header.flags,
                    stream_id: header.stream_id,
                    payload: payload.to_vec(),
                });
                continue;
            }
        }
        if header.flags & FLAG_END_HEADERS != 0 {
            let (stream_id, end_stream, priority, fragment) = block.take().unwrap();
            let headers = decoder.decode(&fragment).expect("h2 can decode every block");
            events.push(Event::Headers { stream_id, end_stream, priority, headers });
        }
    }
    assert!(block.is_none(), "every block ends");
    events
}

/// The frames every output frame must respect.
fn assert_frame_sizes(bytes: &[u8]) {
    let mut rest = &bytes[PREFACE.len()..];
    while !rest.is_empty() {
        let header = FrameHeader::parse(rest);
        if header.kind == TYPE_HEADERS || header.kind == TYPE_CONTINUATION {
            assert!(header.payload_bytes <= MIN_MAX_FRAME_BYTES, "a re-encoded frame fits every peer");
        }
        rest = &rest[FRAME_HEADER_BYTES + header.payload_bytes..];
    }
}

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream_id: u32, payload: &[u8]) {
    let len = (payload.len() as u32).to_be_bytes();
    out.extend_from_slice(&len[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream_id.to_be_bytes());
    out.extend_from_slice(payload);
}

fn grpc_request(authority: &str) -> HeaderList {
    [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/runtime.v1.RuntimeService/Version"),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("user-agent", "grpc-go/1.58.3"),
        ("te", "trailers"),
    ]
    .iter()
    .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
    .collect()
}

fn encode(encoder: &mut Encoder<'static>, headers: &HeaderList) -> Vec<u8> {
    encoder.encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())))
}

/// A connection as grpc-go opens it: preface, SETTINGS, WINDOW_UPDATE, then two requests.
fn grpc_go_connection(authority: &str) -> Vec<u8> {
    let mut encoder = Encoder::new();
    let mut bytes = PREFACE.to_vec();
    frame(&mut bytes, TYPE_SETTINGS, 0, 0, &[]);
    frame(&mut bytes, 0x8, 0, 0, &65_535u32.to_be_bytes());
    for stream_id in [1, 3] {
        let block = encode(&mut encoder, &grpc_request(authority));
        frame(&mut bytes, TYPE_HEADERS, FLAG_END_HEADERS, stream_id, &block);
        frame(&mut bytes, 0x0, FLAG_END_STREAM, stream_id, &[0, 0, 0, 0, 4, 0x0a, 2, b'v', b'1']);
    }
    bytes
}

fn rewrite_all(bytes: &[u8], chunk: usize) -> (Vec<u8>, u64) {
    let mut rewriter = AuthorityRewriter::new();
    let mut out = Vec::new();
    for piece in bytes.chunks(chunk) {
        rewriter.feed(piece, &mut out).unwrap();
    }
    (out, rewriter.rewritten())
}

fn with_authority(events: Vec<Event>, authority: &[u8]) -> Vec<Event> {
    events
        .into_iter()
        .map(|event| match event {
            Event::Headers { stream_id, end_stream, priority, mut headers } => {
                for (name, value) in &mut headers {
                    if name == b":authority" {
                        *value = authority.to_vec();
                    }
                }
                Event::Headers { stream_id, end_stream, priority, headers }
            }
            other => other,
        })
        .collect()
}

#[test]
fn grpc_go_socket_path_becomes_localhost() {
    let sent = grpc_go_connection("%2Frun%2Fcrid%2Fcrid.sock");
    assert!(!is_valid_authority(b"%2Frun%2Fcrid%2Fcrid.sock"));
    for chunk in [1, 7, 4096] {
        let (out, rewritten) = rewrite_all(&sent, chunk);
        assert_eq!(rewritten, 2, "both requests fixed (chunks of {chunk})");
        assert_eq!(decode_stream(&out), with_authority(decode_stream(&sent), REPLACEMENT_AUTHORITY));
    }
}

#[test]
fn raw_and_python_style_authorities_are_replaced() {
    for authority in ["/run/crid/crid.sock", "unix:%2Frun%2Fcrid.sock", "unix:///run/crid.sock", ""] {
        let (out, rewritten) = rewrite_all(&grpc_go_connection(authority), 3);
        assert_eq!(rewritten, 2, "{authority:?}");
        assert!(decode_stream(&out).iter().all(|e| match e {
            Event::Headers { headers, .. } => headers.iter().any(|(n, v)| n == b":authority" && v == b"localhost"),
            Event::Other { .. } => true,
        }));
    }
}

#[test]
fn a_valid_authority_is_kept() {
    let sent = grpc_go_connection("localhost:50051");
    let (out, rewritten) = rewrite_all(&sent, 5);
    assert_eq!(rewritten, 0);
    assert_eq!(decode_stream(&out), decode_stream(&sent));
}

#[test]
fn a_large_block_is_split_into_continuations() {
    let mut headers = grpc_request("/tmp/crid.sock");
    headers.push((b"x-big".to_vec(), vec![b'a'; 20_000]));
    let mut sent = PREFACE.to_vec();
    let block = encode(&mut Encoder::new(), &headers);
    // Sent as one oversized HEADERS with padding and priority: all must be handled.
    let mut payload = vec![3];
    payload.extend_from_slice(&[0, 0, 0, 1, 16]);
    payload.extend_from_slice(&block);
    payload.extend_from_slice(&[0, 0, 0]);
    frame(&mut sent, TYPE_HEADERS, FLAG_END_HEADERS | FLAG_PADDED | FLAG_PRIORITY | FLAG_END_STREAM, 1, &payload);
    let (out, rewritten) = rewrite_all(&sent, 1000);
    assert_eq!(rewritten, 1);
    assert_frame_sizes(&out);
    let events = decode_stream(&out);
    assert_eq!(events, with_authority(decode_stream(&sent), REPLACEMENT_AUTHORITY));
    assert!(matches!(&events[0], Event::Headers { priority: Some([0, 0, 0, 1, 16]), end_stream: true, .. }));
}

#[test]
fn a_smaller_server_table_is_announced_to_h2() {
    let mut reader = ServerSettingsReader::default();
    let mut server = Vec::new();
    frame(&mut server, TYPE_SETTINGS, 0, 0, &[0, 4, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0]);
    frame(&mut server, TYPE_SETTINGS, FLAG_ACK, 0, &[]);
    // Byte by byte: the reader keeps state across writes.
    let mut seen = None;
    for byte in &server {
        seen = reader.observe(std::slice::from_ref(byte)).or(seen);
    }
    assert_eq!(seen, Some(0));

    let mut rewriter = AuthorityRewriter::new();
    rewriter.server_header_table_size(0);
    let mut out = Vec::new();
    rewriter.feed(&grpc_go_connection("/x.sock"), &mut out).unwrap();
    let first_block = &out[PREFACE.len()..];
    let mut rest = first_block;
    loop {
        let header = FrameHeader::parse(rest);
        if header.kind == TYPE_HEADERS {
            assert_eq!(rest[FRAME_HEADER_BYTES], 0x20, "the block opens with a size update to 0");
            break;
        }
        rest = &rest[FRAME_HEADER_BYTES + header.payload_bytes..];
    }
    assert_eq!(decode_stream(&out).len(), 6);
}

#[test]
fn interleaving_a_header_block_is_refused() {
    let mut sent = PREFACE.to_vec();
    let block = encode(&mut Encoder::new(), &grpc_request("/x.sock"));
    frame(&mut sent, TYPE_HEADERS, 0, 1, &block[..4]);
    frame(&mut sent, 0x0, 0, 1, b"data");
    let error = AuthorityRewriter::new().feed(&sent, &mut Vec::new()).unwrap_err();
    assert_eq!(error, FrameError::ContinuationExpected { expected: 1, frame_type: 0, stream_id: 1 });

    let mut sent = PREFACE.to_vec();
    frame(&mut sent, TYPE_CONTINUATION, FLAG_END_HEADERS, 1, &block);
    assert_eq!(
        AuthorityRewriter::new().feed(&sent, &mut Vec::new()).unwrap_err(),
        FrameError::UnexpectedContinuation(1)
    );
}

#[test]
fn a_huge_header_frame_is_refused_before_it_is_buffered() {
    let mut sent = PREFACE.to_vec();
    sent.extend_from_slice(&[0xff, 0xff, 0xff, TYPE_HEADERS, 0, 0, 0, 0, 1]);
    let error = AuthorityRewriter::new().feed(&sent, &mut Vec::new()).unwrap_err();
    assert_eq!(error, FrameError::HeaderBlockTooLarge(1));
}

#[test]
fn not_http2_passes_untouched() {
    let request = b"GET / HTTP/1.1\r\nHost: /run/crid.sock\r\n\r\n";
    let (out, rewritten) = rewrite_all(request, 4);
    assert_eq!((out.as_slice(), rewritten), (&request[..], 0));
}

#[derive(Clone, Debug)]
enum FrameSpec {
    Other {
        kind: u8,
        flags: u8,
        stream_id: u32,
        payload: Vec<u8>,
    },
    Headers {
        stream_id: u32,
        headers: HeaderList,
        padding: Option<u8>,
        priority: bool,
        end_stream: bool,
        splits: Vec<usize>,
    },
}

fn authority_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"localhost".to_vec()),
        Just(b"%2Frun%2Fcrid%2Fcrid.sock".to_vec()),
        Just(b"/run/crid/crid.sock".to_vec()),
        Just(b"127.0.0.1:1234".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..40),
    ]
}

fn header_list() -> impl Strategy<Value = HeaderList> {
    let name = prop_oneof![
        Just(b":authority".to_vec()),
        Just(b":path".to_vec()),
        Just(b"content-type".to_vec()),
        Just(b"x-custom".to_vec()),
        proptest::collection::vec(b'a'..=b'z', 1..12),
    ];
    let pair = (name, authority_value());
    proptest::collection::vec(pair, 1..12)
}

fn frame_spec() -> impl Strategy<Value = FrameSpec> {
    prop_oneof![
        (
            prop_oneof![Just(0u8), Just(2), Just(3), Just(4), Just(6), Just(8), Just(0x42)],
            any::<u8>(),
            0u32..8,
            proptest::collection::vec(any::<u8>(), 0..300)
        )
            .prop_map(|(kind, flags, stream_id, payload)| FrameSpec::Other { kind, flags, stream_id, payload }),
        (
            1u32..8,
            header_list(),
            proptest::option::of(any::<u8>()),
            any::<bool>(),
            any::<bool>(),
            proptest::collection::vec(0usize..200, 0..4)
        )
            .prop_map(|(stream_id, headers, padding, priority, end_stream, splits)| FrameSpec::Headers {
                stream_id,
                headers,
                padding,
                priority,
                end_stream,
                splits
            }),
    ]
}

/// The client's HPACK encoder: loona's (plain literals), or httlib's with Huffman strings and
/// never-indexed fields, as grpc-go and h2 clients send them.
enum ClientEncoder {
    Plain(Encoder<'static>),
    Huffman(httlib_hpack::Encoder<'static>, u8),
}

impl ClientEncoder {
    fn encode(&mut self, headers: &HeaderList) -> Vec<u8> {
        match self {
            ClientEncoder::Plain(encoder) => encode(encoder, headers),
            ClientEncoder::Huffman(encoder, flags) => {
                let mut out = Vec::new();
                for (i, (name, value)) in headers.iter().enumerate() {
                    // Every third field never indexed, the others indexed incrementally.
                    let indexing = if i % 3 == 2 { 0x8 } else { 0x4 };
                    encoder.encode((name.clone(), value.clone(), *flags | indexing | 0x10), &mut out).unwrap();
                }
                out
            }
        }
    }
}

fn build(specs: &[FrameSpec], table_size: usize, huffman: Option<u8>) -> Vec<u8> {
    let mut encoder = match huffman {
        None => {
            let mut encoder = Encoder::new();
            encoder.set_max_table_size(table_size);
            ClientEncoder::Plain(encoder)
        }
        Some(flags) => ClientEncoder::Huffman(httlib_hpack::Encoder::with_dynamic_size(table_size as u32), flags),
    };
    let mut bytes = PREFACE.to_vec();
    for spec in specs {
        match spec {
            FrameSpec::Other { kind, flags, stream_id, payload } => {
                frame(&mut bytes, *kind, *flags, *stream_id, payload)
            }
            FrameSpec::Headers { stream_id, headers, padding, priority, end_stream, splits } => {
                let mut block = Vec::new();
                if table_size != DEFAULT_HEADER_TABLE_BYTES && bytes.len() == PREFACE.len() {
                    loona_hpack::encoder::encode_integer_into(table_size, 5, 0x20, &mut block).unwrap();
                }
                block.extend(encoder.encode(headers));
                let mut cuts: Vec<usize> = splits.iter().map(|s| s % (block.len() + 1)).collect();
                cuts.sort();
                cuts.dedup();
                let mut pieces = Vec::new();
                let mut last = 0;
                for cut in cuts {
                    pieces.push(&block[last..cut]);
                    last = cut;
                }
                pieces.push(&block[last..]);
                for (i, piece) in pieces.iter().enumerate() {
                    let end_headers = if i + 1 == pieces.len() { FLAG_END_HEADERS } else { 0 };
                    if i == 0 {
                        let mut payload = Vec::new();
                        let mut flags = end_headers;
                        if let Some(pad) = padding {
                            flags |= FLAG_PADDED;
                            payload.push(*pad);
                        }
                        if *priority {
                            flags |= FLAG_PRIORITY;
                            payload.extend_from_slice(&[0x80, 0, 0, 3, 200]);
                        }
                        if *end_stream {
                            flags |= FLAG_END_STREAM;
                        }
                        payload.extend_from_slice(piece);
                        payload.resize(payload.len() + usize::from(padding.unwrap_or(0)), 0);
                        frame(&mut bytes, TYPE_HEADERS, flags, *stream_id, &payload);
                    } else {
                        frame(&mut bytes, TYPE_CONTINUATION, end_headers, *stream_id, piece);
                    }
                }
            }
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Whatever the frames and however the socket splits them, h2 decodes what the client sent,
    /// with exactly the invalid authorities replaced, and every other frame byte for byte.
    #[test]
    fn h2_sees_what_the_client_sent(
        specs in proptest::collection::vec(frame_spec(), 0..16),
        chunks in proptest::collection::vec(1usize..64, 1..8),
        table_size in prop_oneof![Just(4096usize), Just(0), Just(256)],
        huffman in proptest::option::of(0u8..4),
    ) {
        let sent = build(&specs, table_size, huffman);
        let mut rewriter = AuthorityRewriter::new();
        let mut out = Vec::new();
        let mut rest = sent.as_slice();
        let mut i = 0;
        while !rest.is_empty() {
            let n = chunks[i % chunks.len()].min(rest.len());
            rewriter.feed(&rest[..n], &mut out).unwrap();
            rest = &rest[n..];
            i += 1;
        }
        assert_frame_sizes(&out);
        let mut expected = decode_stream(&sent);
        let mut invalid = 0;
        for event in &mut expected {
            if let Event::Headers { headers, .. } = event {
                for (name, value) in headers {
                    if name == b":authority" && !is_valid_authority(value) {
                        *value = REPLACEMENT_AUTHORITY.to_vec();
                        invalid += 1;
                    }
                }
            }
        }
        prop_assert_eq!(decode_stream(&out), expected);
        prop_assert_eq!(rewriter.rewritten(), invalid);
    }

    /// Garbage after the preface is an error or passes; it never panics.
    #[test]
    fn garbage_never_panics(garbage in proptest::collection::vec(any::<u8>(), 0..2000), chunk in 1usize..100) {
        let mut rewriter = AuthorityRewriter::new();
        let mut out = Vec::new();
        let mut input = PREFACE.to_vec();
        input.extend(garbage);
        for piece in input.chunks(chunk) {
            if rewriter.feed(piece, &mut out).is_err() {
                break;
            }
        }
    }

    /// The server-side reader finds the last header-table size however writes are split.
    #[test]
    fn settings_are_found_across_writes(size in any::<u32>(), split in 0usize..40, noise in proptest::collection::vec(any::<u8>(), 0..50)) {
        let mut server = Vec::new();
        frame(&mut server, 0x0, 0, 1, &noise);
        let mut payload = vec![0, 3, 0, 0, 0, 100];
        payload.extend_from_slice(&[0, 1]);
        payload.extend_from_slice(&size.to_be_bytes());
        frame(&mut server, TYPE_SETTINGS, 0, 0, &payload);
        frame(&mut server, 0x6, 0, 0, &[0; 8]);
        let split = split.min(server.len());
        let mut reader = ServerSettingsReader::default();
        let first = reader.observe(&server[..split]);
        let second = reader.observe(&server[split..]);
        prop_assert_eq!(second.or(first), Some(size));
    }
}
