//! The resumable reply scanner: RESP2 and RESP3 replies from backend servers.

use smallvec::SmallVec;

use super::request::{header, parse_i64, Header};
use super::{Limits, ProtocolError};

/// Measures complete replies at the start of a buffer: RESP2 (simple strings, errors,
/// integers, bulk strings, arrays nested to any depth, null bulk and null array) and
/// RESP3 (null, double, boolean, big number, blob error, verbatim string, map, set,
/// push, and an attribute with the value it annotates).
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
        // The usual reply of a pipeline of GETs: a bulk string (or nil) at the start of
        // the buffer, read without the general loop's state. Anything else, and a bulk
        // not all here yet, takes the general way, as if this had not looked.
        if self.pos == 0 && self.pending_bulk.is_none() && buf.first() == Some(&b'$') {
            let before = self.examined;
            match header(buf, 0, &mut self.examined) {
                Header::Found(cr, Some(-1)) => return Ok(Some(cr + 2)),
                Header::Found(cr, Some(n))
                    if n >= 0 && n as u64 <= self.limits.max_bulk_len as u64 =>
                {
                    let end = cr + 2 + n as usize;
                    if buf.get(end..end + 2) == Some(b"\r\n".as_slice()) {
                        self.examined += 2;
                        return Ok(Some(end + 2));
                    }
                }
                _ => {}
            }
            self.examined = before;
        }
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
                b'+' | b'-' | b'_' | b',' | b'#' | b'(' => {
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
                b'$' | b'!' | b'=' => match header(buf, self.pos, &mut self.examined) {
                    Header::Incomplete => return Ok(None),
                    Header::Found(cr, Some(-1)) if kind == b'$' => self.pos = cr + 2,
                    Header::Found(cr, Some(n))
                        if n >= 0 && n as u64 <= self.limits.max_bulk_len as u64 =>
                    {
                        self.pos = cr + 2;
                        self.pending_bulk = Some(n as usize);
                        continue;
                    }
                    _ => return Err(ProtocolError::InvalidBulkLength),
                },
                b'*' | b'~' | b'>' | b'%' | b'|' => match header(buf, self.pos, &mut self.examined)
                {
                    Header::Incomplete => return Ok(None),
                    Header::Found(cr, Some(n))
                        if (n == -1 && kind == b'*')
                            || (n >= 0 && n as u64 <= self.limits.max_array_len as u64) =>
                    {
                        self.pos = cr + 2;
                        // A map holds key-value pairs; an attribute's pairs are
                        // followed by the value they annotate, part of the same reply.
                        let elements = match kind {
                            b'%' => 2 * n.max(0) as usize,
                            b'|' => 2 * n.max(0) as usize + 1,
                            _ => n.max(0) as usize,
                        };
                        if elements > 0 {
                            self.stack.push(elements);
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

/// Splits one complete array reply (or a RESP3 set, push, or map: keys and values
/// in turn) into the raw frames of its elements. `None` when `frame` is not a
/// complete, well-formed one (a null array gives `None` too).
pub fn array_elements(frame: &[u8]) -> Option<Vec<&[u8]>> {
    let pairs = match frame.first() {
        Some(b'*' | b'~' | b'>') => false,
        Some(b'%') => true,
        _ => return None,
    };
    let (cr, n) = match header(frame, 0, &mut 0) {
        Header::Found(cr, Some(n)) if n >= 0 => (cr, n as usize * if pairs { 2 } else { 1 }),
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

/// The bytes of a complete bulk string reply (`$<len>\r\n<bytes>\r\n`), `None` for
/// any other reply (a null bulk string included).
pub fn reply_bulk(frame: &[u8]) -> Option<&[u8]> {
    let rest = frame.strip_prefix(b"$")?;
    let cr = memchr::memchr(b'\r', rest)?;
    let len = usize::try_from(parse_i64(&rest[..cr])?).ok()?;
    let body = rest.get(cr + 2..)?.strip_suffix(b"\r\n")?;
    (body.len() == len).then_some(body)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A bulk string's bytes, binary and empty ones too; anything else is `None`.
    #[test]
    fn bulk_replies_give_their_bytes() {
        assert_eq!(reply_bulk(b"$5\r\nhe\r\no\r\n"), Some(&b"he\r\no"[..]));
        assert_eq!(reply_bulk(b"$0\r\n\r\n"), Some(&b""[..]));
        for other in [
            &b"$-1\r\n"[..],
            b"$3\r\nab\r\n",
            b"$2\r\nabc\r\n",
            b":1\r\n",
            b"+OK\r\n",
            b"$x\r\n\r\n",
        ] {
            assert_eq!(
                reply_bulk(other),
                None,
                "{:?}",
                String::from_utf8_lossy(other)
            );
        }
    }

    fn scan_all(buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        ReplyScanner::new(Limits::default()).scan(buf)
    }

    /// Every prefix fed to one scanner gives `None` until the frame is complete, then
    /// the same result as scanning it all at once.
    fn assert_byte_by_byte(buf: &[u8]) {
        let whole = scan_all(buf);
        let mut s = ReplyScanner::new(Limits::default());
        for n in 1..=buf.len() {
            match s.scan(&buf[..n]) {
                Ok(None) => continue,
                other => {
                    assert_eq!(
                        other,
                        whole,
                        "prefix {n} of {:?}",
                        String::from_utf8_lossy(buf)
                    );
                    if let Ok(Some(len)) = other {
                        assert_eq!(len, n);
                    }
                    return;
                }
            }
        }
        assert_eq!(whole, Ok(None));
    }

    const VALID: &[&[u8]] = &[
        b"+OK\r\n",
        b"+\r\n",
        b"-ERR unknown command 'x'\r\n",
        b":0\r\n",
        b":-42\r\n",
        b":9223372036854775807\r\n",
        b"$5\r\nhello\r\n",
        b"$0\r\n\r\n",
        b"$4\r\na\r\nb\r\n",
        b"$-1\r\n",
        b"*-1\r\n",
        b"*0\r\n",
        b"*2\r\n$1\r\na\r\n$-1\r\n",
        b"*3\r\n:1\r\n*2\r\n+a\r\n*0\r\n-E x\r\n",
        b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:7\r\n",
        b"*2\r\n*1\r\n$-1\r\n*-1\r\n",
    ];

    /// RESP3 replies, whole and fed one byte at a time, measure as the whole frame.
    #[test]
    fn resp3_replies_are_measured_whole() {
        let cases: &[&[u8]] = &[
            b"_\r\n",
            b",3.14\r\n",
            b",inf\r\n",
            b"#t\r\n",
            b"(3492890328409238509324850943850943825024385\r\n",
            b"!21\r\nSYNTAX invalid syntax\r\n",
            b"=15\r\ntxt:Some string\r\n",
            b"%2\r\n+first\r\n:1\r\n$6\r\nsecond\r\n_\r\n",
            b"~3\r\n+a\r\n+b\r\n%1\r\n+k\r\n*2\r\n:1\r\n,2.5\r\n",
            b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\nx\r\n",
            b"|1\r\n+ttl\r\n:3600\r\n*2\r\n:1\r\n:2\r\n",
            b"%0\r\n",
            b"*2\r\n_\r\n#f\r\n",
        ];
        for frame in cases {
            let mut doubled = frame.to_vec();
            doubled.extend_from_slice(frame);
            assert_eq!(scan_all(&doubled), Ok(Some(frame.len())), "{frame:?}");
            let mut s = ReplyScanner::new(Limits::default());
            for end in 1..frame.len() {
                assert_eq!(s.scan(&frame[..end]), Ok(None), "{frame:?} at {end}");
            }
            assert_eq!(s.scan(frame), Ok(Some(frame.len())), "{frame:?}");
        }
        let map = b"%2\r\n+a\r\n:1\r\n+b\r\n:2\r\n";
        assert_eq!(array_elements(map).map(|e| e.len()), Some(4));
        assert_eq!(
            scan_all(b"%-1\r\n"),
            Err(ProtocolError::InvalidMultibulkLength)
        );
        assert_eq!(scan_all(b"=-1\r\n"), Err(ProtocolError::InvalidBulkLength));
    }

    #[test]
    fn every_type() {
        for buf in VALID {
            assert_eq!(
                scan_all(buf),
                Ok(Some(buf.len())),
                "{:?}",
                String::from_utf8_lossy(buf)
            );
            assert_byte_by_byte(buf);
        }
    }

    #[test]
    fn errors() {
        use ProtocolError::*;
        let cases: &[(&[u8], ProtocolError)] = &[
            (b"@3\r\nabc\r\n", UnknownReplyType('@')),
            (b"*2\r\n:1\r\n?x\r\n", UnknownReplyType('?')),
            (b":abc\r\n", InvalidInteger),
            (b":\r\n", InvalidInteger),
            (b":1.5\r\n", InvalidInteger),
            (b":99999999999999999999\r\n", InvalidInteger),
            (b":1111111111111111111111111111111111111", InvalidInteger),
            (b":1\rx", InvalidInteger),
            (b"$-2\r\n", InvalidBulkLength),
            (b"$x\r\n", InvalidBulkLength),
            (b"$536870913\r\n", InvalidBulkLength),
            (b"$3\r\nabcd\r\n", MissingCrlf),
            (b"+OK\rx", MissingCrlf),
            (b"*-2\r\n", InvalidMultibulkLength),
            (b"*1048577\r\n", InvalidMultibulkLength),
            (b"*1x\r\n", InvalidMultibulkLength),
            (b"*111111111111111111111111111111111111", HeaderTooBig),
        ];
        for (buf, err) in cases {
            assert_eq!(
                scan_all(buf),
                Err(err.clone()),
                "{:?}",
                String::from_utf8_lossy(buf)
            );
            assert_byte_by_byte(buf);
        }
    }

    #[test]
    fn limits_are_checked_before_waiting_for_data() {
        let limits = Limits {
            max_bulk_len: 8,
            max_array_len: 2,
            max_inline_len: 8,
        };
        let mut s = ReplyScanner::new(limits);
        assert_eq!(s.scan(b"$9\r\n"), Err(ProtocolError::InvalidBulkLength));
        assert_eq!(
            s.scan(b"*3\r\n"),
            Err(ProtocolError::InvalidMultibulkLength)
        );
        assert_eq!(s.scan(b"+123456789"), Err(ProtocolError::LineTooBig));
        assert_eq!(s.scan(b"+12345678"), Ok(None));
        assert_eq!(s.scan(b"+12345678\r\n"), Ok(Some(11)));
        assert_eq!(s.scan(b"$8\r\n12345678\r\n"), Ok(Some(14)));
        // A huge announced bulk allocates nothing and waits without looking at bytes.
        let mut s = ReplyScanner::new(Limits::default());
        assert_eq!(s.scan(b"$536870912\r\nab"), Ok(None));
        let before = s.bytes_examined();
        assert_eq!(s.scan(&[b'x'; 100_000]), Ok(None));
        assert_eq!(s.bytes_examined(), before);
    }

    #[test]
    fn pipelined_replies() {
        let mut buf = Vec::new();
        for f in VALID {
            buf.extend_from_slice(f);
        }
        buf.extend_from_slice(b"*2\r\n:1\r\n");
        let mut s = ReplyScanner::new(Limits::default());
        let mut off = 0;
        let mut lens = Vec::new();
        while let Some(n) = s.scan(&buf[off..]).unwrap() {
            lens.push(n);
            off += n;
        }
        assert_eq!(lens, VALID.iter().map(|f| f.len()).collect::<Vec<_>>());
        assert_eq!(&buf[off..], b"*2\r\n:1\r\n");
    }

    /// A big MGET-like reply fed in 16 KiB reads costs about one pass over headers.
    #[test]
    fn big_array_in_16k_pieces_is_one_pass() {
        let mut buf = b"*20000\r\n".to_vec();
        for i in 0..20_000 {
            if i % 7 == 0 {
                buf.extend_from_slice(b"$-1\r\n");
            } else {
                buf.extend_from_slice(b"$130\r\n");
                buf.extend_from_slice(&[b'v'; 130]);
                buf.extend_from_slice(b"\r\n");
            }
        }
        // And one long status line, searched once even though it arrives in pieces.
        let mut line = b"+".to_vec();
        line.extend_from_slice(&vec![b's'; 300_000]);
        line.extend_from_slice(b"\r\n");
        // Bulk data is never examined; a status line is searched once.
        for (frame, bound) in [(&buf, buf.len() / 10), (&line, line.len())] {
            let mut s = ReplyScanner::new(Limits::default());
            let mut n = 0;
            let mut calls = 0;
            let got = loop {
                n = (n + 16 * 1024).min(frame.len());
                calls += 1;
                if let Some(len) = s.scan(&frame[..n]).unwrap() {
                    break len;
                }
            };
            assert_eq!(got, frame.len());
            assert!(s.bytes_examined() <= bound as u64 + calls * 34);
        }
    }

    #[test]
    fn deep_nesting_resumes() {
        let mut buf = Vec::new();
        for _ in 0..1000 {
            buf.extend_from_slice(b"*2\r\n:1\r\n");
        }
        buf.extend_from_slice(b"$-1\r\n");
        assert_byte_by_byte(&buf);
        assert_eq!(scan_all(&buf), Ok(Some(buf.len())));
    }

    #[test]
    fn elements_of_an_array() {
        let frame = b"*4\r\n$3\r\nfoo\r\n$-1\r\n*2\r\n:1\r\n+x\r\n-ERR e\r\n";
        assert_eq!(
            array_elements(frame).unwrap(),
            vec![
                &b"$3\r\nfoo\r\n"[..],
                b"$-1\r\n",
                b"*2\r\n:1\r\n+x\r\n",
                b"-ERR e\r\n"
            ]
        );
        assert_eq!(array_elements(b"*0\r\n").unwrap(), Vec::<&[u8]>::new());
        assert_eq!(array_elements(b"*-1\r\n"), None);
        assert_eq!(array_elements(b"$1\r\na\r\n"), None);
        assert_eq!(array_elements(b"*2\r\n:1\r\n"), None, "incomplete");
        assert_eq!(
            array_elements(b"*1\r\n:1\r\n:2\r\n"),
            None,
            "trailing bytes"
        );
        assert_eq!(array_elements(b"*1\r\n:x\r\n"), None);
        // A lying count does not make it allocate for a million elements.
        assert_eq!(array_elements(b"*1000000\r\n:1\r\n"), None);
    }

    #[test]
    fn integers() {
        assert_eq!(reply_integer(b":0\r\n"), Some(0));
        assert_eq!(reply_integer(b":-12\r\n"), Some(-12));
        assert_eq!(reply_integer(b":9223372036854775807\r\n"), Some(i64::MAX));
        assert_eq!(reply_integer(b":1"), None);
        assert_eq!(reply_integer(b"+1\r\n"), None);
        assert_eq!(reply_integer(b":1\r\n:2\r\n"), None);
        assert_eq!(reply_integer(b":x\r\n"), None);
    }
}
