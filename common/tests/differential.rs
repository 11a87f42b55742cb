//! Differential tests: our RESP scanners against `redis-protocol`'s decoder on random
//! valid frames, whole, followed by other bytes, and fed in random pieces.
#![allow(clippy::unwrap_used)]

use kodis_common::resp::{
    array_elements, encode_array_header, encode_bulk, encode_command, reply_integer, Limits,
    ReplyScanner, RequestScanner,
};
use proptest::prelude::*;
use redis_protocol::resp2::{decode::decode, types::OwnedFrame};

/// A RESP2 reply value, encoded by the test itself.
#[derive(Debug, Clone)]
enum Value {
    Simple(Vec<u8>),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    NullBulk,
    NullArray,
    Array(Vec<Value>),
}

impl Value {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Simple(s) => {
                out.push(b'+');
                out.extend_from_slice(s);
                out.extend_from_slice(b"\r\n");
            }
            Value::Error(e) => {
                out.push(b'-');
                out.extend_from_slice(e.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Value::Int(i) => out.extend_from_slice(format!(":{i}\r\n").as_bytes()),
            Value::Bulk(b) => encode_bulk(out, b),
            Value::NullBulk => out.extend_from_slice(b"$-1\r\n"),
            Value::NullArray => out.extend_from_slice(b"*-1\r\n"),
            Value::Array(items) => {
                encode_array_header(out, items.len());
                for v in items {
                    v.encode(out);
                }
            }
        }
    }

    /// What `redis-protocol` should decode this value to.
    fn expected(&self) -> OwnedFrame {
        match self {
            Value::Simple(s) => OwnedFrame::SimpleString(s.clone()),
            Value::Error(e) => OwnedFrame::Error(e.clone()),
            Value::Int(i) => OwnedFrame::Integer(*i),
            Value::Bulk(b) => OwnedFrame::BulkString(b.clone()),
            Value::NullBulk | Value::NullArray => OwnedFrame::Null,
            Value::Array(items) => OwnedFrame::Array(items.iter().map(Value::expected).collect()),
        }
    }
}

fn value() -> impl Strategy<Value = Value> {
    let line = prop::collection::vec(
        any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'),
        0..40,
    );
    let leaf = prop_oneof![
        line.prop_map(Value::Simple),
        "[ -~]{0,40}".prop_map(Value::Error),
        any::<i64>().prop_map(Value::Int),
        prop::collection::vec(any::<u8>(), 0..100).prop_map(Value::Bulk),
        prop::collection::vec(any::<u8>(), 0..3000).prop_map(Value::Bulk),
        Just(Value::NullBulk),
        Just(Value::NullArray),
    ];
    leaf.prop_recursive(5, 64, 10, |inner| {
        prop::collection::vec(inner, 0..10).prop_map(Value::Array)
    })
}

/// What follows the frame in the buffer: nothing, random bytes, or another frame.
fn tail() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        prop::collection::vec(any::<u8>(), 1..50),
        value().prop_map(|v| {
            let mut out = Vec::new();
            v.encode(&mut out);
            out
        }),
    ]
}

/// Random bytes, mostly from RESP's alphabet so that they reach deep into the scanners.
fn noise() -> impl Strategy<Value = Vec<u8>> {
    const ALPHABET: &[u8] = b"*$+-:0123456789\r\n\r\n\r\n \t\"'\\ab";
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        prop::collection::vec(prop::sample::select(ALPHABET), 0..200),
    ]
}

/// Decodes a complete reply frame with our helpers only, to compare content.
fn ours(frame: &[u8]) -> OwnedFrame {
    let body = || frame[1..frame.len() - 2].to_vec();
    match frame[0] {
        b'+' => OwnedFrame::SimpleString(body()),
        b'-' => OwnedFrame::Error(String::from_utf8(body()).unwrap()),
        b':' => OwnedFrame::Integer(reply_integer(frame).unwrap()),
        b'$' if frame.starts_with(b"$-1\r\n") => OwnedFrame::Null,
        b'$' => {
            let cr = frame.iter().position(|&b| b == b'\r').unwrap();
            OwnedFrame::BulkString(frame[cr + 2..frame.len() - 2].to_vec())
        }
        b'*' if frame.starts_with(b"*-1\r\n") => OwnedFrame::Null,
        b'*' => OwnedFrame::Array(
            array_elements(frame)
                .unwrap()
                .into_iter()
                .map(ours)
                .collect(),
        ),
        other => panic!("unexpected type byte {other}"),
    }
}

