//! Sign-in floods (issue 19, finding 5), through the real node: a client that floods challenges
//! and sessions from another address evicts only its own, and a failed sign-in with a member's
//! challenge does not use it up. On the code before, 10,200 challenges evicted the member's open
//! challenge and a bad session request burned it.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::KeptAlive;

use gridmesh_ledger::Keypair;
use gridmesh_node::{NodeConfig, RunningNode};

/// A client of the node on a kept-alive connection of its own.
struct Client(KeptAlive);

impl Client {
    fn connect(from: [u8; 4], to: SocketAddr) -> Client {
        Client(KeptAlive::connect(from, to))
    }

    fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
        token: Option<&str>,
    ) -> (u16, serde_json::Value) {
        self.0.send(method, path, body, token)
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
    let mut member = Client::connect([127, 0, 0, 1], node.api_addr);
    let mut attacker = Client::connect([127, 0, 0, 2], node.api_addr);
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
