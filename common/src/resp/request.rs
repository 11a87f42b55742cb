//! The resumable request scanner: multibulk and inline commands from clients.

use bytes::Bytes;
use smallvec::SmallVec;

use super::{Limits, ProtocolError};

/// Argument positions of one request: `(start, end)` byte offsets into its frame.
pub type Args = SmallVec<[(usize, usize); 6]>;

/// What the scanner found at the start of the buffer: a complete request of `len`
/// bytes whose arguments lie at `args` (offsets from the start of the buffer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedRequest {
    /// Length of the whole request frame in bytes, including its final CRLF.
    pub len: usize,
    /// Argument positions relative to the frame's first byte. Empty for `*0`, `*-1`
    /// and blank inline lines, which a server ignores.
    pub args: Args,
    /// True for an inline (telnet-style) command rather than a multibulk one.
    pub inline: bool,
}

/// One complete client request: its bytes, shared with the read buffer, and where its
/// arguments are.
#[derive(Debug, Clone)]
pub struct Request {
    frame: Bytes,
    args: Args,
    inline: bool,
}

impl Request {
    /// Builds a request from the frame bytes the scanner measured and its result.
    pub fn new(frame: Bytes, parsed: ParsedRequest) -> Self {
        debug_assert_eq!(frame.len(), parsed.len);
        Self {
            frame,
            args: parsed.args,
            inline: parsed.inline,
        }
    }

    /// Number of arguments, the command name included.
    pub fn argc(&self) -> usize {
        self.args.len()
    }

    /// Argument `i` as bytes; an empty slice when out of range.
    pub fn arg(&self, i: usize) -> &[u8] {
        match self.args.get(i) {
            Some(&(s, e)) => &self.frame[s..e],
            None => &[],
        }
    }

    /// Argument `i` as a zero-copy `Bytes` sharing the frame's memory.
    pub fn arg_bytes(&self, i: usize) -> Bytes {
        match self.args.get(i) {
            Some(&(s, e)) => self.frame.slice(s..e),
            None => Bytes::new(),
        }
    }

    /// The raw bytes as the client sent them.
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }

    /// True when the client used the inline form.
    pub fn is_inline(&self) -> bool {
        self.inline
    }

    /// The request as a multibulk RESP frame: the original bytes when the client sent
    /// multibulk, a re-encoding of the arguments for an inline command.
    pub fn to_resp(&self) -> Bytes {
        if !self.inline {
            return self.frame.clone();
        }
        let mut out = Vec::with_capacity(self.frame.len() + 16 * self.args.len() + 16);
        encode_array_header(&mut out, self.args.len());
        for i in 0..self.args.len() {
            encode_bulk(&mut out, self.arg(i));
        }
        Bytes::from(out)
    }
}

/// Appends a RESP array header `*n\r\n` to `out`.
pub fn encode_array_header(out: &mut Vec<u8>, n: usize) {
    out.push(b'*');
    out.extend_from_slice(n.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends a RESP bulk string to `out`.
pub fn encode_bulk(out: &mut Vec<u8>, data: &[u8]) {
    out.push(b'$');
    out.extend_from_slice(data.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Finds complete requests at the start of a client's read buffer.
///
/// Contract: the buffer passed to [`RequestScanner::scan`] always starts at the first
/// byte of the request being scanned. Between calls the caller may only append bytes.
/// When `scan` returns `Some(p)`, the caller removes the first `p.len` bytes and the
/// scanner starts afresh on the next request. Work already done on an incomplete
/// request is kept, so a large request arriving in many reads is scanned about once.
#[derive(Debug, Clone)]
pub struct RequestScanner {
    limits: Limits,
}

impl RequestScanner {
    /// A scanner that enforces `limits`.
    pub fn new(limits: Limits) -> Self {
        Self { limits }
    }

    /// Scans `buf`: `Ok(Some)` for a complete request, `Ok(None)` when more bytes are
    /// needed, `Err` for a malformed or over-limit request (the connection must close).
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<ParsedRequest>, ProtocolError> {
        let _ = (buf, &self.limits);
        todo!("request scanner")
    }
}
