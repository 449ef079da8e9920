//! Every error the API answers is JSON with a stable code and a message, also those that axum's
//! extractors and router produce before a handler runs.

mod common;

use std::time::Duration;

use common::{dev_node, raw_request};

fn error_of(r: Result<ureq::Response, ureq::Error>, what: &str) -> (u16, serde_json::Value) {
    match r {
        Err(ureq::Error::Status(code, resp)) => {
            let ctype = resp.header("content-type").unwrap_or_default().to_string();
            assert!(ctype.starts_with("application/json"), "{what}: {ctype}");
            let body: serde_json::Value = resp.into_json().expect("a JSON body");
            assert!(body["error"].is_string(), "{what}: {body}");
            assert!(
                !body["message"].as_str().unwrap_or_default().is_empty(),
                "{what}: {body}"
            );
            (code, body)
        }
        other => panic!("{what}: expected an error, got {other:?}"),
    }
}

#[test]
fn extractor_and_router_errors_are_json() {
    let (rt, _dir, node) = dev_node(|_| {});
    let url = format!("http://{}", node.api_addr);
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();

    // A path segment that is not a number.
    let (code, body) = error_of(
        agent.get(&format!("{url}/v1/market/slots/soon")).call(),
        "slot not a number",
    );
    assert_eq!((code, body["error"].as_str()), (400, Some("bad_request")));
    // A malformed query.
    let (code, _) = error_of(
        agent.get(&format!("{url}/v1/blocks?limit=many")).call(),
        "bad query",
    );
    assert_eq!(code, 400);
    // To axum's JSON extractor (sign-in): a body that is not JSON, one without the content type,
    // and one of the wrong shape.
    let challenge = format!("{url}/v1/auth/challenge");
    let (code, _) = error_of(
        agent
            .post(&challenge)
            .set("content-type", "application/json")
            .send_string("{not json"),
        "malformed body",
    );
    assert_eq!(code, 400);
    let (code, body) = error_of(agent.post(&challenge).send_string("{}"), "no content type");
    assert_eq!(
        (code, body["error"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    let (code, body) = error_of(
        agent
            .post(&challenge)
            .send_json(serde_json::json!({"account": 1})),
        "wrong shape",
    );
    assert_eq!((code, body["error"].as_str()), (422, Some("invalid_body")));
    // The transaction endpoint reads its body itself and says what is wrong with it.
    let (code, body) = error_of(
        agent
            .post(&format!("{url}/v1/tx"))
            .set("content-type", "application/json")
            .send_string("{not json"),
        "malformed transaction body",
    );
    assert_eq!((code, body["error"].as_str()), (400, Some("bad_request")));
    // Every state-changing request's body is JSON (issue 19): a text/plain one is refused.
    let (code, body) = error_of(
        agent
            .post(&format!("{url}/v1/tx"))
            .set("content-type", "text/plain")
            .send_string("{\"tx\":\"00\"}"),
        "a text body",
    );
    assert_eq!(
        (code, body["error"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    // A page of another origin may not change the node; the node's own page may.
    let (code, body) = error_of(
        agent
            .post(&challenge)
            .set("origin", "https://evil.example")
            .send_json(serde_json::json!({"address": "00".repeat(32)})),
        "cross origin",
    );
    assert_eq!((code, body["error"].as_str()), (403, Some("cross_origin")));
    let own = agent
        .post(&challenge)
        .set("origin", &url)
        .send_json(serde_json::json!({"address": "00".repeat(32)}));
    assert!(own.is_ok(), "same origin: {own:?}");
    // A loopback-only write needs a host that names this machine (no DNS rebinding).
    let (code, _, answer) = raw_request(
        node.api_addr,
        "POST",
        "/v1/grid/pcc",
        "rebound.example",
        "{\"grid_available\": false}",
    );
    assert_eq!(code, 403, "{answer}");
    let (code, _, answer) = raw_request(
        node.api_addr,
        "POST",
        "/v1/grid/pcc",
        &format!("localhost:{}", node.api_addr.port()),
        "{\"grid_available\": false}",
    );
    assert_eq!(
        code, 409,
        "reaches the handler (no grid operator here): {answer}"
    );
    // A body over the limit. The node answers as soon as it has read past the limit and closes the
    // connection, so a client that is still writing may see a broken pipe instead of the answer (a
    // race, not a property of the API): the request goes out in one write and the answer is read
    // from the socket.
    let body = format!("{{\"tx\":\"{}\"}}", "ab".repeat(20_000));
    let host = node.api_addr.to_string();
    let (code, ctype, answer) = raw_request(node.api_addr, "POST", "/v1/tx", &host, &body);
    assert_eq!(code, 413, "{answer}");
    assert!(ctype.starts_with("application/json"), "too large: {ctype}");
    let answer: serde_json::Value = serde_json::from_str(&answer).expect("a JSON body");
    assert!(answer["error"].is_string(), "too large: {answer}");
    // No such route, and a wrong method (the Allow header stays).
    let (code, body) = error_of(agent.get(&format!("{url}/v1/nothing")).call(), "no route");
    assert_eq!((code, body["error"].as_str()), (404, Some("not_found")));
    match agent.delete(&format!("{url}/v1/status")).call() {
        Err(ureq::Error::Status(405, resp)) => {
            assert!(resp.header("allow").is_some_and(|a| a.contains("GET")));
            let body: serde_json::Value = resp.into_json().unwrap();
            assert_eq!(body["error"], "method_not_allowed");
        }
        other => panic!("wrong method: {other:?}"),
    }
    // The handlers' own errors are unchanged.
    let (code, body) = error_of(
        agent.get(&format!("{url}/v1/accounts/xyz")).call(),
        "bad address",
    );
    assert_eq!(code, 400, "{body}");

    rt.block_on(node.stop()).unwrap();
}
