//! The resumable reply scanner: RESP2 replies from backend servers.

use super::{Limits, ProtocolError};

/// Measures complete RESP2 replies (simple strings, errors, integers, bulk strings,
/// arrays nested to any depth, null bulk and null array) at the start of a buffer.
///
/// Same contract as [`super::RequestScanner`]: the buffer starts at the reply being
/// scanned, the caller only appends between calls, and removes `n` bytes after
/// `Ok(Some(n))`; the scanner then starts afresh.
#[derive(Debug, Clone)]
pub struct ReplyScanner {
    limits: Limits,
}

impl ReplyScanner {
    /// A scanner that enforces `limits`.
    pub fn new(limits: Limits) -> Self {
        Self { limits }
    }

    /// `Ok(Some(n))`: a complete reply of `n` bytes; `Ok(None)`: more bytes needed.
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        let _ = (buf, &self.limits);
        todo!("reply scanner")
    }
}

/// Splits one complete array reply into the raw frames of its elements. `None` when
/// `frame` is not a complete, well-formed array (a null array gives `None` too).
pub fn array_elements(frame: &[u8]) -> Option<Vec<&[u8]>> {
    let _ = frame;
    todo!("array_elements")
}

/// The value of a complete integer reply (`:123\r\n`), `None` for any other reply.
pub fn reply_integer(frame: &[u8]) -> Option<i64> {
    let _ = frame;
    todo!("reply_integer")
}
