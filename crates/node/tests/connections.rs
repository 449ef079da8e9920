//! Connections bounded in number and time (issue 19, finding 7), through the real node: a
//! half-sent request and an idle keep-alive are closed, connections over the limit get 503 at
//! once while the node keeps answering, and one client cannot hold every event stream or keep
//! one it no longer answers. On the code before, a half-sent request was held for over 100 s,
//! 20,000 idle connections exhausted the descriptors and one client held all 64 streams.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use gridmesh_node::serve::ServerLimits;
use gridmesh_node::RunningNode;

/// A node with small, quick bounds: `max_connections`, a 1 s head timeout, a 2 s idle timeout.
fn node(max_connections: usize) -> (tokio::runtime::Runtime, tempfile::TempDir, RunningNode) {
    common::dev_node(|cfg| {
        cfg.http = ServerLimits {
            max_connections,
            header_read_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(2),
        }
    })
}

fn connect(from: [u8; 4], to: SocketAddr) -> TcpStream {
    common::connect_from(from, to)
}

/// Seconds until the node closes `s`, and what it sent (as text).
fn until_closed(s: &mut TcpStream) -> (f64, String) {
    let (secs, got) = common::until_closed(s);
    (secs, String::from_utf8_lossy(&got).to_string())
}

fn status(addr: SocketAddr) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /v1/status HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let (_, text) = until_closed(&mut s);
    common::status_of(&text)
}

#[test]
fn half_sent_requests_and_idle_connections_are_closed() {
    let (rt, _dir, node) = node(64);
    let addr = node.api_addr;

    // A request whose head never ends: closed after the 1 s head timeout (408 or nothing).
    let mut slow = connect([127, 0, 0, 1], addr);
    write!(slow, "GET /v1/status HTTP/1.1\r\nhost: {addr}\r\nx-slow: ").unwrap();
    let (secs, _) = until_closed(&mut slow);
    assert!(secs < 5.0, "a half-sent request was held {secs:.1} s");

    // One byte of the head every 300 ms keeps the connection busy but not its request.
    let mut trickle = connect([127, 0, 0, 1], addr);
    let t0 = Instant::now();
    write!(trickle, "GET /v1/status HTTP/1.1\r\n").unwrap();
    let mut closed = false;
    while t0.elapsed() < Duration::from_secs(6) {
        std::thread::sleep(Duration::from_millis(300));
        if trickle.write_all(b"x").is_err() {
            closed = true;
            break;
        }
    }
    assert!(closed, "a trickled head was still open after 6 s");

    // A kept-alive connection after its answer waits for its next request's head no longer
    // than the head timeout (1 s).
    let mut idle = connect([127, 0, 0, 1], addr);
    write!(idle, "GET /v1/status HTTP/1.1\r\nhost: {addr}\r\n\r\n").unwrap();
    let (secs, text) = until_closed(&mut idle);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        (0.5..4.0).contains(&secs),
        "an idle connection was closed after {secs:.1} s"
    );
    assert_eq!(status(addr), 200);
    rt.block_on(node.stop()).unwrap();
}

#[test]
fn connections_over_the_limit_get_503_and_the_node_keeps_answering() {
    let (rt, _dir, node) = node(32);
    let addr = node.api_addr;
    // 32 idle connections take every place.
    let held: Vec<TcpStream> = (0..32).map(|_| connect([127, 0, 0, 1], addr)).collect();
    std::thread::sleep(Duration::from_millis(300));
    // 300 more are answered 503 at once (not left hanging), and none crashes the node.
    let t0 = Instant::now();
    for _ in 0..300 {
        let mut s = connect([127, 0, 0, 1], addr);
        let (_, text) = until_closed(&mut s);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 503"),
            "over the limit: {text}"
        );
        if !text.is_empty() {
            assert!(text.contains("\"error\":\"busy\""), "{text}");
        }
    }
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "refusals took {:?}",
        t0.elapsed()
    );
    // Once the idle ones time out, places are free again.
    std::thread::sleep(Duration::from_millis(2_500));
    assert_eq!(status(addr), 200);
    drop(held);
    rt.block_on(node.stop()).unwrap();
}

/// Opens a WebSocket to `/v1/events` from `from`; the status code of the answer.
fn open_stream(from: [u8; 4], addr: SocketAddr) -> (u16, TcpStream) {
    let mut s = connect(from, addr);
    write!(
        s,
        "GET /v1/events HTTP/1.1\r\nhost: {addr}\r\nupgrade: websocket\r\nconnection: upgrade\r\n\
         sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).unwrap_or(0) == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, s)
}

#[test]
fn one_client_cannot_hold_every_event_stream_nor_keep_one_it_does_not_answer() {
    let (rt, _dir, node) = node(64);
    let addr = node.api_addr;
    let mine: Vec<TcpStream> = (0..4)
        .map(|_| {
            let (code, s) = open_stream([127, 0, 0, 1], addr);
            assert_eq!(code, 101);
            s
        })
        .collect();
    let (code, _) = open_stream([127, 0, 0, 1], addr);
    assert_eq!(code, 503, "a fifth stream from one address");
    let (code, mut other) = open_stream([127, 0, 0, 2], addr);
    assert_eq!(code, 101, "another address still gets one");
    // The node pings (opcode 9) and, as this client never answers, ends the stream after the
    // 2 s idle timeout.
    let (secs, frames) = common::until_closed(&mut other);
    assert!(
        frames.windows(2).any(|w| w[0] == 0x89 && w[1] == 0x00),
        "no ping among {} bytes",
        frames.len()
    );
    assert!(secs < 8.0, "an unanswering stream lived {secs:.1} s");
    drop(mine);
    rt.block_on(node.stop()).unwrap();
}
