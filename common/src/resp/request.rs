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
    push_decimal(out, n);
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` in decimal without allocating (`to_string` was a malloc and a free
/// per argument of every split MSET: a fifth of its instructions).
#[inline]
fn push_decimal(out: &mut Vec<u8>, mut n: usize) {
    if n < 10 {
        out.push(b'0' + n as u8);
        return;
    }
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Appends a RESP bulk string to `out`.
pub fn encode_bulk(out: &mut Vec<u8>, data: &[u8]) {
    out.reserve(data.len() + 16);
    out.push(b'$');
    push_decimal(out, data.len());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// A command (or any array of bulk strings) as one RESP frame.
pub fn encode_command<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(16 + args.iter().map(|a| a.as_ref().len() + 16).sum::<usize>());
    encode_command_to::<A, &[u8]>(&mut out, args, &[]);
    out
}

/// Appends a command to `out` as one RESP frame: the arguments in `head`, then those
/// in `tail` (a command name and a list of operands, say).
pub fn encode_command_to<A: AsRef<[u8]>, B: AsRef<[u8]>>(
    out: &mut Vec<u8>,
    head: &[A],
    tail: &[B],
) {
    encode_array_header(out, head.len() + tail.len());
    for a in head {
        encode_bulk(out, a.as_ref());
    }
    for b in tail {
        encode_bulk(out, b.as_ref());
    }
}

/// Longest digit string accepted after `*` or `$` in a header line: an `i64` and its
/// sign take 20 bytes, so anything longer can only be garbage or an attack.
pub(crate) const MAX_HEADER_DIGITS: usize = 32;

/// Where the scanner is inside the current request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Nothing looked at yet.
    Start,
    /// Inside a multibulk request: `remaining` bulks still to come after `pos`.
    Multibulk,
    /// Inside an inline line: no `\n` in the first `pos` bytes.
    Inline,
}

/// Finds complete requests at the start of a client's read buffer.
///
/// Contract: the buffer passed to [`RequestScanner::scan`] always starts at the first
/// byte of the request being scanned. Between calls the caller may only append bytes.
/// When `scan` returns `Some(p)`, the caller removes the first `p.len` bytes and the
/// scanner starts afresh on the next request. Work already done on an incomplete
/// request is kept, so a large request arriving in many reads is scanned about once:
/// once a bulk's length is known its bytes are not looked at until all have arrived.
///
/// Inline requests follow Redis: words split on blanks, `"..."` and `'...'` quote a
/// word. Because arguments are offsets into the frame, a word whose bytes differ from
/// the frame's (a backslash escape, or a quote in the middle of a word) is refused
/// with [`ProtocolError::UnsupportedInlineEscape`]; clients that need such bytes use
/// the multibulk form, as every client library does.
#[derive(Debug, Clone)]
pub struct RequestScanner {
    limits: Limits,
    mode: Mode,
    /// Multibulk: offset of the next header. Inline: bytes already searched for `\n`.
    pos: usize,
    /// Multibulk: bulks still expected.
    remaining: usize,
    /// Multibulk: length of the bulk whose data starts at `pos`, once its header is read.
    pending_bulk: Option<usize>,
    /// Arguments found so far in the current request.
    args: Args,
    /// Total bytes looked at since creation, to prove scans are not repeated.
    examined: u64,
}

impl RequestScanner {
    /// Changes the limits for the requests scanned from now on (for example tighter
    /// ones until a client has authenticated, as Redis does).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// A scanner that enforces `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            mode: Mode::Start,
            pos: 0,
            remaining: 0,
            pending_bulk: None,
            args: Args::new(),
            examined: 0,
        }
    }

    /// Total number of buffer bytes this scanner has examined since it was created.
    /// Test and benchmark aid: after a request of `n` bytes it should be well under `n`.
    #[doc(hidden)]
    pub fn bytes_examined(&self) -> u64 {
        self.examined
    }

    /// Scans `buf`: `Ok(Some)` for a complete request, `Ok(None)` when more bytes are
    /// needed, `Err` for a malformed or over-limit request (the connection must close).
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<ParsedRequest>, ProtocolError> {
        let res = match self.mode {
            Mode::Start => match buf.first() {
                None => return Ok(None),
                Some(b'*') => {
                    if let Some(parsed) = self.whole_multibulk(buf) {
                        return Ok(Some(parsed));
                    }
                    self.start_multibulk(buf)
                }
                Some(_) => {
                    self.mode = Mode::Inline;
                    self.scan_inline(buf)
                }
            },
            Mode::Multibulk => self.scan_bulks(buf),
            Mode::Inline => self.scan_inline(buf),
        };
        // Any outcome but "need more bytes" ends this request: start afresh next time.
        if !matches!(res, Ok(None)) {
            self.reset();
        }
        res
    }

    fn reset(&mut self) {
        self.mode = Mode::Start;
        self.pos = 0;
        self.remaining = 0;
        self.pending_bulk = None;
        self.args.clear();
    }

    /// The usual request: a multibulk of at most [`Args`]' inline capacity, all in
    /// `buf`, valid and within the limits. Read in one pass that keeps no state, and
    /// `None` for anything else (incomplete, malformed, bigger), which the general way
    /// then reads from the start, with the same result: the general way's
    /// bookkeeping was a third of a pipelined GET's scanning.
    #[inline]
    fn whole_multibulk(&mut self, buf: &[u8]) -> Option<ParsedRequest> {
        let mut examined = 0;
        let Header::Found(cr, Some(n)) = header(buf, 0, &mut examined) else {
            return None;
        };
        let mut args = Args::new();
        if n <= 0 || n as usize > args.inline_size() || n as u64 > self.limits.max_array_len as u64
        {
            return None;
        }
        let mut pos = cr + 2;
        for _ in 0..n {
            if buf.get(pos) != Some(&b'$') {
                return None;
            }
            let Header::Found(cr, Some(len)) = header(buf, pos, &mut examined) else {
                return None;
            };
            if len < 0 || len as u64 > self.limits.max_bulk_len as u64 {
                return None;
            }
            let start = cr + 2;
            let end = start.saturating_add(len as usize);
            if buf.get(end..end.saturating_add(2)) != Some(b"\r\n") {
                return None;
            }
            examined += 2;
            args.push((start, end));
            pos = end + 2;
        }
        self.examined += examined;
        Some(ParsedRequest {
            len: pos,
            args,
            inline: false,
        })
    }

    /// Reads the `*N\r\n` header, then the bulks.
    fn start_multibulk(&mut self, buf: &[u8]) -> Result<Option<ParsedRequest>, ProtocolError> {
        let (cr, n) = match header(buf, 0, &mut self.examined) {
            Header::Incomplete => return Ok(None),
            Header::TooLong => return Err(ProtocolError::HeaderTooBig),
            Header::BadEnd => return Err(ProtocolError::InvalidMultibulkLength),
            Header::Found(cr, n) => (cr, n),
        };
        let n = n.ok_or(ProtocolError::InvalidMultibulkLength)?;
        if n <= 0 {
            // Redis ignores empty and negative counts: consume the line, run nothing.
            return Ok(Some(ParsedRequest {
                len: cr + 2,
                args: Args::new(),
                inline: false,
            }));
        }
        if n as u64 > self.limits.max_array_len as u64 {
            return Err(ProtocolError::InvalidMultibulkLength);
        }
        let n = n as usize;
        self.mode = Mode::Multibulk;
        self.pos = cr + 2;
        self.remaining = n;
        self.args.clear();
        // Bounded so a huge announced count cannot make us allocate before data comes.
        self.args.reserve(n.min(1024));
        self.scan_bulks(buf)
    }

    /// Reads `$len\r\n<data>\r\n` elements until `remaining` is zero or bytes run out.
    fn scan_bulks(&mut self, buf: &[u8]) -> Result<Option<ParsedRequest>, ProtocolError> {
        loop {
            let len = match self.pending_bulk {
                Some(len) => len,
                None => {
                    let Some(&first) = buf.get(self.pos) else {
                        return Ok(None);
                    };
                    if first != b'$' {
                        self.examined += 1;
                        return Err(ProtocolError::ExpectedBulk(first as char));
                    }
                    let (cr, len) = match header(buf, self.pos, &mut self.examined) {
                        Header::Incomplete => return Ok(None),
                        Header::TooLong | Header::BadEnd => {
                            return Err(ProtocolError::InvalidBulkLength)
                        }
                        Header::Found(cr, len) => (cr, len),
                    };
                    let len = match len {
                        Some(l) if l >= 0 && l as u64 <= self.limits.max_bulk_len as u64 => {
                            l as usize
                        }
                        _ => return Err(ProtocolError::InvalidBulkLength),
                    };
                    self.pos = cr + 2;
                    self.pending_bulk = Some(len);
                    len
                }
            };
            // The data is not examined at all: only its CRLF, once it is all here.
            let end = self.pos.saturating_add(len);
            if buf.len() < end.saturating_add(2) {
                return Ok(None);
            }
            self.examined += 2;
            if &buf[end..end + 2] != b"\r\n" {
                return Err(ProtocolError::MissingCrlf);
            }
            self.args.push((self.pos, end));
            self.pos = end + 2;
            self.pending_bulk = None;
            self.remaining -= 1;
            if self.remaining == 0 {
                return Ok(Some(ParsedRequest {
                    len: self.pos,
                    args: std::mem::take(&mut self.args),
                    inline: false,
                }));
            }
        }
    }

    /// Finds the end of an inline line, then splits it into words.
    fn scan_inline(&mut self, buf: &[u8]) -> Result<Option<ParsedRequest>, ProtocolError> {
        // A line may be at most `max_inline_len` bytes before its `\n`.
        let limit = buf.len().min(self.limits.max_inline_len.saturating_add(1));
        let from = self.pos.min(limit);
        self.examined += (limit - from) as u64;
        let Some(i) = memchr::memchr(b'\n', &buf[from..limit]) else {
            if buf.len() > self.limits.max_inline_len {
                return Err(ProtocolError::InlineTooBig);
            }
            self.pos = limit;
            return Ok(None);
        };
        let nl = from + i;
        let mut end = nl;
        if end > 0 && buf[end - 1] == b'\r' {
            end -= 1;
        }
        self.examined += end as u64;
        let args = split_inline(&buf[..end])?;
        Ok(Some(ParsedRequest {
            len: nl + 1,
            args,
            inline: true,
        }))
    }
}

