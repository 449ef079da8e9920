//! Raw HTTP for the node's tests: connections from a chosen loopback address (another client, as
//! the node sees it), requests with chosen headers, and reading until the node closes.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use gridmesh_ledger::Keypair;
use gridmesh_node::{NodeConfig, RunningNode};

/// A development node on a free loopback port (blocks every 200 ms unless `configure` says
/// otherwise), with its runtime and data directory.
pub fn dev_node(
    configure: impl FnOnce(&mut NodeConfig),
) -> (tokio::runtime::Runtime, tempfile::TempDir, RunningNode) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = NodeConfig::new(dir.path());
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.block_interval = Duration::from_millis(200);
    configure(&mut cfg);
    let node = rt.block_on(RunningNode::start(cfg)).unwrap();
    (rt, dir, node)
}

/// A blocking connection from the loopback address `from` to `to` (20 s read timeout).
pub fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    let s = rt.block_on(socket.connect(to)).unwrap().into_std().unwrap();
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Seconds until the node closes `s` (reads until end of stream), and what it sent.
pub fn until_closed(s: &mut TcpStream) -> (f64, Vec<u8>) {
    let t0 = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    (t0.elapsed().as_secs_f64(), got)
}

/// The status code of an HTTP answer (0 if there is none).
pub fn status_of(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Sends `body` as JSON with `host` in one write on a connection of its own and reads the answer:
/// status, content type and body.
pub fn raw_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    host: &str,
    body: &str,
) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    // The node may close before it has read everything: what it answered is in the socket.
    let _ = stream.write_all(request.as_bytes());
    let (_, answer) = until_closed(&mut stream);
    assert!(!answer.is_empty(), "no answer from the node");
    let answer = String::from_utf8_lossy(&answer).to_string();
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    let ctype = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    (status_of(head), ctype, body.to_string())
}

/// An HTTP/1.1 client on one kept-alive connection from a chosen loopback address.
pub struct KeptAlive {
    stream: BufReader<TcpStream>,
    addr: SocketAddr,
}

impl KeptAlive {
    pub fn connect(from: [u8; 4], to: SocketAddr) -> KeptAlive {
        KeptAlive {
            stream: BufReader::new(connect_from(from, to)),
            addr: to,
        }
    }

    /// One request with a JSON body (and a bearer token); the status and the JSON answer.
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
        token: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let auth = token
            .map(|t| format!("authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
             {auth}content-length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        self.stream.get_mut().write_all(request.as_bytes()).unwrap();
        let mut status = String::new();
        self.stream.read_line(&mut status).unwrap();
        let code = status_of(&status);
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            self.stream.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap();
                }
            }
        }
        let mut buf = vec![0; length];
        self.stream.read_exact(&mut buf).unwrap();
        (code, serde_json::from_slice(&buf).unwrap_or_default())
    }

    /// Asks for a sign-in challenge for `address`.
    pub fn challenge(&mut self, address: &str) -> (u16, serde_json::Value) {
        self.send(
            "POST",
            "/v1/auth/challenge",
            Some(&serde_json::json!({ "address": address })),
            None,
        )
    }

    /// Answers a challenge.
    pub fn session(
        &mut self,
        address: &str,
        challenge: &str,
        signature: &str,
    ) -> (u16, serde_json::Value) {
        self.send(
            "POST",
            "/v1/auth/session",
            Some(&serde_json::json!({
                "address": address, "challenge": challenge, "signature": signature,
            })),
            None,
        )
    }

    /// Signs in as `key`: a challenge, its signature, the token.
    pub fn sign_in(&mut self, key: &Keypair) -> String {
        let address = key.address().to_string();
        let (code, c) = self.challenge(&address);
        assert_eq!(code, 200, "{c}");
        let message = hex::decode(c["message"].as_str().unwrap()).unwrap();
        let (code, s) = self.session(
            &address,
            c["challenge"].as_str().unwrap(),
            &hex::encode(key.sign(&message)),
        );
        assert_eq!(code, 200, "{s}");
        s["token"].as_str().unwrap().to_string()
    }
}