/// Split points inside a buffer, as fractions so they scale with its length.
fn splits() -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(0.0..1.0f64, 0..8)
}

fn cut_points(len: usize, fractions: &[f64]) -> Vec<usize> {
    let mut cuts: Vec<usize> = fractions
        .iter()
        .map(|f| (f * len as f64) as usize)
        .collect();
    cuts.sort_unstable();
    cuts.push(len);
    cuts
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn replies_agree_with_redis_protocol(v in value(), tail in tail(), fractions in splits()) {
        let mut buf = Vec::new();
        v.encode(&mut buf);
        let frame_len = buf.len();
        buf.extend_from_slice(&tail);

        let mut s = ReplyScanner::new(Limits::default());
        let len = s.scan(&buf).unwrap().unwrap();
        prop_assert_eq!(len, frame_len);
        let (theirs, their_len) = decode(&buf).unwrap().unwrap();
        prop_assert_eq!(their_len, frame_len);
        prop_assert_eq!(&theirs, &v.expected());
        prop_assert_eq!(ours(&buf[..len]), theirs);

        // In pieces: nothing until the frame is all there, then the same length.
        let mut s = ReplyScanner::new(Limits::default());
        for cut in cut_points(frame_len, &fractions) {
            let r = s.scan(&buf[..cut]).unwrap();
            if cut < frame_len {
                prop_assert_eq!(r, None);
                prop_assert_eq!(decode(&buf[..cut]).unwrap(), None);
            } else {
                prop_assert_eq!(r, Some(frame_len));
            }
        }
    }

    #[test]
    fn requests_agree_with_redis_protocol(
        parts in prop::collection::vec(
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..40),
                prop::collection::vec(any::<u8>(), 0..5000),
            ],
            0..20,
        ),
        tail in tail(),
        fractions in splits(),
    ) {
        let mut buf = encode_command(&parts);
        let frame_len = buf.len();
        buf.extend_from_slice(&tail);

        let mut s = RequestScanner::new(Limits::default());
        let p = s.scan(&buf).unwrap().unwrap();
        prop_assert_eq!(p.len, frame_len);
        prop_assert!(!p.inline);
        let args: Vec<Vec<u8>> = p.args.iter().map(|&(a, b)| buf[a..b].to_vec()).collect();
        prop_assert_eq!(&args, &parts);

        let (theirs, their_len) = decode(&buf).unwrap().unwrap();
        prop_assert_eq!(their_len, frame_len);
        let their_args: Vec<Vec<u8>> = match theirs {
            OwnedFrame::Array(items) => items
                .into_iter()
                .map(|f| match f {
                    OwnedFrame::BulkString(b) => b,
                    other => panic!("not a bulk string: {other:?}"),
                })
                .collect(),
            other => panic!("not an array: {other:?}"),
        };
        prop_assert_eq!(&args, &their_args);

        let mut s = RequestScanner::new(Limits::default());
        for cut in cut_points(frame_len, &fractions) {
            let r = s.scan(&buf[..cut]).unwrap();
            if cut < frame_len {
                prop_assert_eq!(r, None);
            } else {
                prop_assert_eq!(r.as_ref(), Some(&p));
            }
        }
    }

    /// Arbitrary bytes: no panic, and scanning in pieces gives what one scan gives.
    #[test]
    fn arbitrary_bytes_same_in_pieces(buf in noise(), fractions in splits()) {
        let whole_req = RequestScanner::new(Limits::default()).scan(&buf);
        let whole_rep = ReplyScanner::new(Limits::default()).scan(&buf);
        let mut req = RequestScanner::new(Limits::default());
        let mut rep = ReplyScanner::new(Limits::default());
        let (mut req_done, mut rep_done) = (false, false);
        for cut in cut_points(buf.len(), &fractions) {
            if !req_done {
                match req.scan(&buf[..cut]) {
                    Ok(None) => {}
                    r => {
                        prop_assert_eq!(&r, &whole_req);
                        req_done = true;
                    }
                }
            }
            if !rep_done {
                match rep.scan(&buf[..cut]) {
                    Ok(None) => {}
                    r => {
                        prop_assert_eq!(&r, &whole_rep);
                        rep_done = true;
                    }
                }
            }
        }
        if !req_done {
            prop_assert_eq!(whole_req, Ok(None));
        }
        if !rep_done {
            prop_assert_eq!(whole_rep, Ok(None));
        }
    }
}
