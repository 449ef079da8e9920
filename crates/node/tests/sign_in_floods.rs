//! Sign-in floods (issue 19, finding 5), through the real node: a client that floods challenges
//! and sessions from another address evicts only its own, and a failed sign-in with a member's
//! challenge does not use it up. On the code before, 10,200 challenges evicted the member's open
//! challenge and a bad session request burned it.

mod common;

use common::{dev_node, KeptAlive};

use gridmesh_ledger::Keypair;

#[test]
fn a_flood_of_challenges_and_sessions_takes_nothing_from_a_member() {
    let (rt, _dir, node) = dev_node(|_| {});
    let mut member = KeptAlive::connect([127, 0, 0, 1], node.api_addr);
    let mut attacker = KeptAlive::connect([127, 0, 0, 2], node.api_addr);
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
