//! A small blocking client for the node's HTTP API (used by the command line, the demo and tests).

use std::time::{Duration, Instant};

use gridmesh_ledger::SignedTx;
use gridmesh_types::{Address, Hash32};
use serde::de::DeserializeOwned;

use gridmesh_api::{
    AccountResponse, BatchResponse, BlockResponse, ErrorBody, StatusResponse, SubmitResponse,
    TxStatusResponse,
};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the node at {url}: {reason} (is `gridmesh node` running? set --node URL)"
    )]
    Unreachable { url: String, reason: String },
    #[error("node refused ({status} {code}): {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("unexpected answer from {url}: {reason}")]
    Decode { url: String, reason: String },
    #[error("transaction {hash} was not committed within {waited:?}")]
    Timeout { hash: Hash32, waited: Duration },
}

/// What to say of an answer that is not the node's: its type, size and first words.
fn foreign_answer(content_type: &str, text: &str) -> String {
    let first: String = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(120)
        .collect();
    format!(
        "not a gridmesh node's answer ({content_type}, {} bytes: {first}...); check --node",
        text.len()
    )
}

#[derive(Clone)]
pub struct Client {
    base: String,
    agent: ureq::Agent,
    /// A session token sent with every read ([`Client::signed_in`]): the node then shows the
    /// account's own energy (and what others granted it) in its public views.
    token: Option<String>,
}

impl Client {
    pub fn new(base: &str) -> Client {
        let agent = gridmesh_https::agent()
            .timeout_connect(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build();
        // `127.0.0.1:8645` means the node's plain HTTP API, as `gridmesh node` prints it.
        let base = base.trim_end_matches('/');
        let base = if base.contains("://") {
            base.to_string()
        } else {
            format!("http://{base}")
        };
        Client {
            base,
            agent,
            token: None,
        }
    }

    /// This client, signed in as `key`'s account for its reads.
    pub fn signed_in(mut self, key: &gridmesh_ledger::Keypair) -> Result<Client, ClientError> {
        self.token = Some(self.sign_in(key)?);
        Ok(self)
    }

    fn handle<T: DeserializeOwned>(
        &self,
        url: &str,
        r: Result<ureq::Response, ureq::Error>,
    ) -> Result<T, ClientError> {
        match r {
            Ok(resp) => resp.into_json().map_err(|e| ClientError::Decode {
                url: url.to_string(),
                reason: e.to_string(),
            }),
            Err(ureq::Error::Status(status, resp)) => {
                let content_type = resp.content_type().to_string();
                let text = resp.into_string().unwrap_or_default();
                let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
                    Ok(b) => (b.error, b.message),
                    // Another server's page (a proxy, a router): named, not printed whole.
                    Err(_) => ("http_error".into(), foreign_answer(&content_type, &text)),
                };
                Err(ClientError::Api {
                    status,
                    code,
                    message,
                })
            }
            // The URL is said once, by the error; the reason without it.
            Err(ureq::Error::Transport(t)) => Err(ClientError::Unreachable {
                url: url.to_string(),
                reason: {
                    let mut r = t.kind().to_string();
                    if let Some(m) = t.message() {
                        r += &format!(": {m}");
                    }
                    if let Some(source) = std::error::Error::source(&t) {
                        r += &format!(": {source}");
                    }
                    r
                },
            }),
        }
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.agent.get(&url);
        if let Some(t) = &self.token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        self.handle(&url, req.call())
    }

