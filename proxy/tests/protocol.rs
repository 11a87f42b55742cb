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

/// Before AUTH, when a password is set, Redis's tight limits apply (10 arguments of
/// at most 16 KiB); after it, the configured ones.
#[test]
fn unauthenticated_clients_get_tight_limits() {
    let c = Cluster::start_with(1, |cfg| cfg.password = Some("pw".into()));
    let mut args: Vec<String> = vec!["MSET".into()];
    for i in 0..10 {
        args.push(format!("k{i}"));
        args.push("v".into());
    }
    let refs: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    let raw = kodis_common::test_util::encode(&refs);
    let mut p = c.proxy.conn();
    p.send_raw(&raw);
    assert_eq!(
        p.read(),
        Value::Error("ERR Protocol error: invalid multibulk length".into())
    );
    assert!(p.is_closed());
    let mut q = c.proxy.conn();
    assert_eq!(q.cmd(&["AUTH", "pw"]), Value::ok());
    q.send_raw(&raw);
    assert_eq!(q.read(), Value::ok());
}

/// A client that writes a whole pipeline before reading any reply (as client
/// libraries do) is served, even when the replies are far larger than the sockets'
/// buffers.
#[test]
fn a_pipeline_written_whole_before_reading_completes() {
    let c = Cluster::start(2);
    let mut p = c.proxy.conn();
    let value = vec![b'v'; 4096];
    assert_eq!(p.cmd_bytes(&[b"SET", b"{p}big", &value]), Value::ok());
    let n = 6000; // about 24 MB of replies
    let mut raw = Vec::new();
    for _ in 0..n {
        raw.extend(kodis_common::test_util::encode(&[b"GET", b"{p}big"]));
    }
    p.send_raw(&raw);
    for i in 0..n {
        match p.read() {
            Value::Bulk(Some(v)) => assert_eq!(v.len(), 4096, "reply {i}"),
            other => panic!("reply {i}: {other:?}"),
        }
    }
}

/// Backend replies are not held to the client request limits: Redis sets no limit
/// on reply size, and a long reply must not break the shared backend connection.
#[test]
fn long_replies_pass_whatever_the_request_limits() {
    let c = Cluster::start_with(1, |cfg| cfg.limits.max_array_len = 16);
    let mut p = c.proxy.conn();
    let mut args: Vec<String> = vec!["RPUSH".into(), "list".into()];
    args.extend((0..14).map(|i| i.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    for round in 1..=6 {
        assert_eq!(p.cmd(&refs), Value::Int(14 * round));
    }
    match p.cmd(&["LRANGE", "list", "0", "-1"]) {
        Value::Array(Some(v)) => assert_eq!(v.len(), 84),
        other => panic!("{other:?}"),
    }
    assert_eq!(p.cmd(&["LLEN", "list"]), Value::Int(84));
}