/// Outcome of looking for a `*N` / `$N` header line at some offset.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Header {
    /// No CR yet, and the line could still be valid.
    Incomplete,
    /// No CR within [`MAX_HEADER_DIGITS`] bytes.
    TooLong,
    /// A CR not followed by LF.
    BadEnd,
    /// Index of the CR, and the number (`None` when it is not a valid number).
    Found(usize, Option<i64>),
}

/// Reads the header line whose type byte is at `start`. The search is bounded by
/// [`MAX_HEADER_DIGITS`], so repeating it when bytes trickle in costs little.
pub(crate) fn header(buf: &[u8], start: usize, examined: &mut u64) -> Header {
    let from = start + 1;
    // The usual header, all here: 1 to 18 digits (no leading zero) and CRLF, read in
    // one pass that finds the end and the number together. Anything else takes the
    // general way below, which gives the same answer for these.
    if let Some(rest) = buf.get(from..) {
        // Most headers of most requests: one digit (`*2`, `$3`), then two.
        if let [d, b'\r', b'\n', ..] = *rest {
            let d = d.wrapping_sub(b'0');
            if d <= 9 {
                *examined += 4;
                return Header::Found(from + 1, Some(i64::from(d)));
            }
        }
        if let [d1, d2, b'\r', b'\n', ..] = *rest {
            let (d1, d2) = (d1.wrapping_sub(b'1'), d2.wrapping_sub(b'0'));
            if d1 <= 8 && d2 <= 9 {
                *examined += 5;
                return Header::Found(from + 2, Some(i64::from(d1 + 1) * 10 + i64::from(d2)));
            }
        }
        let mut v: i64 = 0;
        let mut i = 0;
        while i < rest.len().min(18) {
            let d = rest[i].wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            v = v * 10 + i64::from(d);
            i += 1;
        }
        if i > 0
            && (rest[0] != b'0' || i == 1)
            && rest.get(i) == Some(&b'\r')
            && rest.get(i + 1) == Some(&b'\n')
        {
            *examined += i as u64 + 3;
            return Header::Found(from + i, Some(v));
        }
    }
    header_general(buf, start, examined)
}

