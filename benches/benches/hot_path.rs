//! Criterion benches of the request path's CPU-bound pieces: the RESP scanners (with
//! `redis-protocol`'s decoder on the same frame for comparison) and the slot function.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kodis_common::resp::{
    encode_array_header, encode_bulk, encode_command, Limits, ReplyScanner, RequestScanner,
};
use kodis_common::slot::key_slot;

fn command(parts: &[&[u8]]) -> Vec<u8> {
    encode_command(parts)
}

/// Scans every request in `buf`, as a session does with one read's worth of bytes.
fn scan_requests(s: &mut RequestScanner, buf: &[u8]) -> usize {
    let mut off = 0;
    let mut args = 0;
    while let Ok(Some(p)) = s.scan(&buf[off..]) {
        off += p.len;
        args += p.args.len();
    }
    args
}

fn requests(c: &mut Criterion) {
    let set = command(&[b"SET", b"key:000042", b"value-0042"]);
    let keys: Vec<String> = (0..10).map(|i| format!("key:{i:06}")).collect();
    let mut mset: Vec<&[u8]> = vec![b"MSET"];
    for k in &keys {
        mset.push(k.as_bytes());
        mset.push(b"value-of-some-length");
    }
    let mset = command(&mset);
    let gets: Vec<u8> = (0..16)
        .flat_map(|i| command(&[b"GET", format!("key:{i:06}").as_bytes()]))
        .collect();

    let mut g = c.benchmark_group("request");
    let mut s = RequestScanner::new(Limits::default());
    g.throughput(Throughput::Elements(1));
    g.bench_function("scan_set", |b| b.iter(|| s.scan(black_box(&set))));
    g.bench_function("redis_protocol_decode_set", |b| {
        b.iter(|| redis_protocol::resp2::decode::decode(black_box(&set)))
    });
    g.bench_function("scan_mset_10_keys", |b| b.iter(|| s.scan(black_box(&mset))));
    g.throughput(Throughput::Elements(16));
    g.bench_function("scan_pipeline_16_gets", |b| {
        b.iter(|| scan_requests(&mut s, black_box(&gets)))
    });
    g.finish();
}

fn replies(c: &mut Criterion) {
    let mut bulk = Vec::new();
    encode_bulk(&mut bulk, &[b'v'; 100]);
    let mut mget = Vec::new();
    encode_array_header(&mut mget, 10);
    for i in 0..10 {
        if i == 3 {
            mget.extend_from_slice(b"$-1\r\n");
        } else {
            encode_bulk(&mut mget, b"value-of-some-length");
        }
    }

    let mut g = c.benchmark_group("reply");
    let mut s = ReplyScanner::new(Limits::default());
    g.bench_function("scan_bulk_100", |b| b.iter(|| s.scan(black_box(&bulk))));
    g.bench_function("scan_mget_10", |b| b.iter(|| s.scan(black_box(&mget))));
    g.finish();
}

/// RESP3 for a RESP3 client: what the proxy does (the reply of a RESP3 backend
/// connection passes through: scanned, as every reply is) against the lower bound of
/// the alternative, translating a RESP2 reply (split it into elements and write them
/// again under a map header, scores as doubles), before any per-command knowledge of
/// which reply is a map, a set or a double.
fn resp3(c: &mut Criterion) {
    // HGETALL of 10 fields, as RESP2 and as RESP3.
    let (mut v2, mut v3) = (Vec::new(), b"%10\r\n".to_vec());
    encode_array_header(&mut v2, 20);
    for i in 0..10 {
        for out in [&mut v2, &mut v3] {
            encode_bulk(out, format!("field-{i}").as_bytes());
            encode_bulk(out, b"value-of-some-length");
        }
    }
    // ZRANGE 0 9 WITHSCORES, as RESP2 (scores are bulk strings).
    let mut z2 = Vec::new();
    encode_array_header(&mut z2, 20);
    for i in 0..10 {
        encode_bulk(&mut z2, format!("member-{i}").as_bytes());
        encode_bulk(&mut z2, format!("{}.5", i * 10).as_bytes());
    }
    let translate_map = |r: &[u8], out: &mut Vec<u8>| {
        out.clear();
        let e = kodis_common::resp::array_elements(r).expect("an array");
        out.extend_from_slice(format!("%{}\r\n", e.len() / 2).as_bytes());
        for x in e {
            out.extend_from_slice(x);
        }
        out.len()
    };
    let translate_scores = |r: &[u8], out: &mut Vec<u8>| {
        out.clear();
        let e = kodis_common::resp::array_elements(r).expect("an array");
        encode_array_header(out, e.len() / 2);
        for pair in e.chunks(2) {
            out.extend_from_slice(b"*2\r\n");
            out.extend_from_slice(pair[0]);
            // `$4\r\n10.5\r\n` -> `,10.5\r\n`
            let body = &pair[1][pair[1]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(0, |i| i + 1)..];
            out.push(b',');
            out.extend_from_slice(body);
        }
        out.len()
    };
    let mut g = c.benchmark_group("resp3");
    let mut s = ReplyScanner::new(Limits::default());
    let mut out = Vec::with_capacity(1024);
    g.bench_function("pass_through_hgetall_10", |b| {
        b.iter(|| s.scan(black_box(&v3)))
    });
    g.bench_function("translate_hgetall_10", |b| {
        b.iter(|| {
            let _ = s.scan(black_box(&v2));
            translate_map(black_box(&v2), &mut out)
        })
    });
    g.bench_function("translate_zrange_withscores_10", |b| {
        b.iter(|| {
            let _ = s.scan(black_box(&z2));
            translate_scores(black_box(&z2), &mut out)
        })
    });
    g.finish();
}

