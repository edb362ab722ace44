//! Body framing: how long a message body is (RFC 9112 6), on both sides.
//!
//! A request's framing comes from its head: `Content-Length` or
//! `Transfer-Encoding: chunked`, never both, no conflicting lengths, no
//! transfer coding other than `chunked`; with neither, the body is empty
//! (RFC 9112 6.3), so `curl -X POST` without data is valid and a 411 is never
//! needed. A response may also run until the connection closes. The chunked
//! coding is decoded here too ([`ChunkedDecoder`]), trailers checked and
//! dropped.

use super::Error;
use super::encode::status_has_no_body;
use super::head::{Headers, Method, check_field, trim_ows};

/// The most bytes of chunk extensions accepted on one chunk-size line.
const MAX_CHUNK_EXT: usize = 1024;

/// Chunk extensions of a whole body may take this many bytes beyond the
/// data they come with: a body of tiny chunks with long extensions (work
/// for us, nothing for the handler) is refused past it.
const CHUNK_EXT_ALLOWANCE: u64 = 4 * 1024;

/// How a message body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the peer closes (responses only).
    UntilClose,
}

/// Parses a `Content-Length` value list: one or more identical decimal numbers.
pub(crate) fn content_length_of(headers: &Headers) -> Result<Option<u64>, Error> {
    let mut found = None;
    for value in headers.get_all("content-length") {
        for item in value.split(|&b| b == b',') {
            let item = trim_ows(item);
            if item.is_empty() || item.len() > 19 || !item.iter().all(u8::is_ascii_digit) {
                return Err(Error::BadRequest("invalid Content-Length"));
            }
            let n = item.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            match found {
                Some(prev) if prev != n => {
                    return Err(Error::BadRequest("conflicting Content-Length values"));
                }
                _ => found = Some(n),
            }
        }
    }
    Ok(found)
}

/// Whether `Transfer-Encoding` is present, and if so, that it is exactly
/// `chunked`: any other coding (or `chunked` twice) makes the framing unknowable.
pub(crate) fn transfer_encoding_chunked(headers: &Headers) -> Result<bool, Error> {
    let mut codings = 0;
    let mut chunked_last = false;
    for value in headers.get_all("transfer-encoding") {
        for item in value.split(|&b| b == b',') {
            let item = trim_ows(item);
            if item.is_empty() {
                continue;
            }
            codings += 1;
            chunked_last = item.eq_ignore_ascii_case(b"chunked");
        }
    }
    match (codings, chunked_last) {
        (0, _) => {
            if headers.get_all("transfer-encoding").next().is_some() {
                return Err(Error::BadRequest("empty Transfer-Encoding"));
            }
            Ok(false)
        }
        (1, true) => Ok(true),
        _ => Err(Error::BadRequest("unsupported Transfer-Encoding")),
    }
}

/// Decodes the chunked transfer coding (RFC 9112 7.1). Strict: hex sizes of at
/// most 16 digits, CRLF only, bounded extensions and trailers.
#[derive(Debug)]
pub(crate) struct ChunkedDecoder {
    state: ChunkState,
    size: u64,
    digits: u8,
    ext_len: usize,
    /// Chunk-extension bytes of the whole body (each `;` included).
    ext_total: u64,
    trailers: Vec<u8>,
    max_trailer: usize,
    /// Chunk sizes announced so far, and their limit: a chunk that would take
    /// the body over it fails at once, before its data is awaited.
    announced: u64,
    max_body: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    Trailers,
    Done,
}

fn bad(why: &'static str) -> Error {
    Error::BadRequest(why)
}

