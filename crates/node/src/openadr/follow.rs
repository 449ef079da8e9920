//! The node as a VEN of an upstream VTN, its distribution system operator's or aggregator's
//! (`gridmesh node --openadr-upstream FILE`, with the grid operator service).
//!
//! Every `poll_s` a thread asks the upstream VTN, with the OAuth2 client credentials the DSO
//! gave the community, for the events of the program it follows, and keeps what they set per
//! slot ([`super::upstream::slot_terms`]). The grid operator service reads it before it
//! envelopes a slot ([`crate::grid_operator`]):
//!
//! - an `IMPORT_CAPACITY_LIMIT` or `EXPORT_CAPACITY_LIMIT` caps the sum of the connections'
//!   envelopes, each connection keeping its share ([`cap_envelopes`]);
//! - a `PRICE` or `EXPORT_PRICE` becomes the slot's utility tariff (`SetTariff`), converted at
//!   `tokens_per_currency_unit`.
//!
//! A slot whose terms change upstream while its gate is still open is enveloped and priced
//! again. Once every slot an event covers has settled, the community's metered exchange with the
//! grid in those slots (the members' readings: import minus export) goes back to the VTN as a
//! report on that event (`USAGE`, kWh, the resource `AGGREGATED_REPORT`); one the VTN could not
//! take for the moment (unreachable, 5xx, 429) is sent again at the next poll.
//!
//! Times are the chain's, as everywhere in the grid operator service. The VEN registers its own
//! VEN object (`ven_name`) so that the VTN can target it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use gridmesh_ledger::readers::MarketReader;
use gridmesh_market::Tariff;
use gridmesh_types::units::{slot_of, slot_start_ms, SLOT_MS};
use serde::Deserialize;
use serde_json::{json, Value};

use super::upstream::{event_slots, slot_terms, SlotTerms};
use crate::Shared;

/// Most events followed (the newest pages are not fetched beyond).
pub const MAX_EVENTS: usize = 500;
/// Largest answer read from the upstream VTN.
pub const MAX_BODY_BYTES: u64 = 8 << 20;
/// Longest an upstream request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Events whose last slot settled longer ago than this when first seen are not reported.
pub const REPORT_WINDOW_MS: u64 = 86_400_000;
/// OpenADR's page size (openleadr-vtn takes at most 50).
const PAGE: usize = 50;
/// Milliwatt-hours a kW delivers over one slot.
const MWH_PER_KW_SLOT: f64 = 1e6 * SLOT_MS as f64 / 3_600_000.0;