fn slots(c: &mut Criterion) {
    let mut g = c.benchmark_group("slot");
    g.bench_function("key_slot_10_bytes", |b| {
        b.iter(|| key_slot(black_box(b"key:000042")))
    });
    g.bench_function("key_slot_hash_tag", |b| {
        b.iter(|| key_slot(black_box(b"{user1000}.following")))
    });
    g.finish();
}

/// Everything routing does for one request before it is queued: find the command,
/// find its keys, hash them.
fn routing(c: &mut Criterion) {
    let metrics = kodis_proxy::metrics::Metrics::new();
    let commands = kodis_proxy::commands::Commands::new(
        kodis_proxy::command_source::Loaded {
            table: kodis_proxy::command_table::CommandTable::compiled_in(),
            redis_version: "7.0.15".into(),
            source: kodis_proxy::command_source::TableSource::CompiledIn,
        },
        &metrics,
        None,
        &[],
    );
    let request = |parts: &[&[u8]]| {
        let frame = bytes::Bytes::from(command(parts));
        let mut scanner = RequestScanner::new(Limits::default());
        let parsed = scanner.scan(&frame).ok().flatten().expect("complete frame");
        kodis_common::resp::Request::new(frame, parsed)
    };
    let route = |req: &kodis_common::resp::Request| -> usize {
        let entry = commands.get(req.arg(0)).expect("known command");
        let spec = commands.spec(req.arg(0), None).expect("spec");
        let keys = spec.try_key_positions(req).expect("keys");
        let _ = entry;
        keys.iter().map(|&k| key_slot(req.arg(k)) as usize).sum()
    };
    let mut g = c.benchmark_group("routing");
    let get = request(&[b"GET", b"key:000042"]);
    g.bench_function("get", |b| b.iter(|| route(black_box(&get))));
    let set = request(&[b"set", b"key:000042", b"value", b"EX", b"10"]);
    g.bench_function("set_ex", |b| b.iter(|| route(black_box(&set))));
    let eval = request(&[b"EVAL", b"return 1", b"2", b"{a}1", b"{a}2"]);
    g.bench_function("eval_2_keys", |b| b.iter(|| route(black_box(&eval))));
    g.finish();
}

/// The ACL check of a restricted user (a user without restrictions skips it): the
/// command bit, its key against two patterns.
fn acl(c: &mut Criterion) {
    let table = kodis_proxy::command_table::CommandTable::compiled_in();
    let users = [kodis_proxy::acl::UserConfig {
        name: "app".into(),
        password: Some("pw".into()),
        password_sha256: None,
        rules: "on ~cache:* %R~key:* +@all -@dangerous".into(),
    }];
    let acl = kodis_proxy::acl::Acl::build(&table, None, &users).expect("valid users");
    let app = acl.find(b"app").expect("app");
    let get: Vec<&[u8]> = vec![b"GET", b"key:000042"];
    let spec = table.lookup_args(&get).expect("get");
    let mut g = c.benchmark_group("acl");
    g.bench_function("get_restricted_user", |b| {
        b.iter(|| acl.check(app, black_box(spec), black_box(&get)))
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

criterion_group! {
    name = hot_path;
    config = config();
    targets = requests, replies, resp3, slots, routing, acl
}
criterion_main!(hot_path);