impl ChunkedDecoder {
    pub(crate) fn new(max_trailer: usize, max_body: u64) -> ChunkedDecoder {
        ChunkedDecoder {
            state: ChunkState::Size,
            size: 0,
            digits: 0,
            ext_len: 0,
            ext_total: 0,
            trailers: Vec::new(),
            max_trailer,
            announced: 0,
            max_body,
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes from `input` into `out`; returns (bytes of input used, bytes
    /// written). Stops when `out` is full or the body is complete.
    pub(crate) fn decode(&mut self, input: &[u8], out: &mut [u8]) -> Result<(usize, usize), Error> {
        let mut i = 0;
        let mut w = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                ChunkState::Size => {
                    let digit = match b {
                        b'0'..=b'9' => Some(b - b'0'),
                        b'a'..=b'f' => Some(b - b'a' + 10),
                        b'A'..=b'F' => Some(b - b'A' + 10),
                        _ => None,
                    };
                    match (digit, b) {
                        (Some(d), _) => {
                            if self.digits == 16 {
                                return Err(bad("chunk size too large"));
                            }
                            self.size = (self.size << 4) | u64::from(d);
                            self.digits += 1;
                        }
                        (None, b';') if self.digits > 0 => {
                            self.ext_len = 0;
                            self.count_ext()?;
                            self.state = ChunkState::Ext;
                        }
                        (None, b'\r') if self.digits > 0 => self.state = ChunkState::SizeLf,
                        _ => return Err(bad("invalid chunk size")),
                    }
                    i += 1;
                }
                ChunkState::Ext => {
                    if b == b'\r' {
                        self.state = ChunkState::SizeLf;
                    } else if (b < b' ' && b != b'\t') || b == 0x7f {
                        return Err(bad("invalid chunk extension"));
                    } else {
                        self.ext_len += 1;
                        if self.ext_len > MAX_CHUNK_EXT {
                            return Err(bad("chunk extension too long"));
                        }
                        self.count_ext()?;
                    }
                    i += 1;
                }
                ChunkState::SizeLf => {
                    if b != b'\n' {
                        return Err(bad("bare CR in chunk size line"));
                    }
                    i += 1;
                    self.announced = self.announced.saturating_add(self.size);
                    if self.announced > self.max_body {
                        return Err(Error::BodyTooLarge);
                    }
                    if self.size == 0 {
                        self.trailers.clear();
                        self.state = ChunkState::Trailers;
                    } else {
                        self.state = ChunkState::Data;
                    }
                }
                ChunkState::Data => {
                    if w == out.len() {
                        break;
                    }
                    let n = (input.len() - i)
                        .min(out.len() - w)
                        .min(usize::try_from(self.size).unwrap_or(usize::MAX));
                    out[w..w + n].copy_from_slice(&input[i..i + n]);
                    i += n;
                    w += n;
                    self.size -= n as u64;
                    if self.size == 0 {
                        self.state = ChunkState::DataCr;
                    }
                }
                ChunkState::DataCr => {
                    if b != b'\r' {
                        return Err(bad("chunk data longer than its size"));
                    }
                    self.state = ChunkState::DataLf;
                    i += 1;
                }
                ChunkState::DataLf => {
                    if b != b'\n' {
                        return Err(bad("bare CR after chunk data"));
                    }
                    self.state = ChunkState::Size;
                    self.size = 0;
                    self.digits = 0;
                    i += 1;
                }
                ChunkState::Trailers => {
                    self.trailers.push(b);
                    i += 1;
                    if self.trailers.len() > self.max_trailer {
                        return Err(Error::HeadersTooLarge);
                    }
                    if b == b'\n' {
                        self.trailer_line()?;
                    }
                }
                ChunkState::Done => break,
            }
        }
        Ok((i, w))
    }

    /// Counts one byte of chunk extensions: all of them together may exceed
    /// the data announced so far (this chunk's included) by
    /// [`CHUNK_EXT_ALLOWANCE`] only.
    fn count_ext(&mut self) -> Result<(), Error> {
        self.ext_total += 1;
        let data = self.announced.saturating_add(self.size);
        if self.ext_total > data.saturating_add(CHUNK_EXT_ALLOWANCE) {
            return Err(bad(
                "chunk extensions out of proportion to the data; send the body without them",
            ));
        }
        Ok(())
    }

    /// Checks the trailer line that just ended; an empty one ends the body.
    fn trailer_line(&mut self) -> Result<(), Error> {
        let t = &self.trailers;
        let start = t[..t.len() - 1]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1);
        let line = &t[start..];
        if line.len() < 2 || line[line.len() - 2] != b'\r' {
            return Err(bad("bare LF in trailers"));
        }
        if line.len() == 2 {
            self.state = ChunkState::Done;
            self.trailers = Vec::new();
            return Ok(());
        }
        check_field(&line[..line.len() - 2])
            .map(|_| ())
            .map_err(super::head::HeadError::in_request)
    }
}

/// How a response body is delimited (RFC 9112 6.3).
pub(crate) fn response_framing(
    method: &Method,
    status: u16,
    headers: &Headers,
) -> Result<Framing, Error> {
    if *method == Method::Head || status_has_no_body(status) {
        return Ok(Framing::None);
    }
    let te = headers.get_all("transfer-encoding").next().is_some();
    let cl =
        content_length_of(headers).map_err(|_| Error::BadResponse("invalid Content-Length"))?;
    if te {
        if cl.is_some() {
            return Err(Error::BadResponse(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        return Ok(if headers.has_token("transfer-encoding", "chunked") {
            Framing::Chunked
        } else {
            Framing::UntilClose
        });
    }
    Ok(match cl {
        Some(0) => Framing::None,
        Some(n) => Framing::Length(n),
        None => Framing::UntilClose,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const DEFAULT_MAX_TRAILER: usize = 8 * 1024;

    pub(crate) fn decode_pieces(
        input: &[u8],
        cuts: &[usize],
        out_size: usize,
    ) -> Result<(Vec<u8>, usize), String> {
        let mut d = ChunkedDecoder::new(DEFAULT_MAX_TRAILER, 1 << 20);
        let mut body = Vec::new();
        let mut out = vec![0u8; out_size];
        let mut consumed = 0;
        let mut bounds: Vec<usize> = cuts.to_vec();
        bounds.push(input.len());
        for end in bounds {
            while consumed < end && !d.is_done() {
                let (used, written) = d
                    .decode(&input[consumed..end], &mut out)
                    .map_err(|e| format!("{e:?}"))?;
                body.extend_from_slice(&out[..written]);
                consumed += used;
                if used == 0 && written == 0 {
                    break;
                }
            }
        }
        Ok((body, consumed))
    }

    #[test]
    fn chunked_bodies_split_at_every_byte_decode_identically() {
        let samples: [&[u8]; 6] = [
            b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\nNEXT",
            b"A\r\n0123456789\r\n0\r\nTrailer: yes\r\n\r\n",
            b"5\r\nhel",
            b"5\nhello\r\n0\r\n\r\n",
            b"zz\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
        ];
        for sample in samples {
            let whole = decode_pieces(sample, &[], 1024);
            for cut in 0..=sample.len() {
                assert_eq!(decode_pieces(sample, &[cut], 3), whole, "cut {cut}");
            }
        }
        assert_eq!(
            decode_pieces(samples[0], &[], 64),
            Ok((b"hello world".to_vec(), samples[0].len() - 4))
        );
    }
}