/// `--openadr-upstream FILE`: where the upstream VTN is and how the node signs in.
#[derive(Clone, Debug, PartialEq)]
pub struct UpstreamConfig {
    /// The VTN's base URL, without a trailing slash.
    pub url: String,
    pub client_id: String,
    pub client_secret: String,
    /// The name of this node's VEN object at the VTN.
    pub ven_name: String,
    /// Follow only the program of this name (`None`: every program the VTN shows this VEN).
    pub program: Option<String>,
    pub poll: Duration,
    /// Token base units per unit of the upstream's currency (a price of 0.25 at 1 token per
    /// unit is 250,000 base units).
    pub base_units_per_currency_unit: u128,
    /// Send the community's usage back as reports.
    pub report_usage: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamFile {
    url: String,
    client_id: String,
    client_secret: String,
    ven_name: Option<String>,
    program: Option<String>,
    poll_s: Option<u64>,
    tokens_per_currency_unit: Option<String>,
    report_usage: Option<bool>,
}

/// An example of the file, for the README and error messages.
pub const EXAMPLE: &str = r#"url = "https://vtn.dso.example/openadr3"
client_id = "community-a"
client_secret = "..."
ven_name = "community-a"          # default: client_id
program = "congestion-management"  # default: every program the VTN shows this VEN
poll_s = 60                        # 1 to 3600
tokens_per_currency_unit = "1"     # token per EUR (or the program's currency)
report_usage = true
"#;

impl UpstreamConfig {
    pub fn load(path: &Path) -> Result<UpstreamConfig, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        UpstreamConfig::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses and checks the file; an error names the key.
    pub fn from_toml(text: &str) -> Result<UpstreamConfig, String> {
        let f: UpstreamFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let url = f.url.trim_end_matches('/').to_string();
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
            return Err(format!(
                "url: {:?} is no http:// or https:// URL of a VTN",
                f.url
            ));
        }
        for (key, v) in [
            ("client_id", &f.client_id),
            ("client_secret", &f.client_secret),
        ] {
            if v.is_empty() || v.len() > 512 {
                return Err(format!("{key}: 1 to 512 characters"));
            }
        }
        let ven_name = f.ven_name.unwrap_or_else(|| f.client_id.clone());
        if ven_name.is_empty() || ven_name.chars().count() > 128 {
            return Err("ven_name: 1 to 128 characters".into());
        }
        let poll_s = f.poll_s.unwrap_or(60);
        if !(1..=3_600).contains(&poll_s) {
            return Err(format!("poll_s: {poll_s} is not 1 to 3600 seconds"));
        }
        let rate = f.tokens_per_currency_unit.as_deref().unwrap_or("1");
        let base_units_per_currency_unit = rate
            .parse::<gridmesh_types::Amount>()
            .map_err(|e| format!("tokens_per_currency_unit: {rate:?}: {e}"))?
            .base_units();
        if base_units_per_currency_unit == 0 {
            return Err("tokens_per_currency_unit: must be above 0".into());
        }
        Ok(UpstreamConfig {
            url,
            client_id: f.client_id,
            client_secret: f.client_secret,
            ven_name,
            program: f.program,
            poll: Duration::from_secs(poll_s),
            base_units_per_currency_unit,
            report_usage: f.report_usage.unwrap_or(true),
        })
    }
}

/// What the follower knows, shared with the grid operator service and `/v1/grid`.
#[derive(Debug, Default)]
pub struct Upstream {
    /// What the upstream's events set, per slot.
    pub terms: BTreeMap<u64, SlotTerms>,
    pub base_units_per_currency_unit: u128,
    pub status: UpstreamStatus,
}

/// How following goes, for `/v1/grid`.
pub type UpstreamStatus = gridmesh_api::chain::UpstreamView;

impl Upstream {
    pub fn new(cfg: &UpstreamConfig) -> Upstream {
        Upstream {
            terms: BTreeMap::new(),
            base_units_per_currency_unit: cfg.base_units_per_currency_unit,
            status: UpstreamStatus {
                url: cfg.url.clone(),
                ..Default::default()
            },
        }
    }

    pub fn terms(&self, slot: u64) -> SlotTerms {
        self.terms.get(&slot).copied().unwrap_or_default()
    }

    /// The utility tariff the upstream's prices make of `genesis` (the community's own for
    /// that slot): `None` when the upstream prices nothing there. An error when they would make
    /// a tariff the ledger refuses (feed-in above retail, or beyond the price limit).
    pub fn tariff(&self, terms: &SlotTerms, genesis: Tariff) -> Option<Result<Tariff, String>> {
        if terms.price_per_kwh.is_none() && terms.export_price_per_kwh.is_none() {
            return None;
        }
        let to_base = |p: f64| -> u64 {
            let v = (p * self.base_units_per_currency_unit as f64).round();
            if v >= u64::MAX as f64 {
                u64::MAX
            } else {
                v as u64
            }
        };
        let t = Tariff {
            retail_per_kwh: terms.price_per_kwh.map_or(genesis.retail_per_kwh, to_base),
            feed_in_per_kwh: terms
                .export_price_per_kwh
                .map_or(genesis.feed_in_per_kwh, to_base),
        };
        Some(t.check().map(|()| t).map_err(|e| e.to_string()))
    }
}

