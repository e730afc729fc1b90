//! Header blocks: the ordered name/value list of SYN_STREAM, SYN_REPLY and HEADERS frames, its
//! wire layout, and the session-long zlib streams (one per direction, primed with the SPDY/3
//! dictionary, sync-flushed after every block) that carry it.
//!
//! Wire layout of an uncompressed block (all integers big-endian u32):
//! `count, then count × (name length, name, value length, value)`, where a name occurs once
//! and several values of one name are joined with NUL bytes.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::dictionary::{DICTIONARY, DICTIONARY_ADLER32};

/// Ordered (name, value) pairs. Names are lower-case (SPDY requires it); a name may repeat,
/// and the repeats travel as one NUL-joined value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers {
    pairs: Vec<(String, String)>,
}

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    /// The first value of `name` (compared case-insensitively, as HTTP does).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Appends a pair; the name is lower-cased. A repeated name adds a value, it does not
    /// replace the earlier one.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let mut name = name.into();
        name.make_ascii_lowercase();
        self.pairs.push((name, value.into()));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

impl<N: Into<String>, V: Into<String>> FromIterator<(N, V)> for Headers {
    fn from_iter<T: IntoIterator<Item = (N, V)>>(iter: T) -> Self {
        let mut headers = Headers::new();
        for (name, value) in iter {
            headers.insert(name, value);
        }
        headers
    }
}

/// Why a header block was refused. Any of these leaves the receiving zlib stream in an unknown
/// state or means the peer's encoder is broken, so the session treats them all as fatal.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderBlockError {
    #[error("header block is not a valid zlib stream with the SPDY/3 dictionary: {0}")]
    Zlib(String),
    #[error("header block decompresses to more than {limit_bytes} bytes")]
    TooLarge { limit_bytes: usize },
    #[error("header block is truncated")]
    Truncated,
    #[error("header block has {0} trailing bytes")]
    TrailingBytes(usize),
    #[error("header name is empty")]
    EmptyName,
    #[error("header name {0:?} is not lower-case")]
    UpperCaseName(String),
    #[error("header name {0:?} occurs twice")]
    DuplicateName(String),
    #[error("header {0:?} is not UTF-8")]
    NotUtf8(String),
}

/// Serialises `headers` into the uncompressed block layout, merging repeated names.
pub(crate) fn encode_block(headers: &Headers, out: &mut Vec<u8>) {
    let mut names: Vec<&str> = Vec::new();
    for (name, _) in headers.iter() {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    put_u32(out, len_u32(names.len()));
    for name in names {
        let joined = headers.iter().filter(|(n, _)| *n == name).map(|(_, v)| v).collect::<Vec<_>>().join("\0");
        put_u32(out, len_u32(name.len()));
        out.extend_from_slice(name.as_bytes());
        put_u32(out, len_u32(joined.len()));
        out.extend_from_slice(joined.as_bytes());
    }
}

/// Parses an uncompressed block; NUL-joined values come back as separate pairs.
pub(crate) fn decode_block(mut block: &[u8]) -> Result<Headers, HeaderBlockError> {
    let count = take_u32(&mut block)?;
    let mut headers = Headers::new();
    let mut seen: Vec<String> = Vec::new();
    for _ in 0..count {
        let name = take_string(&mut block)?;
        if name.is_empty() {
            return Err(HeaderBlockError::EmptyName);
        }
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(HeaderBlockError::UpperCaseName(name));
        }
        if seen.contains(&name) {
            return Err(HeaderBlockError::DuplicateName(name));
        }
        let value = take_string(&mut block)?;
        for part in value.split('\0') {
            headers.pairs.push((name.clone(), part.to_owned()));
        }
        seen.push(name);
    }
    if !block.is_empty() {
        return Err(HeaderBlockError::TrailingBytes(block.len()));
    }
    Ok(headers)
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_be_bytes());
}

/// Header names and values are bounded far below 4 GiB by the frame length (24 bits).
fn len_u32(len: usize) -> u32 {
    u32::try_from(len).expect("header block lengths fit a SPDY frame, so they fit u32")
}

fn take_u32(block: &mut &[u8]) -> Result<u32, HeaderBlockError> {
    let (head, rest) = block.split_first_chunk::<4>().ok_or(HeaderBlockError::Truncated)?;
    *block = rest;
    Ok(u32::from_be_bytes(*head))
}

