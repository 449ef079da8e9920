//! Sign-in floods (issue 19, finding 5), through the real node: a client that floods challenges
//! and sessions from another address evicts only its own, and a failed sign-in with a member's
//! challenge does not use it up. On the code before, 10,200 challenges evicted the member's open
//! challenge and a bad session request burned it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use gridmesh_ledger::Keypair;
use gridmesh_node::{NodeConfig, RunningNode};

/// An HTTP/1.1 client on one kept-alive connection from a chosen loopback address (another
/// client, as the node sees it).
struct Client {
    stream: BufReader<TcpStream>,
    addr: SocketAddr,
}

impl Client {
    fn connect(rt: &tokio::runtime::Runtime, from: [u8; 4], to: SocketAddr) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((from, 0))).unwrap();
        let stream = rt.block_on(socket.connect(to)).unwrap().into_std().unwrap();
        stream.set_nonblocking(false).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Client {
            stream: BufReader::new(stream),
            addr: to,
        }
    }

    fn send(
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
        let code: u16 = status.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            self.stream.read_line(&mut line).unwrap();
            if line == "\r\n" {
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

    fn challenge(&mut self, address: &str) -> (u16, serde_json::Value) {
        self.send(
            "POST",
            "/v1/auth/challenge",
            Some(&serde_json::json!({ "address": address })),
            None,
        )
    }

    fn session(
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
    fn sign_in(&mut self, key: &Keypair) -> String {
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

#[test]
fn a_flood_of_challenges_and_sessions_takes_nothing_from_a_member() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = NodeConfig::new(dir.path());
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.block_interval = Duration::from_millis(200);
    let node = rt.block_on(RunningNode::start(cfg)).unwrap();
    let mut member = Client::connect(&rt, [127, 0, 0, 1], node.api_addr);
    let mut attacker = Client::connect(&rt, [127, 0, 0, 2], node.api_addr);
    let ada = Keypair::from_seed([7; 32]);
    let mallory = Keypair::from_seed([8; 32]);
    let ada_address = ada.address().to_string();

    // Ada asks for a challenge; someone else floods the node with 10,200 more (more than the
    // node holds), for addresses of its choosing.
    let (code, c) = member.challenge(&ada_address);
    assert_eq!(code, 200, "{c}");
    let challenge = c["challenge"].as_str().unwrap().to_string();
    let message = hex::decode(c["message"].as_str().unwrap()).unwrap();
    for i in 0..10_200u32 {
        let mut a = [0u8; 32];
        a[..4].copy_from_slice(&i.to_le_bytes());
        let (code, body) = attacker.challenge(&hex::encode(a));
        assert_eq!(code, 200, "the flooder's own oldest make room: {body}");
    }

    // Whoever saw Ada's challenge tries to burn it: for another address, and with a bad
    // signature. Both are refused and use nothing up.
    let mallory_address = mallory.address().to_string();
    let (code, body) = attacker.session(
        &mallory_address,
        &challenge,
        &hex::encode(mallory.sign(&message)),
    );
    assert_eq!((code, body["error"].as_str()), (401, Some("bad_challenge")));
    let (code, body) = attacker.session(&ada_address, &challenge, &hex::encode([0u8; 64]));
    assert_eq!((code, body["error"].as_str()), (401, Some("bad_signature")));

    // Ada signs in with her challenge.
    let (code, s) = member.session(&ada_address, &challenge, &hex::encode(ada.sign(&message)));
    assert_eq!(
        code, 200,
        "Ada's challenge survived the flood and the burn attempts: {s}"
    );
    let token = s["token"].as_str().unwrap().to_string();
    // Used once.
    let (code, _) = member.session(&ada_address, &challenge, &hex::encode(ada.sign(&message)));
    assert_eq!(code, 401, "a challenge is used once");

    // The flooder opens 100 sessions of its own key: Ada's session stays.
    let mut last = String::new();
    for _ in 0..100 {
        last = attacker.sign_in(&mallory);
    }
    let home = format!("/v1/homes/{ada_address}?slots=4");
    let (code, body) = member.send("GET", &home, None, Some(&token));
    assert_eq!(
        code, 200,
        "Ada's session survived 100 of the flooder's: {body}"
    );
    // Only the flooder's newest sessions remain, so its own oldest were the ones evicted.
    let mallory_home = format!("/v1/homes/{mallory_address}?slots=4");
    let (code, _) = attacker.send("GET", &mallory_home, None, Some(&last));
    assert_eq!(code, 200);

    rt.block_on(node.stop()).unwrap();
}