/// Caps the sum of the connections' envelopes (import, export mWh per slot) at the slot's
/// upstream limits, kW over the slot: when the sum is above, every connection is scaled by the
/// same factor, rounded down, so each keeps its share and the sum stays within the limit.
pub fn cap_envelopes(envelopes: &mut [(u64, u64)], terms: &SlotTerms) {
    fn cap(values: &mut [&mut u64], limit_kw: Option<f64>) {
        let Some(kw) = limit_kw else { return };
        let limit_mwh = (kw * MWH_PER_KW_SLOT).floor().min(u64::MAX as f64) as u128;
        let total: u128 = values.iter().map(|v| u128::from(**v)).sum();
        if total <= limit_mwh {
            return;
        }
        for v in values.iter_mut() {
            // Below the old value (limit < total), so it fits in u64.
            **v = (u128::from(**v) * limit_mwh / total) as u64;
        }
    }
    cap(
        &mut envelopes.iter_mut().map(|e| &mut e.0).collect::<Vec<_>>(),
        terms.import_kw,
    );
    cap(
        &mut envelopes.iter_mut().map(|e| &mut e.1).collect::<Vec<_>>(),
        terms.export_kw,
    );
}

/// What went wrong talking to the upstream VTN.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{what}: the VTN answered {status}: {detail}")]
    Refused {
        what: String,
        status: u16,
        detail: String,
    },
    #[error("{what}: {error}")]
    Transport { what: String, error: String },
    #[error("{what}: the answer is no OpenADR object: {error}")]
    Malformed { what: String, error: String },
    #[error("the VTN shows this VEN no program named {0:?}")]
    NoProgram(String),
}

struct Client {
    agent: ureq::Agent,
    cfg: UpstreamConfig,
    token: Option<(String, Instant)>,
}

fn read_json(what: &str, r: ureq::Response) -> Result<Value, UpstreamError> {
    let mut text = String::new();
    r.into_reader()
        .take(MAX_BODY_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| UpstreamError::Transport {
            what: what.into(),
            error: e.to_string(),
        })?;
    serde_json::from_str(&text).map_err(|e| UpstreamError::Malformed {
        what: what.into(),
        error: e.to_string(),
    })
}

/// The error of a refused request, with the problem's detail (or its first 300 characters).
fn refused(what: &str, status: u16, r: ureq::Response) -> UpstreamError {
    let mut text = String::new();
    let _ = r.into_reader().take(4_096).read_to_string(&mut text);
    let detail = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| {
            ["detail", "title", "error_description", "error"]
                .iter()
                .find_map(|k| v[*k].as_str().map(str::to_string))
        })
        .unwrap_or_else(|| text.chars().take(300).collect());
    UpstreamError::Refused {
        what: what.into(),
        status,
        detail,
    }
}

impl Client {
    fn new(cfg: UpstreamConfig) -> Client {
        Client {
            agent: gridmesh_https::agent()
                .timeout(REQUEST_TIMEOUT)
                .redirects(0)
                .build(),
            cfg,
            token: None,
        }
    }

