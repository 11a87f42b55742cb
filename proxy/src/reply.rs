//! Building RESP2 replies the proxy answers itself.

use bytes::Bytes;

/// `+OK`.
pub const OK: &[u8] = b"+OK\r\n";

/// A simple string `+s`.
pub fn simple(s: &str) -> Bytes {
    Bytes::from(format!("+{s}\r\n"))
}

/// An error line; `msg` starts with its code (`ERR ...`, `NOAUTH ...`).
pub fn error(msg: &str) -> Bytes {
    // An error line must not contain CR or LF.
    let clean: String = msg
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    Bytes::from(format!("-{clean}\r\n"))
}

/// An integer `:n`.
pub fn integer(n: i64) -> Bytes {
    Bytes::from(format!(":{n}\r\n"))
}

/// A bulk string.
pub fn bulk(data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + 16);
    kodis_common::resp::encode_bulk(&mut out, data);
    Bytes::from(out)
}

/// The null bulk string.
pub fn null() -> Bytes {
    Bytes::from_static(b"$-1\r\n")
}

/// An array of already-encoded elements.
pub fn array(items: &[Bytes]) -> Bytes {
    let mut out = Vec::with_capacity(16 + items.iter().map(Bytes::len).sum::<usize>());
    kodis_common::resp::encode_array_header(&mut out, items.len());
    for i in items {
        out.extend_from_slice(i);
    }
    Bytes::from(out)
}

/// Lower-cases an ASCII command name into `buf`, or `None` if it does not fit.
pub fn lowercase<'a>(name: &[u8], buf: &'a mut [u8; 32]) -> Option<&'a [u8]> {
    let out = buf.get_mut(..name.len())?;
    for (o, c) in out.iter_mut().zip(name) {
        *o = c.to_ascii_lowercase();
    }
    Some(out)
}
