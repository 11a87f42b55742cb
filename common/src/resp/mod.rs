//! RESP scanning for the request path: requests from clients and replies from backends.
//!
//! Both scanners work on a caller-owned buffer and return offsets, never copies, and
//! both are resumable: when a frame is incomplete they remember how far they got, so a
//! large frame arriving in many reads costs about one pass over its bytes.

mod reply;
mod request;

pub use reply::{array_elements, reply_bulk, reply_integer, ReplyScanner};
pub use request::{
    encode_array_header, encode_bulk, encode_command, encode_command_to, Args, ParsedRequest,
    Request, RequestScanner,
};

/// Size limits checked before any bytes are buffered for an announced length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest bulk string accepted, in bytes (default 512 MiB, as Redis).
    pub max_bulk_len: usize,
    /// Largest number of elements in one array (default 1,048,576).
    pub max_array_len: usize,
    /// Longest inline command line, in bytes (default 64 KiB, as Redis).
    pub max_inline_len: usize,
}

impl Limits {
    /// What Redis allows a client that has not authenticated yet (since 6.2.6,
    /// CVE-2021-32675): 10 arguments of at most 16 KiB, so an anonymous peer cannot
    /// make the server buffer large requests.
    pub const UNAUTHENTICATED: Limits = Limits {
        max_bulk_len: 16 * 1024,
        max_array_len: 10,
        max_inline_len: 16 * 1024,
    };

    /// Limits for replies from backend servers, which are trusted: Redis itself puts
    /// no limit on the size of a reply, so only lengths no machine could hold are
    /// refused.
    pub const REPLIES: Limits = Limits {
        max_bulk_len: 1 << 40,
        max_array_len: 1 << 40,
        max_inline_len: 1 << 40,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bulk_len: 512 * 1024 * 1024,
            max_array_len: 1024 * 1024,
            max_inline_len: 64 * 1024,
        }
    }
}

/// A malformed or over-limit frame. The `Display` text is what Redis itself says, so
/// the proxy can answer `-ERR <text>` and close the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// An array header that is not a number, is negative where not allowed, or is over the limit.
    #[error("Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    /// A bulk header that is not a number, or is over the limit.
    #[error("Protocol error: invalid bulk length")]
    InvalidBulkLength,
    /// An inline line longer than the limit.
    #[error("Protocol error: too big inline request")]
    InlineTooBig,
    /// An array header line longer than any valid header could be.
    #[error("Protocol error: too big mbulk count string")]
    HeaderTooBig,
    /// Inside a multibulk request, an element that is not a bulk string.
    #[error("Protocol error: expected '$', got '{0}'")]
    ExpectedBulk(char),
    /// A quote in an inline request that is never closed.
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    /// A bulk string (or a reply line) not followed by CRLF.
    #[error("Protocol error: bulk string not terminated by CRLF")]
    MissingCrlf,
    /// A reply that starts with a byte that is no RESP2 type.
    #[error("Protocol error: unknown reply type byte '{0}'")]
    UnknownReplyType(char),
    /// An integer line that is not a number.
    #[error("Protocol error: invalid integer")]
    InvalidInteger,
    /// An inline argument that uses a backslash escape, or a quote inside an unquoted
    /// word: its bytes differ from the frame's, which offsets cannot express.
    #[error(
        "Protocol error: escapes in inline requests are not supported, use the multibulk form"
    )]
    UnsupportedInlineEscape,
    /// A simple-string or error reply line longer than the bulk length limit.
    #[error("Protocol error: too big reply line")]
    LineTooBig,
}
