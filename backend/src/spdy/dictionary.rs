//! The SPDY/3 header-compression dictionary (SPDY draft 3, "Compression"): the zlib streams of
//! both directions are primed with it, so that even a session's first header block compresses
//! well. It is a protocol constant, kept here as data: length-prefixed method and header names,
//! then a run of common header values. One wrong byte shows up as a dictionary-id mismatch
//! (the Adler-32 in the zlib header), which the tests check.

/// Adler-32 of [`DICTIONARY`]: the dictionary id a primed zlib stream carries in its header.
pub(crate) const DICTIONARY_ADLER32: u32 = 0xe3c6a7c2;

/// The dictionary (1423 bytes). Spaces are written `\x20` so that no continuation line starts
/// with whitespace that the literal's line continuations would swallow.
pub(crate) const DICTIONARY: &[u8] = b"\
    \x00\x00\x00\x07options\x00\x00\x00\x04head\x00\x00\x00\x04post\x00\x00\x00\x03put\x00\x00\
    \x00\x06delete\x00\x00\x00\x05trace\x00\x00\x00\x06accept\x00\x00\x00\x0eaccept-charset\
    \x00\x00\x00\x0faccept-encoding\x00\x00\x00\x0faccept-language\x00\x00\x00\x0daccept-range\
    s\x00\x00\x00\x03age\x00\x00\x00\x05allow\x00\x00\x00\x0dauthorization\x00\x00\x00\x0dcach\
    e-control\x00\x00\x00\x0aconnection\x00\x00\x00\x0ccontent-base\x00\x00\x00\x10content-enc\
    oding\x00\x00\x00\x10content-language\x00\x00\x00\x0econtent-length\x00\x00\x00\x10content\
    -location\x00\x00\x00\x0bcontent-md5\x00\x00\x00\x0dcontent-range\x00\x00\x00\x0ccontent-t\
    ype\x00\x00\x00\x04date\x00\x00\x00\x04etag\x00\x00\x00\x06expect\x00\x00\x00\x07expires\
    \x00\x00\x00\x04from\x00\x00\x00\x04host\x00\x00\x00\x08if-match\x00\x00\x00\x11if-modifie\
    d-since\x00\x00\x00\x0dif-none-match\x00\x00\x00\x08if-range\x00\x00\x00\x13if-unmodified-\
    since\x00\x00\x00\x0dlast-modified\x00\x00\x00\x08location\x00\x00\x00\x0cmax-forwards\x00\
    \x00\x00\x06pragma\x00\x00\x00\x12proxy-authenticate\x00\x00\x00\x13proxy-authorization\
    \x00\x00\x00\x05range\x00\x00\x00\x07referer\x00\x00\x00\x0bretry-after\x00\x00\x00\x06ser\
    ver\x00\x00\x00\x02te\x00\x00\x00\x07trailer\x00\x00\x00\x11transfer-encoding\x00\x00\x00\
    \x07upgrade\x00\x00\x00\x0auser-agent\x00\x00\x00\x04vary\x00\x00\x00\x03via\x00\x00\x00\
    \x07warning\x00\x00\x00\x10www-authenticate\x00\x00\x00\x06method\x00\x00\x00\x03get\x00\
    \x00\x00\x06status\x00\x00\x00\x06200\x20OK\x00\x00\x00\x07version\x00\x00\x00\x08HTTP/1.1\
    \x00\x00\x00\x03url\x00\x00\x00\x06public\x00\x00\x00\x0aset-cookie\x00\x00\x00\x0akeep-al\
    ive\x00\x00\x00\x06origin10010120120220520630030230330430530630740240540640740840941041141\
    2413414415416417502504505203\x20Non-Authoritative\x20Information204\x20No\x20Content301\
    \x20Moved\x20Permanently400\x20Bad\x20Request401\x20Unauthorized403\x20Forbidden404\x20Not\
    \x20Found500\x20Internal\x20Server\x20Error501\x20Not\x20Implemented503\x20Service\x20Unav\
    ailableJan\x20Feb\x20Mar\x20Apr\x20May\x20Jun\x20Jul\x20Aug\x20Sept\x20Oct\x20Nov\x20Dec\
    \x2000:00:00\x20Mon,\x20Tue,\x20Wed,\x20Thu,\x20Fri,\x20Sat,\x20Sun,\x20GMTchunked,text/ht\
    ml,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/jav\
    ascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0\
    .";
