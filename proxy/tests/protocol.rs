//! Protocol corner cases with raw bytes: every limit answers Redis's error text and
//! closes the connection; inline commands work.
#![allow(clippy::unwrap_used)]

mod support;

use support::{Cluster, Value};

fn assert_protocol_error(c: &Cluster, raw: &[u8], text: &str) {
    let mut p = c.proxy.conn();
    // A good request first, pipelined with the bad one: its reply must still arrive.
    let mut bytes = kodis_common::test_util::encode(&[b"PING"]);
    bytes.extend_from_slice(raw);
    p.send_raw(&bytes);
    assert_eq!(p.read(), Value::Simple("PONG".into()));
    assert_eq!(
        p.read(),
        Value::Error(text.into()),
        "for {:?}",
        String::from_utf8_lossy(&raw[..raw.len().min(40)])
    );
    assert!(
        p.is_closed(),
        "connection must close after a protocol error"
    );
}

#[test]
fn over_limit_lengths_are_refused_before_buffering() {
    let c = Cluster::start_with(1, |cfg| {
        cfg.limits.max_bulk_len = 1024;
        cfg.limits.max_array_len = 16;
        cfg.limits.max_inline_len = 256;
    });
    assert_protocol_error(
        &c,
        b"*1\r\n$1025\r\n",
        "ERR Protocol error: invalid bulk length",
    );
    assert_protocol_error(
        &c,
        b"*17\r\n",
        "ERR Protocol error: invalid multibulk length",
    );
    assert_protocol_error(
        &c,
        &[b'x'; 300],
        "ERR Protocol error: too big inline request",
    );
    // Default limits: a 4 GiB bulk and a 2^31 array are refused at once.
    let d = Cluster::start(1);
    assert_protocol_error(
        &d,
        b"*2\r\n$3\r\nGET\r\n$4294967296\r\n",
        "ERR Protocol error: invalid bulk length",
    );
    assert_protocol_error(
        &d,
        b"*2147483648\r\n",
        "ERR Protocol error: invalid multibulk length",
    );
    // Nothing of the announced size was allocated: the proxy is still small and serving.
    let mut p = d.proxy.conn();
    assert_eq!(p.cmd(&["PING"]), Value::Simple("PONG".into()));
    assert!(
        d.proxy
            .metric("kodis_proxy_errors_total{kind=\"protocol\"}")
            >= 2.0
    );
}

#[test]
fn malformed_requests_are_refused() {
    let c = Cluster::start(1);
    assert_protocol_error(
        &c,
        b"*1\r\n+PING\r\n",
        "ERR Protocol error: expected '$', got '+'",
    );
    assert_protocol_error(
        &c,
        b"*x\r\n",
        "ERR Protocol error: invalid multibulk length",
    );
    assert_protocol_error(
        &c,
        b"*1\r\n$-5\r\n",
        "ERR Protocol error: invalid bulk length",
    );
}

#[test]
fn inline_commands_work() {
    let c = Cluster::start(2);
    let mut p = c.proxy.conn();
    p.send_raw(b"SET inline:a hello\r\nGET inline:a\r\nPING\n\r\n");
    assert_eq!(p.read(), Value::ok());
    assert_eq!(p.read(), Value::bulk("hello"));
    assert_eq!(p.read(), Value::Simple("PONG".into()));
    p.send_raw(b"MGET inline:a nokey\r\n");
    assert_eq!(
        p.read(),
        Value::Array(Some(vec![Value::bulk("hello"), Value::Bulk(None)]))
    );
}

#[test]
fn a_request_split_over_many_reads_is_served() {
    let c = Cluster::start(2);
    let mut p = c.proxy.conn();
    let big = vec![b'v'; 3 * 1024 * 1024];
    let raw = kodis_common::test_util::encode(&[b"SET", b"big", &big]);
    for chunk in raw.chunks(16 * 1024) {
        p.send_raw(chunk);
    }
    assert_eq!(p.read(), Value::ok());
    assert_eq!(p.cmd(&["STRLEN", "big"]), Value::Int(3 * 1024 * 1024));
    match p.cmd(&["GET", "big"]) {
        Value::Bulk(Some(v)) => assert!(v == big),
        other => panic!("{other:?}"),
    }
}
