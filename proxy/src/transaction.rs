//! MULTI, EXEC, DISCARD, WATCH, UNWATCH. Every key of a transaction must hash to
//! one slot, so it runs whole on the one group that owns that slot.
//!
//! Without WATCH the proxy keeps the queued commands itself (answering `+QUEUED`
//! after checking each as Redis would) and sends `MULTI`, the commands and `EXEC`
//! together at EXEC: one batch on a shared connection, which no other client's
//! request can split. The slot's owner is decided then, after moving the keys if
//! the slot is migrating, so a transaction never runs half on each side.
//!
//! WATCH pins a dedicated connection to the slot's owner: the WATCH, every later
//! request of the client for that server, and the final MULTI..EXEC go there in
//! order. If the slot starts to migrate or changes owner before EXEC, the watched
//! keys may no longer be on that server, so EXEC answers `-EXECABORT` instead.
//!
//! This module holds the transaction state; the session's side (the commands as a
//! client sends them) is `crate::session::transaction`.

use bytes::Bytes;

/// The state of an open transaction: MULTI given, or keys watched, or both.
#[derive(Debug, Default)]
pub struct Tx {
    /// MULTI was given: commands are queued until EXEC or DISCARD.
    pub(crate) multi: bool,
    /// The queued commands, as the client sent them.
    pub(crate) queued: Vec<Bytes>,
    /// Keys of the queued commands (moved first if their slot migrates).
    pub(crate) keys: Vec<Bytes>,
    /// The slot every key must hash to, once a key was seen.
    pub(crate) slot: Option<u16>,
    /// A queued command was refused: EXEC answers EXECABORT.
    pub(crate) dirty: bool,
    /// The slot of the watched keys while a dedicated connection is pinned.
    pub(crate) watch_slot: Option<u16>,
}

pub(crate) const EXECABORT_ERRORS: &str =
    "EXECABORT Transaction discarded because of previous errors.";
pub(crate) const EXECABORT_MIGRATING: &str =
    "EXECABORT Transaction discarded because its slot started to migrate";

pub(crate) fn multi_frame() -> Bytes {
    Bytes::from_static(b"*1\r\n$5\r\nMULTI\r\n")
}

pub(crate) fn unwatch_frame() -> Bytes {
    Bytes::from_static(b"*1\r\n$7\r\nUNWATCH\r\n")
}