    fn get_opt<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>, ClientError> {
        match self.get(path) {
            Ok(v) => Ok(Some(v)),
            Err(ClientError::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn status(&self) -> Result<StatusResponse, ClientError> {
        self.get("/v1/status")
    }

    pub fn account(&self, address: &Address) -> Result<AccountResponse, ClientError> {
        self.get(&format!("/v1/accounts/{address}"))
    }

    /// The account's transactions waiting in the node's mempool.
    pub fn pending(
        &self,
        address: &Address,
    ) -> Result<gridmesh_api::chain::PendingView, ClientError> {
        self.get(&format!("/v1/accounts/{address}/pending"))
    }

    /// Drops the account's transactions waiting behind a missing nonce (from `from_nonce` up),
    /// signed in with the session `token` of that account.
    pub fn drop_gapped(
        &self,
        address: &Address,
        token: &str,
        from_nonce: Option<u64>,
    ) -> Result<gridmesh_api::chain::DroppedView, ClientError> {
        let mut url = format!("{}/v1/accounts/{address}/pending", self.base);
        if let Some(n) = from_nonce {
            url.push_str(&format!("?from_nonce={n}"));
        }
        let r = self
            .agent
            .delete(&url)
            .set("Authorization", &format!("Bearer {token}"))
            .call();
        self.handle(&url, r)
    }

    /// A block by height, or the head with `None`.
    pub fn block(&self, height: Option<u64>) -> Result<Option<BlockResponse>, ClientError> {
        match height {
            Some(h) => self.get_opt(&format!("/v1/blocks/{h}")),
            None => self.get_opt("/v1/blocks/latest"),
        }
    }

    pub fn tx(&self, hash: &Hash32) -> Result<Option<TxStatusResponse>, ClientError> {
        self.get_opt(&format!("/v1/tx/{hash}"))
    }

    /// A device registered with its own key, `None` if there is none.
    pub fn device(
        &self,
        address: &Address,
    ) -> Result<Option<gridmesh_api::chain::DeviceView>, ClientError> {
        self.get_opt(&format!("/v1/devices/{address}"))
    }

    /// The token supply and its reconciliation.
    pub fn supply(&self) -> Result<gridmesh_api::economics::SupplyView, ClientError> {
        self.get("/v1/supply")
    }

    pub fn market(&self) -> Result<gridmesh_api::market::MarketInfo, ClientError> {
        self.get("/v1/market")
    }

    /// The price list of buying from the grid (`GET /v1/tariff/grid`): the slot running first.
    pub fn grid_prices(&self) -> Result<Vec<gridmesh_api::tariff::PricePoint>, ClientError> {
        self.get("/v1/tariff/grid")
    }

    /// The microgrid's state (`GET /v1/grid`): grid-connected, islanded or resynchronising.
    pub fn grid(&self) -> Result<gridmesh_api::chain::GridView, ClientError> {
        self.get("/v1/grid")
    }

    /// A slot's view, `None` if it never had an order.
    pub fn market_slot(
        &self,
        slot: u64,
    ) -> Result<Option<gridmesh_api::market::SlotView>, ClientError> {
        self.get_opt(&format!("/v1/market/slots/{slot}"))
    }

    /// A connection point's envelope for a slot, `None` if the grid operator set none.
    pub fn envelope(
        &self,
        slot: u64,
        location: &str,
    ) -> Result<Option<gridmesh_api::EnvelopeView>, ClientError> {
        let mut location_q = String::new();
        for b in location.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                location_q.push(b as char);
            } else {
                location_q.push_str(&format!("%{b:02X}"));
            }
        }
        self.get_opt(&format!(
            "/v1/market/slots/{slot}/envelope?location={location_q}"
        ))
    }

    pub fn submit(&self, tx: &SignedTx) -> Result<SubmitResponse, ClientError> {
        let url = format!("{}/v1/tx", self.base);
        let r = self
            .agent
            .post(&url)
            .send_json(serde_json::json!({ "tx": hex::encode(tx.encode()) }));
        self.handle(&url, r)
    }

    /// Reports the upstream grid as the PCC meter (or the grid operator) with `key`, timestamped
    /// now (`POST /v1/grid/pcc`, from the node's own machine).
    pub fn pcc_report(
        &self,
        key: &gridmesh_ledger::Keypair,
        grid_available: bool,
    ) -> Result<(), ClientError> {
        let chain_id = self.status()?.chain_id;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let report = gridmesh_api::chain::PccReport::signed(key, &chain_id, grid_available, now_ms);
        let url = format!("{}/v1/grid/pcc", self.base);
        let r = self.agent.post(&url).send_json(&report);
        match r {
            Ok(_) => Ok(()),
            Err(e) => self.handle::<serde_json::Value>(&url, Err(e)).map(|_| ()),
        }
    }

    /// Signs in as `key`'s account (a fresh challenge, signed): the session's token for the
    /// account's home and those granted to it.
    pub fn sign_in(&self, key: &gridmesh_ledger::Keypair) -> Result<String, ClientError> {
        let address = key.address().to_string();
        let url = format!("{}/v1/auth/challenge", self.base);
        let r = self
            .agent
            .post(&url)
            .send_json(gridmesh_api::home::ChallengeRequest {
                address: address.clone(),
            });
        let c: gridmesh_api::home::ChallengeResponse = self.handle(&url, r)?;
        let message = hex::decode(&c.message).map_err(|e| ClientError::Decode {
            url: url.clone(),
            reason: format!("the challenge's message is not hex: {e}"),
        })?;
        let url = format!("{}/v1/auth/session", self.base);
        let r = self
            .agent
            .post(&url)
            .send_json(gridmesh_api::home::SessionRequest {
                address,
                challenge: c.challenge,
                signature: hex::encode(key.sign(&message)),
            });
        let s: gridmesh_api::home::SessionResponse = self.handle(&url, r)?;
        Ok(s.token)
    }

    /// The home of `owner` over the last `slots` slots, read with a session `token`.
    pub fn home(
        &self,
        owner: &Address,
        token: &str,
        slots: u64,
    ) -> Result<gridmesh_api::home::HomeView, ClientError> {
        let url = format!("{}/v1/homes/{owner}?slots={slots}", self.base);
        let r = self
            .agent
            .get(&url)
            .set("Authorization", &format!("Bearer {token}"))
            .call();
        self.handle(&url, r)
    }

    /// Submits up to [`gridmesh_api::MAX_BATCH_TXS`] transactions in one request.
    pub fn submit_batch(&self, txs: &[SignedTx]) -> Result<BatchResponse, ClientError> {
        let url = format!("{}/v1/txs", self.base);
        let hexes: Vec<String> = txs.iter().map(|t| hex::encode(t.encode())).collect();
        let r = self
            .agent
            .post(&url)
            .send_json(serde_json::json!({ "txs": hexes }));
        self.handle(&url, r)
    }

    /// Polls until the transaction is committed (or `timeout` passes).
    pub fn wait_committed(
        &self,
        hash: &Hash32,
        timeout: Duration,
    ) -> Result<TxStatusResponse, ClientError> {
        let start = Instant::now();
        loop {
            if let Some(t) = self.tx(hash)? {
                if t.status == "committed" {
                    return Ok(t);
                }
            }
            if start.elapsed() > timeout {
                return Err(ClientError::Timeout {
                    hash: *hash,
                    waited: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that answers the next request with `status`, `content_type` and `body`.
    fn server(status: u16, content_type: &'static str, body: String) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut request = [0u8; 4_096];
            let _ = std::io::Read::read(&mut s, &mut request);
            let reply = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = std::io::Write::write_all(&mut s, reply.as_bytes());
        });
        url
    }

    #[test]
    fn another_servers_page_is_named_not_printed_and_the_url_is_said_once() {
        let page = format!(
            "<!DOCTYPE html><html><head><title>Router login</title></head><body>{}</body></html>",
            "<p>lots of markup</p>".repeat(300)
        );
        let url = server(404, "text/html", page);
        let e = Client::new(&url).status().unwrap_err().to_string();
        assert!(e.contains("not a gridmesh node's answer (text/html"), "{e}");
        assert!(e.len() < 400, "the whole page printed: {e}");
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let e = Client::new(&closed).status().unwrap_err().to_string();
        assert_eq!(e.matches(&closed).count(), 1, "{e}");
        assert!(e.contains("Connection refused"), "{e}");
    }

    #[test]
    fn a_node_without_a_scheme_is_its_plain_http_api() {
        for (given, base) in [
            ("127.0.0.1:8645", "http://127.0.0.1:8645"),
            ("node.example:8645/", "http://node.example:8645"),
            ("https://node.example", "https://node.example"),
            ("http://127.0.0.1:8645/", "http://127.0.0.1:8645"),
        ] {
            assert_eq!(Client::new(given).base, base, "{given}");
        }
    }
}