fn take_string(block: &mut &[u8]) -> Result<String, HeaderBlockError> {
    let len = take_u32(block)? as usize;
    if len > block.len() {
        return Err(HeaderBlockError::Truncated);
    }
    let (bytes, rest) = block.split_at(len);
    *block = rest;
    String::from_utf8(bytes.to_vec())
        .map_err(|e| HeaderBlockError::NotUtf8(String::from_utf8_lossy(e.as_bytes()).into()))
}

/// The sending direction's zlib stream: one per session, each block sync-flushed so that the
/// peer can decode it on its own while the dictionary and history carry over.
pub(crate) struct HeaderCompressor {
    zlib: Compress,
    plain: Vec<u8>,
}

impl HeaderCompressor {
    pub(crate) fn new() -> Self {
        let mut zlib = Compress::new(Compression::default(), true);
        let adler = zlib.set_dictionary(DICTIONARY).expect("a fresh zlib stream accepts a preset dictionary");
        assert_eq!(adler, DICTIONARY_ADLER32, "the SPDY/3 dictionary constant is corrupt");
        Self { zlib, plain: Vec::new() }
    }

    /// Appends the compressed form of `headers` to `out`.
    pub(crate) fn compress(&mut self, headers: &Headers, out: &mut Vec<u8>) {
        self.plain.clear();
        encode_block(headers, &mut self.plain);
        let mut input: &[u8] = &self.plain;
        loop {
            // A sync flush of n bytes needs at most n + n/1000 + a few dozen bytes.
            out.reserve(input.len() + 64);
            let before_in = self.zlib.total_in();
            let spare_before = out.capacity() - out.len();
            let before_out = out.len();
            self.zlib
                .compress_vec(input, out, FlushCompress::Sync)
                .expect("compressing into a growing buffer cannot fail");
            let consumed = usize::try_from(self.zlib.total_in() - before_in).expect("consumed fits usize");
            input = &input[consumed..];
            let produced = out.len() - before_out;
            // Done once the input is in and the flush did not fill the buffer it had.
            if input.is_empty() && produced < spare_before {
                return;
            }
        }
    }
}

/// The receiving direction's zlib stream.
pub(crate) struct HeaderDecompressor {
    zlib: Decompress,
    max_block_bytes: usize,
}

impl HeaderDecompressor {
    pub(crate) fn new(max_block_bytes: usize) -> Self {
        Self { zlib: Decompress::new(true), max_block_bytes }
    }