    /// A bearer token, fetched with the client credentials from the token URL the VTN names
    /// (`/auth/server`), or `/auth/token` where it names none.
    fn token(&mut self) -> Result<String, UpstreamError> {
        if let Some((t, until)) = &self.token {
            if Instant::now() < *until {
                return Ok(t.clone());
            }
        }
        let base = &self.cfg.url;
        let token_url = self
            .agent
            .get(&format!("{base}/auth/server"))
            .call()
            .ok()
            .and_then(|r| read_json("auth server", r).ok())
            .and_then(|v| v["tokenURL"].as_str().map(str::to_string))
            .unwrap_or_else(|| format!("{base}/auth/token"));
        let what = format!("token from {token_url}");
        let answer = self.agent.post(&token_url).send_form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &self.cfg.client_id),
            ("client_secret", &self.cfg.client_secret),
        ]);
        let v = match answer {
            Ok(r) => read_json(&what, r)?,
            Err(ureq::Error::Status(code, r)) => return Err(refused(&what, code, r)),
            Err(e) => {
                return Err(UpstreamError::Transport {
                    what,
                    error: e.to_string(),
                })
            }
        };
        let token = v["access_token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| UpstreamError::Malformed {
                what: what.clone(),
                error: "no access_token".into(),
            })?
            .to_string();
        // Renewed a minute before it expires (or halfway, for short ones).
        let life = v["expires_in"].as_u64().unwrap_or(3_600);
        let margin = 60.min(life / 2);
        self.token = Some((
            token.clone(),
            Instant::now() + Duration::from_secs(life - margin),
        ));
        Ok(token)
    }

    /// `method path` with the bearer token; a 401 fetches a new token once.
    fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, UpstreamError> {
        let what = format!("{method} {path}");
        let mut retried = false;
        loop {
            let token = self.token()?;
            let req = self
                .agent
                .request(method, &format!("{}{path}", self.cfg.url))
                .set("Authorization", &format!("Bearer {token}"));
            let answer = match body {
                Some(b) => req.send_json(b),
                None => req.call(),
            };
            match answer {
                Ok(r) => return read_json(&what, r),
                Err(ureq::Error::Status(401, _)) if !retried => {
                    self.token = None;
                    retried = true;
                }
                Err(ureq::Error::Status(code, r)) => return Err(refused(&what, code, r)),
                Err(e) => {
                    return Err(UpstreamError::Transport {
                        what,
                        error: e.to_string(),
                    })
                }
            }
        }
    }

    /// Every object of a listing, page by page, at most `max`.
    fn list(
        &mut self,
        path: &str,
        query: &[(&str, &str)],
        max: usize,
    ) -> Result<Vec<Value>, UpstreamError> {
        let mut all = Vec::new();
        loop {
            let skip = all.len().to_string();
            let limit = PAGE.to_string();
            let mut q: Vec<(&str, &str)> = query.to_vec();
            q.extend([("skip", skip.as_str()), ("limit", limit.as_str())]);
            let qs = serde_urlencoded::to_string(&q).expect("strings encode");
            let page = self.call("GET", &format!("{path}?{qs}"), None)?;
            let page = page
                .as_array()
                .cloned()
                .ok_or_else(|| UpstreamError::Malformed {
                    what: format!("GET {path}"),
                    error: "not a list".into(),
                })?;
            let n = page.len();
            all.extend(page);
            if n < PAGE || all.len() >= max {
                all.truncate(max);
                return Ok(all);
            }
        }
    }
}