/// [`header`] for every input, the unusual ones included.
fn header_general(buf: &[u8], start: usize, examined: &mut u64) -> Header {
    let from = start + 1;
    let limit = buf.len().min(from + MAX_HEADER_DIGITS + 1);
    if from > limit {
        return Header::Incomplete;
    }
    let window = &buf[from..limit];
    // Headers are a few bytes long: a plain loop beats memchr's set-up cost here.
    let found = window.iter().position(|&b| b == b'\r');
    // memchr stops at the CR; count the type byte, the digits, CR and LF.
    *examined += found.map_or(window.len(), |i| i + 2) as u64 + 1;
    match found {
        Some(i) => {
            let cr = from + i;
            match buf.get(cr + 1) {
                None => Header::Incomplete,
                Some(b'\n') => Header::Found(cr, parse_i64(&buf[from..cr])),
                Some(_) => Header::BadEnd,
            }
        }
        None if window.len() > MAX_HEADER_DIGITS => Header::TooLong,
        None => Header::Incomplete,
    }
}

/// Parses a decimal integer the way Redis's `string2ll` does: an optional `-`, then
/// digits with no leading zero (except `0` itself), no `+`, no blanks, no overflow.
pub(crate) fn parse_i64(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    match digits {
        [] => return None,
        [b'0'] => return if neg { None } else { Some(0) },
        [b'0', ..] => return None,
        _ => {}
    }
    // Accumulate negatively so that i64::MIN parses too.
    let mut v: i64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_sub(i64::from(c - b'0'))?;
    }
    if neg {
        Some(v)
    } else {
        v.checked_neg()
    }
}