    /// Inflates one compressed block (all of it: a block ends on a sync flush) and parses it.
    pub(crate) fn decompress(&mut self, mut compressed: &[u8]) -> Result<Headers, HeaderBlockError> {
        let mut plain: Vec<u8> = Vec::with_capacity(256);
        loop {
            if plain.len() > self.max_block_bytes {
                return Err(HeaderBlockError::TooLarge { limit_bytes: self.max_block_bytes });
            }
            plain.reserve(plain.len().max(256));
            let spare_before = plain.capacity() - plain.len();
            let before_in = self.zlib.total_in();
            let before_out = plain.len();
            let result = self.zlib.decompress_vec(compressed, &mut plain, FlushDecompress::Sync);
            let consumed = usize::try_from(self.zlib.total_in() - before_in).expect("consumed fits usize");
            compressed = &compressed[consumed..];
            let produced = plain.len() - before_out;
            match result {
                Ok(Status::StreamEnd) => return Err(HeaderBlockError::Zlib("the zlib stream ended".into())),
                Ok(_) => {}
                Err(e) => match e.needs_dictionary() {
                    Some(DICTIONARY_ADLER32) => {
                        self.zlib.set_dictionary(DICTIONARY).map_err(|e| HeaderBlockError::Zlib(e.to_string()))?;
                        continue;
                    }
                    Some(other) => {
                        return Err(HeaderBlockError::Zlib(format!("unknown dictionary id {other:#010x}")));
                    }
                    None => return Err(HeaderBlockError::Zlib(e.to_string())),
                },
            }
            if compressed.is_empty() && produced < spare_before {
                break;
            }
            if consumed == 0 && produced == 0 {
                return Err(HeaderBlockError::Zlib("no progress inflating the header block".into()));
            }
        }
        if plain.len() > self.max_block_bytes {
            return Err(HeaderBlockError::TooLarge { limit_bytes: self.max_block_bytes });
        }
        decode_block(&plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Headers {
        [("streamtype", "data"), ("port", "8080"), ("requestid", "0"), ("x-multi", "a"), ("x-multi", "b")]
            .into_iter()
            .collect()
    }

    #[test]
    fn plain_block_known_bytes() {
        let headers: Headers = [("a", "bc")].into_iter().collect();
        let mut out = Vec::new();
        encode_block(&headers, &mut out);
        assert_eq!(out, [0, 0, 0, 1, 0, 0, 0, 1, b'a', 0, 0, 0, 2, b'b', b'c']);
        assert_eq!(decode_block(&out).unwrap(), headers);
    }

    #[test]
    fn repeated_names_travel_nul_joined() {
        let mut out = Vec::new();
        encode_block(&sample(), &mut out);
        let decoded = decode_block(&out).unwrap();
        assert_eq!(decoded.get_all("x-multi").collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(decoded, sample());
        assert_eq!(decoded.get("PORT"), Some("8080"));
    }

    #[test]
    fn malformed_blocks_are_refused() {
        assert_eq!(decode_block(&[0, 0, 0, 1]), Err(HeaderBlockError::Truncated));
        assert_eq!(decode_block(&[0, 0, 0, 1, 0, 0, 0, 9, b'a']), Err(HeaderBlockError::Truncated));
        assert_eq!(decode_block(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]), Err(HeaderBlockError::EmptyName));
        assert_eq!(
            decode_block(&[0, 0, 0, 1, 0, 0, 0, 1, b'A', 0, 0, 0, 0]),
            Err(HeaderBlockError::UpperCaseName("A".into()))
        );
        let twice = [0, 0, 0, 2, 0, 0, 0, 1, b'a', 0, 0, 0, 0, 0, 0, 0, 1, b'a', 0, 0, 0, 0];
        assert_eq!(decode_block(&twice), Err(HeaderBlockError::DuplicateName("a".into())));
        assert_eq!(decode_block(&[0, 0, 0, 0, 7]), Err(HeaderBlockError::TrailingBytes(1)));
        assert!(matches!(decode_block(&[0, 0, 0, 1, 0, 0, 0, 1, 0xff, 0, 0, 0, 0]), Err(HeaderBlockError::NotUtf8(_))));
    }

    #[test]
    fn compression_round_trips_across_blocks_of_one_stream() {
        let mut compressor = HeaderCompressor::new();
        let mut decompressor = HeaderDecompressor::new(64 * 1024);
        for i in 0..20 {
            let mut headers = sample();
            headers.insert("x-seq", i.to_string());
            let mut wire = Vec::new();
            compressor.compress(&headers, &mut wire);
            // The first block carries the zlib header with the dictionary flag and id.
            if i == 0 {
                assert_eq!(wire[0] & 0x0f, 8, "deflate");
                assert_ne!(wire[1] & 0x20, 0, "FDICT set");
                assert_eq!(u32::from_be_bytes(wire[2..6].try_into().unwrap()), DICTIONARY_ADLER32);
            }
            assert_eq!(decompressor.decompress(&wire).unwrap(), headers, "block {i}");
        }
    }

    #[test]
    fn dictionary_checksum_matches_its_bytes() {
        assert_eq!(DICTIONARY.len(), 1423);
        // Adler-32 computed here independently of zlib.
        let (mut a, mut b) = (1u32, 0u32);
        for &byte in DICTIONARY {
            a = (a + u32::from(byte)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, DICTIONARY_ADLER32);
    }

    #[test]
    fn decompressor_bounds_the_inflated_size() {
        let mut compressor = HeaderCompressor::new();
        let mut headers = Headers::new();
        headers.insert("big", "x".repeat(10_000));
        let mut wire = Vec::new();
        compressor.compress(&headers, &mut wire);
        assert!(wire.len() < 1000, "a repeated byte compresses well");
        let mut decompressor = HeaderDecompressor::new(4096);
        assert_eq!(decompressor.decompress(&wire), Err(HeaderBlockError::TooLarge { limit_bytes: 4096 }));
    }

    #[test]
    fn garbage_is_a_zlib_error_not_a_panic() {
        let mut decompressor = HeaderDecompressor::new(4096);
        assert!(matches!(decompressor.decompress(&[1, 2, 3, 4, 5]), Err(HeaderBlockError::Zlib(_))));
        let mut decompressor = HeaderDecompressor::new(4096);
        // A zlib header asking for a different dictionary.
        assert!(matches!(decompressor.decompress(&[0x78, 0xbb, 0, 0, 0, 1, 0]), Err(HeaderBlockError::Zlib(_))));
    }
}