/// The running follower's thread.
pub struct Follower {
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Follower {
    pub fn start(
        shared: Arc<Shared>,
        cfg: UpstreamConfig,
        upstream: Arc<Mutex<Upstream>>,
    ) -> std::io::Result<Follower> {
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("openadr-upstream".into())
            .spawn(move || run(shared, cfg, upstream, stopped))?;
        Ok(Follower { stop, thread })
    }

    /// Tells the thread to stop after the request it may be making (at most
    /// [`REQUEST_TIMEOUT`] each), without waiting for it: it changes nothing but its own state.
    pub fn stop(self) {
        let _ = self.stop.send(());
        drop(self.thread);
    }
}

fn run(
    shared: Arc<Shared>,
    cfg: UpstreamConfig,
    upstream: Arc<Mutex<Upstream>>,
    stopped: mpsc::Receiver<()>,
) {
    let poll = cfg.poll;
    let mut client = Client::new(cfg);
    let mut reported = BTreeSet::new();
    loop {
        let result = poll_once(&mut client, &shared, &upstream, &mut reported);
        {
            let mut u = upstream.lock().expect("upstream lock");
            u.status.polls += 1;
            match result {
                Ok(()) => u.status.last_error = None,
                Err(e) => {
                    if u.status.last_error.as_deref() != Some(&e.to_string()) {
                        tracing::warn!(error = %e, "following the upstream VTN");
                    }
                    u.status.last_error = Some(e.to_string());
                }
            }
        }
        match stopped.recv_timeout(poll) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
    }
}

fn poll_once(
    client: &mut Client,
    shared: &Shared,
    upstream: &Mutex<Upstream>,
    reported: &mut BTreeSet<String>,
) -> Result<(), UpstreamError> {
    let ven_name = client.cfg.ven_name.clone();
    // This node's VEN object: found by name, else registered.
    if upstream
        .lock()
        .expect("upstream lock")
        .status
        .ven_id
        .is_none()
    {
        let vens = client.list("/vens", &[("venName", &ven_name)], MAX_EVENTS)?;
        // A VEN sees only its own object: one under another name is still ours.
        let own = vens
            .iter()
            .find(|v| v["venName"] == ven_name.as_str())
            .or(if vens.len() == 1 { vens.first() } else { None });
        let id = match own {
            Some(v) => v["id"].as_str().map(str::to_string),
            None => client.call(
                "POST",
                "/vens",
                Some(&json!({"objectType": "VEN_VEN_REQUEST", "venName": ven_name})),
            )?["id"]
                .as_str()
                .map(str::to_string),
        };
        tracing::info!(ven_id = ?id, "registered with the upstream VTN");
        upstream.lock().expect("upstream lock").status.ven_id = id;
    }
    let programs = client.list("/programs", &[], MAX_EVENTS)?;
    let program_ids: Vec<String> = match &client.cfg.program {
        Some(name) => {
            let p = programs
                .iter()
                .find(|p| p["programName"] == name.as_str())
                .ok_or_else(|| UpstreamError::NoProgram(name.clone()))?;
            vec![p["id"].as_str().unwrap_or_default().to_string()]
        }
        None => programs
            .iter()
            .filter_map(|p| p["id"].as_str().map(str::to_string))
            .collect(),
    };
    let mut events = Vec::new();
    for id in &program_ids {
        let left = MAX_EVENTS - events.len();
        if left == 0 {
            break;
        }
        events.extend(client.list("/events", &[("programID", id)], left)?);
    }
    let (mut terms, left_out) = slot_terms(&events);
    let (now_ms, market) = {
        let chain = shared.chain.read().expect("chain lock");
        (chain.head().timestamp_ms, chain.state().market_config())
    };
    // Only slots not yet past matter to the envelopes and tariffs.
    terms.retain(|&s, _| s >= slot_of(now_ms));
    {
        let mut u = upstream.lock().expect("upstream lock");
        if u.terms != terms {
            tracing::info!(slots = terms.len(), "the upstream VTN's terms changed");
        }
        u.status.program_ids = program_ids;
        u.status.events = events.len();
        u.status.limited_slots = terms
            .values()
            .filter(|t| t.import_kw.is_some() || t.export_kw.is_some())
            .count();
        u.status.priced_slots = terms
            .values()
            .filter(|t| t.price_per_kwh.is_some() || t.export_price_per_kwh.is_some())
            .count();
        u.status.left_out = left_out.into_iter().take(20).collect();
        u.terms = terms;
    }
    if !client.cfg.report_usage {
        return Ok(());
    }
    // Reports on the events whose slots have all settled.
    let seen: BTreeSet<String> = events
        .iter()
        .filter_map(|e| e["id"].as_str().map(str::to_string))
        .collect();
    reported.retain(|id| seen.contains(id));
    let mut failed = None;
    for e in &events {
        let Some(id) = e["id"].as_str() else { continue };
        let Some((first, last)) = event_slots(e) else {
            continue;
        };
        if reported.contains(id) || market.settlement_ms(last) > now_ms {
            continue;
        }
        // Events that ended long before the node saw them are not reported.
        let report = (market.settlement_ms(last) + REPORT_WINDOW_MS >= now_ms)
            .then(|| {
                let chain = shared.chain.read().expect("chain lock");
                usage_report(chain.state(), e, &ven_name, first, last)
            })
            .flatten();
        // No member metered those slots: nothing to say.
        let Some(report) = report else {
            reported.insert(id.to_string());
            continue;
        };
        match client.call("POST", "/reports", Some(&report)) {
            Ok(_) => {
                reported.insert(id.to_string());
                upstream.lock().expect("upstream lock").status.reports_sent += 1;
                tracing::info!(
                    event = id,
                    first,
                    last,
                    "reported the community's usage upstream"
                );
            }
            // The VTN will not take it (the event withdrawn, say): said once, not sent again.
            Err(e @ UpstreamError::Refused { status, .. })
                if (400..500).contains(&status) && status != 429 =>
            {
                reported.insert(id.to_string());
                failed.get_or_insert(e);
            }
            // Unreachable, busy or failing: sent again at the next poll.
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    failed.map_or(Ok(()), Err)
}

/// The community's metered exchange with the grid in the slots `first..=last` of `event`: for
/// each slot with readings, the members' import minus their export, kWh. `None` when no slot
/// has any.
pub fn usage_report(
    state: &gridmesh_ledger::State,
    event: &Value,
    ven_name: &str,
    first: u64,
    last: u64,
) -> Option<Value> {
    let intervals: Vec<Value> = (first..=last)
        .filter_map(|slot| {
            let readings = state.readings(slot);
            if readings.is_empty() {
                return None;
            }
            let net_mwh: i128 = readings
                .iter()
                .map(|(_, r)| i128::from(r.import_mwh) - i128::from(r.export_mwh))
                .sum();
            Some(json!({
                "id": slot - first,
                "intervalPeriod": {
                    "start": super::wire::rfc3339(slot_start_ms(slot)),
                    "duration": "PT15M",
                },
                "payloads": [{"type": "USAGE", "values": [net_mwh as f64 / 1e6]}],
            }))
        })
        .collect();
    if intervals.is_empty() {
        return None;
    }
    Some(json!({
        "objectType": "REPORT",
        "programID": event["programID"],
        "eventID": event["id"],
        "clientName": ven_name,
        "reportName": "community usage",
        "payloadDescriptors": [{
            "objectType": "REPORT_PAYLOAD_DESCRIPTOR",
            "payloadType": "USAGE",
            "readingType": "DIRECT_READ",
            "units": "KWH",
        }],
        "resources": [{"resourceName": "AGGREGATED_REPORT", "intervals": intervals}],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VTN that answers the next `n` requests with `status` and the JSON `body`.
    fn fake_vtn(status: u16, body: &'static str, n: usize) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for stream in listener.incoming().take(n) {
                let mut stream = stream.unwrap();
                let mut request = [0u8; 4_096];
                let _ = std::io::Read::read(&mut stream, &mut request);
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = std::io::Write::write_all(&mut stream, reply.as_bytes());
            }
        });
        url
    }

    fn config_for(url: &str) -> UpstreamConfig {
        UpstreamConfig::from_toml(&format!(
            "url = \"{url}\"\nclient_id = \"a\"\nclient_secret = \"b\"\n"
        ))
        .unwrap()
    }

    #[test]
    fn an_unreachable_vtn_and_refused_credentials_are_errors_that_say_so() {
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let e = Client::new(config_for(&closed))
            .call("GET", "/programs", None)
            .unwrap_err();
        assert!(matches!(e, UpstreamError::Transport { .. }), "{e}");
        // No /auth/server, then the token refused as OAuth2 says.
        let url = fake_vtn(
            401,
            r#"{"error": "invalid_client", "error_description": "wrong secret"}"#,
            2,
        );
        let e = Client::new(config_for(&url))
            .call("GET", "/programs", None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/auth/token") && e.contains("401") && e.contains("wrong secret"),
            "{e}"
        );
        // A token that is no token.
        let url = fake_vtn(200, r#"{"token_type": "Bearer"}"#, 2);
        let e = Client::new(config_for(&url))
            .call("GET", "/programs", None)
            .unwrap_err();
        assert!(matches!(e, UpstreamError::Malformed { .. }), "{e}");
    }

    #[test]
    fn the_file_is_checked_key_by_key() {
        let ok = UpstreamConfig::from_toml(EXAMPLE).unwrap();
        assert_eq!(ok.url, "https://vtn.dso.example/openadr3");
        assert_eq!(ok.poll, Duration::from_secs(60));
        assert_eq!(ok.base_units_per_currency_unit, 1_000_000);
        assert_eq!(ok.program.as_deref(), Some("congestion-management"));
        let minimal =
            "url = \"http://127.0.0.1:3000/\"\nclient_id = \"a\"\nclient_secret = \"b\"\n";
        let m = UpstreamConfig::from_toml(minimal).unwrap();
        assert_eq!(
            (m.url.as_str(), m.ven_name.as_str()),
            ("http://127.0.0.1:3000", "a")
        );
        assert!(m.report_usage && m.program.is_none());
        for (text, key) in [
            (minimal.replace("http://127.0.0.1:3000/", "ftp://x"), "url"),
            (minimal.replace("\"a\"", "\"\""), "client_id"),
            (format!("{minimal}poll_s = 0\n"), "poll_s"),
            (
                format!("{minimal}tokens_per_currency_unit = \"0\"\n"),
                "tokens_per_currency_unit",
            ),
            (
                format!("{minimal}tokens_per_currency_unit = \"lots\"\n"),
                "tokens_per_currency_unit",
            ),
            (format!("{minimal}pol_s = 5\n"), "pol_s"),
            (
                minimal.replace("client_secret = \"b\"\n", ""),
                "client_secret",
            ),
        ] {
            let e = UpstreamConfig::from_toml(&text).unwrap_err();
            assert!(e.contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn envelopes_are_scaled_into_the_limit_each_keeping_its_share() {
        let mut env = vec![(1_000_000, 500_000), (3_000_000, 0), (0, 1_500_000)];
        // 8 kW over a slot is 2 kWh: imports 4 kWh → 2; exports 2 kWh within 10 kW.
        cap_envelopes(
            &mut env,
            &SlotTerms {
                import_kw: Some(8.0),
                export_kw: Some(10.0),
                ..Default::default()
            },
        );
        assert_eq!(
            env,
            vec![(500_000, 500_000), (1_500_000, 0), (0, 1_500_000)]
        );
        // Rounded down, never above the limit; a limit of 0 closes every connection.
        let mut odd = vec![(333_333, 0); 7];
        cap_envelopes(
            &mut odd,
            &SlotTerms {
                import_kw: Some(1.0),
                ..Default::default()
            },
        );
        assert!(odd.iter().map(|e| e.0).sum::<u64>() <= 250_000);
        assert!(odd.iter().all(|e| e.0 == 35_714), "{odd:?}");
        cap_envelopes(
            &mut odd,
            &SlotTerms {
                import_kw: Some(0.0),
                ..Default::default()
            },
        );
        assert!(odd.iter().all(|e| e.0 == 0));
        let mut none = vec![(5, 5)];
        cap_envelopes(&mut none, &SlotTerms::default());
        assert_eq!(none, vec![(5, 5)]);
    }

    #[test]
    fn prices_become_a_tariff_in_base_units() {
        let cfg = UpstreamConfig::from_toml(EXAMPLE).unwrap();
        let u = Upstream::new(&cfg);
        let genesis = Tariff {
            retail_per_kwh: 300_000,
            feed_in_per_kwh: 80_000,
        };
        let priced = |p: Option<f64>, x: Option<f64>| SlotTerms {
            price_per_kwh: p,
            export_price_per_kwh: x,
            ..Default::default()
        };
        assert_eq!(u.tariff(&SlotTerms::default(), genesis), None);
        assert_eq!(
            u.tariff(&priced(Some(0.4215), None), genesis),
            Some(Ok(Tariff {
                retail_per_kwh: 421_500,
                feed_in_per_kwh: 80_000
            }))
        );
        assert_eq!(
            u.tariff(&priced(None, Some(0.05)), genesis),
            Some(Ok(Tariff {
                retail_per_kwh: 300_000,
                feed_in_per_kwh: 50_000
            }))
        );
        // Feed-in above retail: the ledger would refuse it.
        assert!(matches!(
            u.tariff(&priced(Some(0.05), None), genesis),
            Some(Err(_))
        ));
    }
}
