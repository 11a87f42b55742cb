//! The resumable reply scanner: RESP2 replies from backend servers.

use smallvec::SmallVec;

use super::request::{header, parse_i64, Header};
use super::{Limits, ProtocolError};

/// Measures complete RESP2 replies (simple strings, errors, integers, bulk strings,
/// arrays nested to any depth, null bulk and null array) at the start of a buffer.
///
/// Same contract as [`super::RequestScanner`]: the buffer starts at the reply being
/// scanned, the caller only appends between calls, and removes `n` bytes after
/// `Ok(Some(n))`; the scanner then starts afresh. An incomplete reply keeps its place
/// (offset, the open arrays' remaining counts, a pending bulk's length, how far a long
/// line was searched), so a big reply arriving in many reads is scanned about once.
#[derive(Debug, Clone)]
pub struct ReplyScanner {
    limits: Limits,
    /// Offset of the next value to read (or of the pending bulk's data).
    pos: usize,
    /// Elements still expected by each open array, innermost last.
    stack: SmallVec<[usize; 8]>,
    /// Length of the bulk whose data starts at `pos`, once its header is read.
    pending_bulk: Option<usize>,
    /// For a `+`/`-` line starting at `pos`: bytes before this offset hold no CR.
    line_searched: usize,
    /// Total bytes looked at since creation, to prove scans are not repeated.
    examined: u64,
}

impl ReplyScanner {
    /// A scanner that enforces `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            pos: 0,
            stack: SmallVec::new(),
            pending_bulk: None,
            line_searched: 0,
            examined: 0,
        }
    }

    /// Total number of buffer bytes this scanner has examined since it was created.
    #[doc(hidden)]
    pub fn bytes_examined(&self) -> u64 {
        self.examined
    }

    /// `Ok(Some(n))`: a complete reply of `n` bytes; `Ok(None)`: more bytes needed.
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        let res = self.scan_inner(buf);
        if !matches!(res, Ok(None)) {
            self.pos = 0;
            self.stack.clear();
            self.pending_bulk = None;
            self.line_searched = 0;
        }
        res
    }

    fn scan_inner(&mut self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        loop {
            if let Some(len) = self.pending_bulk {
                let end = self.pos.saturating_add(len);
                if buf.len() < end.saturating_add(2) {
                    return Ok(None);
                }
                self.examined += 2;
                if &buf[end..end + 2] != b"\r\n" {
                    return Err(ProtocolError::MissingCrlf);
                }
                self.pending_bulk = None;
                self.pos = end + 2;
                if self.value_done() {
                    return Ok(Some(self.pos));
                }
                continue;
            }
            let Some(&kind) = buf.get(self.pos) else {
                return Ok(None);
            };
            match kind {
                b'+' | b'-' => {
                    // Lines may be long (error texts, INFO-like status): search each
                    // byte once, resuming where the last call stopped.
                    let from = (self.pos + 1).max(self.line_searched);
                    let cap = self.pos + 1 + self.limits.max_bulk_len;
                    let limit = buf.len().min(cap.saturating_add(1));
                    let window = buf.get(from..limit).unwrap_or(&[]);
                    self.examined += window.len() as u64;
                    match memchr::memchr(b'\r', window) {
                        Some(i) => {
                            let cr = from + i;
                            match buf.get(cr + 1) {
                                None => {
                                    self.line_searched = cr;
                                    return Ok(None);
                                }
                                Some(b'\n') => {}
                                Some(_) => return Err(ProtocolError::MissingCrlf),
                            }
                            self.line_searched = 0;
                            self.pos = cr + 2;
                        }
                        None if buf.len() > cap => return Err(ProtocolError::LineTooBig),
                        None => {
                            self.line_searched = limit;
                            return Ok(None);
                        }
                    }
                }
                b':' => match header(buf, self.pos, &mut self.examined) {
                    Header::Incomplete => return Ok(None),
                    Header::TooLong | Header::BadEnd | Header::Found(_, None) => {
                        return Err(ProtocolError::InvalidInteger)
                    }
                    Header::Found(cr, Some(_)) => self.pos = cr + 2,
                },
                b'$' => match header(buf, self.pos, &mut self.examined) {
                    Header::Incomplete => return Ok(None),
                    Header::Found(cr, Some(-1)) => self.pos = cr + 2,
                    Header::Found(cr, Some(n))
                        if n >= 0 && n as u64 <= self.limits.max_bulk_len as u64 =>
                    {
                        self.pos = cr + 2;
                        self.pending_bulk = Some(n as usize);
                        continue;
                    }
                    _ => return Err(ProtocolError::InvalidBulkLength),
                },
                b'*' => match header(buf, self.pos, &mut self.examined) {
                    Header::Incomplete => return Ok(None),
                    Header::Found(cr, Some(n))
                        if n == -1 || (n >= 0 && n as u64 <= self.limits.max_array_len as u64) =>
                    {
                        self.pos = cr + 2;
                        if n > 0 {
                            self.stack.push(n as usize);
                            continue;
                        }
                    }
                    Header::TooLong => return Err(ProtocolError::HeaderTooBig),
                    _ => return Err(ProtocolError::InvalidMultibulkLength),
                },
                other => {
                    self.examined += 1;
                    return Err(ProtocolError::UnknownReplyType(other as char));
                }
            }
            if self.value_done() {
                return Ok(Some(self.pos));
            }
        }
    }

    /// Records that one value ended at `pos`; true when the whole reply is complete.
    fn value_done(&mut self) -> bool {
        while let Some(top) = self.stack.last_mut() {
            *top -= 1;
            if *top > 0 {
                return false;
            }
            self.stack.pop();
        }
        true
    }
}

/// Limits for re-reading frames a scanner has already accepted.
const NO_LIMITS: Limits = Limits {
    max_bulk_len: usize::MAX / 4,
    max_array_len: usize::MAX / 4,
    max_inline_len: usize::MAX / 4,
};

/// Splits one complete array reply into the raw frames of its elements. `None` when
/// `frame` is not a complete, well-formed array (a null array gives `None` too).
pub fn array_elements(frame: &[u8]) -> Option<Vec<&[u8]>> {
    if frame.first() != Some(&b'*') {
        return None;
    }
    let (cr, n) = match header(frame, 0, &mut 0) {
        Header::Found(cr, Some(n)) if n >= 0 => (cr, n as usize),
        _ => return None,
    };
    let mut pos = cr + 2;
    // Each element takes at least 3 bytes: bounds the allocation by the frame's size.
    let mut out = Vec::with_capacity(n.min(frame.len() / 3));
    let mut scanner = ReplyScanner::new(NO_LIMITS);
    for _ in 0..n {
        let len = scanner.scan(&frame[pos..]).ok()??;
        out.push(&frame[pos..pos + len]);
        pos += len;
    }
    (pos == frame.len()).then_some(out)
}

/// The value of a complete integer reply (`:123\r\n`), `None` for any other reply.
pub fn reply_integer(frame: &[u8]) -> Option<i64> {
    let digits = frame.strip_prefix(b":")?.strip_suffix(b"\r\n")?;
    parse_i64(digits)
}