/// Blanks that separate inline words (C's `isspace`).
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Splits an inline line (without its line end) into word offsets, as Redis's
/// `sdssplitargs` does, refusing words whose bytes would differ from the frame's.
fn split_inline(line: &[u8]) -> Result<Args, ProtocolError> {
    let mut args = Args::new();
    let mut i = 0;
    let n = line.len();
    loop {
        while i < n && is_space(line[i]) {
            i += 1;
        }
        if i == n {
            return Ok(args);
        }
        let q = line[i];
        if q == b'"' || q == b'\'' {
            let start = i + 1;
            let mut j = start;
            loop {
                match line.get(j) {
                    None => return Err(ProtocolError::UnbalancedQuotes),
                    Some(&c) if c == q => break,
                    // In double quotes every backslash escapes; in single quotes only `\'`.
                    Some(b'\\') if q == b'"' || line.get(j + 1) == Some(&b'\'') => {
                        return Err(ProtocolError::UnsupportedInlineEscape)
                    }
                    Some(_) => j += 1,
                }
            }
            // Redis requires a blank (or the end) right after the closing quote.
            if j + 1 < n && !is_space(line[j + 1]) {
                return Err(ProtocolError::UnbalancedQuotes);
            }
            args.push((start, j));
            i = j + 1;
        } else {
            let start = i;
            while i < n && !matches!(line[i], b' ' | b'\t' | b'\n' | b'\r') {
                if line[i] == b'"' || line[i] == b'\'' {
                    // `ab"cd"` is the word `abcd` in Redis: not a slice of the frame.
                    return Err(ProtocolError::UnsupportedInlineEscape);
                }
                i += 1;
            }
            args.push((start, i));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn scanner() -> RequestScanner {
        RequestScanner::new(Limits::default())
    }

    proptest::proptest! {
        /// The one-pass way for usual headers answers exactly as the general one,
        /// bytes examined included, on lines made of what headers are made of.
        #[test]
        fn the_header_fast_path_agrees_with_the_general_way(
            line in proptest::collection::vec(
                proptest::sample::select(b"0123456789-\r\nx".to_vec()), 0..40),
            first in proptest::sample::select(b"1234567890".to_vec()),
        ) {
            let mut buf = vec![b'$', first];
            buf.extend_from_slice(&line);
            let (mut a, mut b) = (0u64, 0u64);
            proptest::prop_assert_eq!(header(&buf, 0, &mut a), header_general(&buf, 0, &mut b));
            proptest::prop_assert_eq!(a, b);
        }
    }

    #[test]
    fn usual_headers_take_the_fast_path_with_the_same_answers() {
        for (line, want) in [
            (&b"$3\r\n"[..], Header::Found(2, Some(3))),
            (b"$0\r\n", Header::Found(2, Some(0))),
            (b"$012\r\n", Header::Found(4, None)),
            (b"$-1\r\n", Header::Found(3, Some(-1))),
            (
                b"$123456789012345678\r\n",
                Header::Found(19, Some(123_456_789_012_345_678)),
            ),
            (
                b"$9223372036854775807\r\n",
                Header::Found(20, Some(i64::MAX)),
            ),
            (b"$9223372036854775808\r\n", Header::Found(20, None)),
            (b"$12\r", Header::Incomplete),
            (b"$12\rx", Header::BadEnd),
        ] {
            let (mut a, mut b) = (0u64, 0u64);
            assert_eq!(
                header(line, 0, &mut a),
                want,
                "{:?}",
                String::from_utf8_lossy(line)
            );
            assert_eq!(header_general(line, 0, &mut b), want);
            assert_eq!(a, b);
        }
    }

    fn scan_all(buf: &[u8]) -> Result<Option<ParsedRequest>, ProtocolError> {
        scanner().scan(buf)
    }

    /// The arguments of `p` as byte slices of `buf`.
    fn args<'a>(buf: &'a [u8], p: &ParsedRequest) -> Vec<&'a [u8]> {
        p.args.iter().map(|&(s, e)| &buf[s..e]).collect()
    }

    fn encode(parts: &[&[u8]]) -> Vec<u8> {
        encode_command(parts)
    }

    /// Feeds every prefix of `buf` to one scanner: `None` until the whole frame is
    /// there, then the same result as scanning it all at once.
    fn assert_byte_by_byte(buf: &[u8]) {
        let whole = scan_all(buf);
        let mut s = scanner();
        for n in 1..=buf.len() {
            let r = s.scan(&buf[..n]);
            match r {
                Ok(None) => continue,
                other => {
                    assert_eq!(
                        other,
                        whole,
                        "prefix {n} of {:?}",
                        String::from_utf8_lossy(buf)
                    );
                    if let Ok(Some(p)) = &other {
                        assert_eq!(p.len, n, "completed at the wrong byte");
                    }
                    return;
                }
            }
        }
        assert_eq!(whole, Ok(None));
    }

    #[test]
    fn multibulk() {
        let buf = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n";
        let p = scan_all(buf).unwrap().unwrap();
        assert_eq!(p.len, buf.len());
        assert!(!p.inline);
        assert_eq!(args(buf, &p), vec![&b"SET"[..], b"k", b"hello"]);
        assert!(!p.args.spilled(), "≤ 6 args must not allocate");
        assert_byte_by_byte(buf);
    }

    #[test]
    fn binary_and_empty_bulks() {
        let buf = encode(&[b"SET", b"a\r\nb\0\xff", b""]);
        let p = scan_all(&buf).unwrap().unwrap();
        assert_eq!(args(&buf, &p), vec![&b"SET"[..], b"a\r\nb\0\xff", b""]);
        assert_byte_by_byte(&buf);
    }

    #[test]
    fn empty_multibulk_is_ignored() {
        for buf in [&b"*0\r\n"[..], b"*-1\r\n", b"*-7\r\n"] {
            let p = scan_all(buf).unwrap().unwrap();
            assert_eq!(p.len, buf.len());
            assert!(p.args.is_empty());
            assert_byte_by_byte(buf);
        }
    }

    #[test]
    fn multibulk_errors() {
        use ProtocolError::*;
        let cases: &[(&[u8], ProtocolError)] = &[
            (b"*x\r\n", InvalidMultibulkLength),
            (b"*\r\n", InvalidMultibulkLength),
            (b"*+1\r\n", InvalidMultibulkLength),
            (b"*01\r\n", InvalidMultibulkLength),
            (b"*1\rx", InvalidMultibulkLength),
            (b"*99999999999999999999\r\n", InvalidMultibulkLength),
            (b"*1048577\r\n", InvalidMultibulkLength),
            (b"*111111111111111111111111111111111111", HeaderTooBig),
            (b"*1\r\n:1\r\n", ExpectedBulk(':')),
            (b"*1\r\n$-1\r\n", InvalidBulkLength),
            (b"*1\r\n$x\r\n", InvalidBulkLength),
            (b"*1\r\n$536870913\r\n", InvalidBulkLength),
            (
                b"*1\r\n$1111111111111111111111111111111111111",
                InvalidBulkLength,
            ),
            (b"*1\r\n$3\r\nabcXY", MissingCrlf),
            (b"*2\r\n$1\r\na\r\n$1\r\nb\n\n", MissingCrlf),
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
            max_bulk_len: 10,
            max_array_len: 3,
            max_inline_len: 8,
        };
        let mut s = RequestScanner::new(limits);
        // Nothing of the announced 11 bytes is there yet: refused at once.
        assert_eq!(
            s.scan(b"*1\r\n$11\r\n"),
            Err(ProtocolError::InvalidBulkLength)
        );
        assert_eq!(
            s.scan(b"*4\r\n"),
            Err(ProtocolError::InvalidMultibulkLength)
        );
        assert_eq!(s.scan(b"123456789"), Err(ProtocolError::InlineTooBig));
        assert_eq!(s.scan(b"12345678"), Ok(None));
        assert_eq!(s.scan(b"12345678\n").unwrap().unwrap().args.len(), 1);
        // At the limits exactly, accepted.
        let buf = encode(&[b"0123456789", b"x", b"y"]);
        assert_eq!(s.scan(&buf).unwrap().unwrap().len, buf.len());
    }

    #[test]
    fn huge_announced_lengths_allocate_nothing() {
        // 1M args announced, 512 MiB bulk announced: nothing is reserved for them.
        let mut s = scanner();
        assert_eq!(s.scan(b"*1048576\r\n$536870912\r\nab"), Ok(None));
        assert!(s.args.capacity() <= 1024);
        assert_eq!(s.bytes_examined(), 8 + 12 + 2);
    }

    #[test]
    fn inline() {
        let cases: &[(&[u8], &[&[u8]])] = &[
            (b"PING\r\n", &[b"PING"]),
            (b"PING\n", &[b"PING"]),
            (b"  SET \t k  v \r\n", &[b"SET", b"k", b"v"]),
            (b"\r\n", &[]),
            (b"\n", &[]),
            (b"   \n", &[]),
            (b"SET k \"a b\"\r\n", &[b"SET", b"k", b"a b"]),
            (b"SET 'k x' \"\"\n", &[b"SET", b"k x", b""]),
            (b"SET k 'a\\b'\n", &[b"SET", b"k", b"a\\b"]),
            (b"a\x0bb\n", &[b"a\x0bb"]),
        ];
        for (buf, want) in cases {
            let p = scan_all(buf).unwrap().unwrap();
            assert!(p.inline);
            assert_eq!(p.len, buf.len());
            assert_eq!(
                args(buf, &p),
                want.to_vec(),
                "{:?}",
                String::from_utf8_lossy(buf)
            );
            assert_byte_by_byte(buf);
        }
    }

    #[test]
    fn inline_errors() {
        use ProtocolError::*;
        let cases: &[(&[u8], ProtocolError)] = &[
            (b"SET \"k\n", UnbalancedQuotes),
            (b"SET 'k\r\n", UnbalancedQuotes),
            (b"SET \"k\"x\n", UnbalancedQuotes),
            (b"SET \"a\\nb\"\n", UnsupportedInlineEscape),
            (b"SET 'a\\'b'\n", UnsupportedInlineEscape),
            (b"SET a\"b\"\n", UnsupportedInlineEscape),
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
        let long = vec![b'a'; 64 * 1024 + 1];
        assert_eq!(scan_all(&long), Err(InlineTooBig));
        let mut ok = vec![b'a'; 64 * 1024];
        ok.push(b'\n');
        assert_eq!(scan_all(&ok).unwrap().unwrap().args.len(), 1);
    }

    #[test]
    fn long_inline_line_is_searched_once() {
        let mut line = vec![b'a'; 60_000];
        line.extend_from_slice(b"\r\n");
        let mut s = scanner();
        let mut result = None;
        for n in (1..=line.len()).step_by(100).chain([line.len()]) {
            if let Some(p) = s.scan(&line[..n]).unwrap() {
                result = Some(p);
                break;
            }
        }
        assert_eq!(result.unwrap().len, line.len());
        // One search for the newline plus one pass to split words.
        assert!(s.bytes_examined() <= 2 * line.len() as u64 + 2);
    }

    #[test]
    fn pipelined_requests() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&encode(&[b"GET", b"a"]));
        buf.extend_from_slice(b"PING\r\n");
        buf.extend_from_slice(b"*0\r\n");
        buf.extend_from_slice(&encode(&[b"SET", b"b", b"12345"]));
        buf.extend_from_slice(b"*2\r\n$3\r\nGE"); // an incomplete one at the end
        let mut s = scanner();
        let mut seen = Vec::new();
        let mut off = 0;
        while let Some(p) = s.scan(&buf[off..]).unwrap() {
            let frame = &buf[off..off + p.len];
            seen.push(
                args(frame, &p)
                    .iter()
                    .map(|a| a.to_vec())
                    .collect::<Vec<_>>(),
            );
            off += p.len;
        }
        assert_eq!(
            seen,
            vec![
                vec![b"GET".to_vec(), b"a".to_vec()],
                vec![b"PING".to_vec()],
                vec![],
                vec![b"SET".to_vec(), b"b".to_vec(), b"12345".to_vec()],
            ]
        );
        assert_eq!(&buf[off..], b"*2\r\n$3\r\nGE");
    }

    /// A 2.6 MB MSET fed in 16 KiB reads is scanned about once, not once per read.
    #[test]
    fn big_mset_in_16k_pieces_is_one_pass() {
        let keys: Vec<Vec<u8>> = (0..10_000)
            .map(|i| format!("key:{i:06}").into_bytes())
            .collect();
        let value = vec![b'v'; 250];
        let mut parts: Vec<&[u8]> = vec![b"MSET"];
        for k in &keys {
            parts.push(k);
            parts.push(&value);
        }
        let buf = encode(&parts);
        assert!(buf.len() > 2_600_000);
        let mut s = scanner();
        let mut calls = 0u64;
        let mut got = None;
        let mut n = 0;
        while got.is_none() {
            n = (n + 16 * 1024).min(buf.len());
            calls += 1;
            got = s.scan(&buf[..n]).unwrap();
        }
        let p = got.unwrap();
        assert_eq!(p.len, buf.len());
        assert_eq!(p.args.len(), 20_001);
        assert_eq!(&buf[p.args[20_000].0..p.args[20_000].1], &value[..]);
        // Headers and CRLFs only, plus at most one bounded header re-read per call.
        let headers = 20_001 * 8 + 10;
        assert!(
            s.bytes_examined() <= headers + calls * 34,
            "examined {} of {} bytes in {calls} calls",
            s.bytes_examined(),
            buf.len()
        );
    }

    /// Many tiny arguments in small pieces: still about one pass over the headers.
    #[test]
    fn tiny_args_in_pieces_is_one_pass() {
        let parts: Vec<&[u8]> = std::iter::repeat_n(&b"x"[..], 5000).collect();
        let buf = encode(&parts);
        let mut s = scanner();
        let mut calls = 0u64;
        let mut n = 0;
        loop {
            n = (n + 100).min(buf.len());
            calls += 1;
            if let Some(p) = s.scan(&buf[..n]).unwrap() {
                assert_eq!(p.len, buf.len());
                break;
            }
        }
        assert!(s.bytes_examined() <= buf.len() as u64 + calls * 34);
    }

    /// Lengths of every magnitude are written as `to_string` would.
    #[test]
    fn headers_and_bulks_carry_their_lengths_in_decimal() {
        for n in [0usize, 1, 9, 10, 99, 100, 12_345, usize::MAX] {
            let mut out = Vec::new();
            encode_array_header(&mut out, n);
            assert_eq!(out, format!("*{n}\r\n").into_bytes());
        }
        let mut out = Vec::new();
        encode_bulk(&mut out, &[b'x'; 1234]);
        assert_eq!(&out[..7], b"$1234\r\n");
        assert_eq!(out.len(), 7 + 1234 + 2);
    }

    #[test]
    fn parse_i64_is_strict() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-1"), Some(-1));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"-0",
            b"+1",
            b"01",
            b" 1",
            b"1 ",
            b"9223372036854775808",
        ] {
            assert_eq!(parse_i64(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn request_wraps_a_frame() {
        let buf = b"SET k v\r\n";
        let p = scan_all(buf).unwrap().unwrap();
        let r = Request::new(Bytes::from_static(buf), p);
        assert_eq!(r.argc(), 3);
        assert_eq!(r.arg(2), b"v");
        assert_eq!(r.arg(3), b"");
        assert_eq!(&r.to_resp()[..], &encode(&[b"SET", b"k", b"v"])[..]);
    }
}
