//! The community's OpenADR 3.1 VTN at `/openadr/3`: what the grid operator and aggregators'
//! VENs read of the community, in the standard's objects.
//!
//! - Programs: `prices` (the utility's `PRICE` and `EXPORT_PRICE` per slot, tokens per kWh),
//!   `envelopes` (each connection's `IMPORT_CAPACITY_LIMIT` and `EXPORT_CAPACITY_LIMIT` per slot,
//!   kW) and `flexibility` (the grid operator's flexibility requests: what a kWh of reduced or
//!   increased draw earns, per slot and area).
//! - Events, built from the chain's state at the head for the next 96 slots: one price event,
//!   one flexibility event, and one envelope event per connection, which only that connection's
//!   VENs see (another VEN asking for it gets 403).
//! - Reports: a VEN posts its reports (usage, ...) against an event it sees, and reads its own.
//! - Subscriptions: a VEN asks to be told of events; the notifier ([`notify`]) posts each new,
//!   changed or ended event to its callback URL.
//! - VENs: registered by the operator (`gridmesh openadr ven add`, [`vens`]); a VEN reads its
//!   own object only.
//! - Auth: OAuth2 client credentials at `POST /auth/token` (form-encoded, or HTTP Basic), the
//!   token URL at `GET /auth/server`. Every other request needs `Authorization: Bearer`; without a
//!   valid token, 401.
//!
//! Errors are RFC 9457 problem details (`application/problem+json`), the token endpoint's
//! RFC 6749's. Nothing here touches consensus: it reads the state, and keeps reports,
//! subscriptions and tokens in memory, bounded.

pub mod follow;
pub mod notify;
pub mod readings;
pub mod upstream;
pub mod vens;
pub mod wire;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::Shared;
use wire::{Event, Program};

/// How long a token is valid.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// Most tokens held at once (the oldest go first).
pub const MAX_TOKENS: usize = 10_000;
/// Most reports kept per VEN, and most bytes of them (the oldest go first).
pub const MAX_REPORTS_PER_VEN: usize = 1_000;
pub const MAX_REPORT_BYTES_PER_VEN: usize = 4 * 1024 * 1024;
/// Most subscriptions per VEN.
pub const MAX_SUBSCRIPTIONS_PER_VEN: usize = 20;
/// Largest request body.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Most objects a list answers (`limit`'s default and ceiling).
pub const MAX_LIMIT: usize = 200;
/// Slots ahead the events cover.
pub const HORIZON_SLOTS: u64 = 96;
/// Longest a request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The scopes a VEN's token carries (OpenADR 3.1's VEN role).
pub const VEN_SCOPES: &str = "read_targets read_ven_objects write_reports write_subscriptions";

/// The VTN's own state: registered VENs, tokens, reports and subscriptions.
pub struct Vtn {
    pub registry: vens::Registry,
    tokens: Mutex<HashMap<String, (String, Instant)>>,
    /// Each VEN's reports, oldest first, with their sizes in bytes.
    reports: Mutex<HashMap<String, Vec<(Value, usize)>>>,
    pub(crate) subscriptions: Mutex<Vec<wire::Subscription>>,
    /// Where VENs' usage goes to become their meters' readings, once the node runs
    /// ([`readings::spawn`]).
    pub readings: std::sync::OnceLock<std::sync::mpsc::SyncSender<readings::Job>>,
}

impl Vtn {
    pub fn new(data_dir: &std::path::Path) -> Vtn {
        Vtn {
            registry: vens::Registry::new(vens::path_in(data_dir)),
            tokens: Default::default(),
            reports: Default::default(),
            subscriptions: Default::default(),
            readings: Default::default(),
        }
    }

    fn issue_token(&self, ven_id: &str) -> String {
        let token = hex::encode(rand::random::<[u8; 32]>());
        let now = Instant::now();
        let mut t = self.tokens.lock().expect("tokens lock");
        if t.len() >= MAX_TOKENS {
            t.retain(|_, (_, until)| *until > now);
        }
        if t.len() >= MAX_TOKENS {
            if let Some(oldest) = t
                .iter()
                .min_by_key(|(_, (_, until))| *until)
                .map(|(k, _)| k.clone())
            {
                t.remove(&oldest);
            }
        }
        t.insert(token.clone(), (ven_id.to_string(), now + TOKEN_LIFETIME));
        token
    }

    /// The VEN a bearer token was issued to, if it is valid and the VEN still registered.
    fn ven_of(&self, headers: &HeaderMap) -> Result<vens::Ven, Problem> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                Problem::unauthorized("no bearer token: take one at POST /openadr/3/auth/token")
            })?;
        let ven_id = {
            let t = self.tokens.lock().expect("tokens lock");
            match t.get(token) {
                Some((id, until)) if *until > Instant::now() => id.clone(),
                Some(_) => return Err(Problem::unauthorized("the token has expired")),
                None => return Err(Problem::unauthorized("unknown token")),
            }
        };
        self.registry
            .by_id(&ven_id)
            .ok_or_else(|| Problem::unauthorized("the VEN of this token is no longer registered"))
    }
}

/// An RFC 9457 problem, as OpenADR 3 answers errors.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    detail: String,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Problem {
        Problem {
            status,
            detail: detail.into(),
        }
    }
    fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, detail)
    }
    fn unauthorized(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::UNAUTHORIZED, detail)
    }
    fn forbidden(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::FORBIDDEN, detail)
    }
    fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = json!({
            "type": "about:blank",
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        let mut r = (self.status, body.to_string()).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/problem+json"),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"openadr\""),
            );
        }
        r
    }
}

type Answer<T> = Result<Json<T>, Problem>;

/// The VTN's routes under `/openadr/3`, with their own limits and error format.
pub fn router(shared: Arc<Shared>) -> Router {
    let r = Router::new()
        .route("/auth/server", get(auth_server))
        .route("/auth/token", post(token))
        .route("/programs", get(programs).post(read_only))
        .route(
            "/programs/{id}",
            get(program).put(read_only).delete(read_only),
        )
        .route("/events", get(events).post(read_only))
        .route("/events/{id}", get(event).put(read_only).delete(read_only))
        .route("/reports", get(reports).post(post_report))
        .route(
            "/reports/{id}",
            get(report).put(put_report).delete(delete_report),
        )
        .route("/subscriptions", get(subscriptions).post(post_subscription))
        .route(
            "/subscriptions/{id}",
            get(subscription)
                .put(put_subscription)
                .delete(delete_subscription),
        )
        .route("/vens", get(list_vens).post(register_by_operator))
        .route(
            "/vens/{id}",
            get(ven)
                .put(register_by_operator)
                .delete(register_by_operator),
        )
        .fallback(|| async { Problem::not_found("no such OpenADR 3 resource") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(time_limit))
        .layer(axum::middleware::map_response(problems))
        .with_state(shared);
    Router::new().nest("/openadr/3", r)
}

async fn time_limit(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the node did not answer in time",
        )
        .into_response(),
    }
}

/// axum's own rejections (a malformed body or query, a wrong method) as problems too.
async fn problems(res: Response) -> Response {
    let status = res.status();
    let typed = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/"));
    if !(status.is_client_error() || status.is_server_error()) || typed {
        return res;
    }
    let (parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 4 * 1024)
        .await
        .unwrap_or_default();
    let mut p =
        Problem::new(status, String::from_utf8_lossy(&text).trim().to_string()).into_response();
    if let Some(allow) = parts.headers.get(header::ALLOW) {
        p.headers_mut().insert(header::ALLOW, allow.clone());
    }
    p
}

async fn read_only() -> Problem {
    Problem::forbidden(
        "programs and events are the community's: built from its chain, not written by a VEN",
    )
}

async fn register_by_operator() -> Problem {
    Problem::forbidden(
        "VENs are registered by the node's operator (gridmesh openadr ven add), not over the API",
    )
}

async fn auth_server(headers: HeaderMap) -> Json<Value> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    Json(json!({"tokenURL": format!("http://{host}/openadr/3/auth/token")}))
}

/// An RFC 6749 error answer of the token endpoint.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut r = (
        status,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"openadr\""),
        );
    }
    r
}

/// `POST /auth/token`: the OAuth2 client-credentials grant. The client's id and secret come in
/// the form (`client_id`, `client_secret`) or as HTTP Basic.
async fn token(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let form: HashMap<String, String> = match serde_urlencoded::from_bytes(&body) {
        Ok(f) => f,
        Err(e) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("the body is not a form (application/x-www-form-urlencoded): {e}"),
            )
        }
    };
    match form.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {}
        Some(other) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                &format!("grant_type {other:?}: only client_credentials"),
            )
        }
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "grant_type missing",
            )
        }
    }
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Basic "))
        .and_then(|b| wire::base64_decode(b.trim()))
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|b| {
            b.split_once(':')
                .map(|(i, s)| (i.to_string(), s.to_string()))
        });
    let (id, secret) = match (basic, form.get("client_id"), form.get("client_secret")) {
        (Some(b), _, _) => b,
        (None, Some(i), Some(s)) => (i.clone(), s.clone()),
        _ => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "client_id and client_secret missing (in the form, or as HTTP Basic)",
            )
        }
    };
    let Some(ven) = s.openadr.registry.authenticate(&id, &secret) else {
        tracing::info!(client_id = %id, "OpenADR token refused");
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "unknown client or wrong secret",
        );
    };
    let token = s.openadr.issue_token(&ven.id);
    Json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": TOKEN_LIFETIME.as_secs(),
        "scope": VEN_SCOPES,
    }))
    .into_response()
}

/// `skip` and `limit` of a list.
#[derive(Deserialize)]
struct Page {
    skip: Option<usize>,
    limit: Option<usize>,
    #[serde(rename = "programID")]
    program_id: Option<String>,
    #[serde(rename = "eventID")]
    event_id: Option<String>,
}

impl Page {
    fn apply<T>(&self, items: Vec<T>) -> Vec<T> {
        let limit = self.limit.unwrap_or(MAX_LIMIT).min(MAX_LIMIT);
        items
            .into_iter()
            .skip(self.skip.unwrap_or(0))
            .take(limit)
            .collect()
    }
}

/// The state at the head, and the head's time.
fn head(s: &Shared) -> (gridmesh_ledger::State, u64) {
    let chain = s.chain.read().expect("chain lock");
    (chain.state().clone(), chain.head().timestamp_ms)
}

async fn programs(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(page): Query<Page>,
) -> Answer<Vec<Program>> {
    s.openadr.ven_of(&headers)?;
    let (_, now) = head(&s);
    Ok(Json(page.apply(wire::programs(now))))
}

async fn program(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer<Program> {
    s.openadr.ven_of(&headers)?;
    let (_, now) = head(&s);
    wire::programs(now)
        .into_iter()
        .find(|p| p.id == id)
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("no program {id:?}")))
}

/// The events `ven` may see now.
pub(crate) fn visible_events(s: &Shared, ven: &vens::Ven) -> Vec<Event> {
    let (state, now) = head(s);
    wire::events(&state, now, ven.connection.as_deref())
}

async fn events(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(page): Query<Page>,
) -> Answer<Vec<Event>> {
    let ven = s.openadr.ven_of(&headers)?;
    let mut events = visible_events(&s, &ven);
    if let Some(p) = &page.program_id {
        events.retain(|e| &e.program_id == p);
    }
    Ok(Json(page.apply(events)))
}

async fn event(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer<Event> {
    let ven = s.openadr.ven_of(&headers)?;
    let own = ven.connection.as_deref().map(wire::envelope_event_id);
    if id.starts_with(wire::ENVELOPE_EVENT_PREFIX) && own.as_deref() != Some(id.as_str()) {
        return Err(Problem::forbidden(
            "this envelope is another connection's: a VEN sees its own connection's only",
        ));
    }
    visible_events(&s, &ven)
        .into_iter()
        .find(|e| e.id == id)
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("no event {id:?} now")))
}

async fn list_vens(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Answer<Vec<Value>> {
    let ven = s.openadr.ven_of(&headers)?;
    Ok(Json(vec![wire::ven_object(&ven)]))
}

async fn ven(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer<Value> {
    let ven = s.openadr.ven_of(&headers)?;
    if id != ven.id {
        return Err(Problem::forbidden("a VEN reads its own object only"));
    }
    Ok(Json(wire::ven_object(&ven)))
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Problem> {
    serde_json::from_slice(body).map_err(|e| Problem::bad_request(format!("the body: {e}")))
}

/// Checks a report against what `ven` may report on, and gives it the VTN's fields.
fn accept_report(
    s: &Shared,
    ven: &vens::Ven,
    body: &[u8],
    id: String,
    created: Option<String>,
) -> Result<Value, Problem> {
    let r: wire::ReportIn = parse_body(body)?;
    r.check().map_err(Problem::bad_request)?;
    let visible = visible_events(s, ven);
    let Some(e) = visible.iter().find(|e| e.id == r.event_id) else {
        return Err(Problem::bad_request(format!(
            "eventID {:?} is no event this VEN sees now",
            r.event_id
        )));
    };
    if e.program_id != r.program_id {
        return Err(Problem::bad_request(format!(
            "event {:?} belongs to program {:?}, not {:?}",
            r.event_id, e.program_id, r.program_id
        )));
    }
    let now = wire::rfc3339(wire::wall_ms());
    let mut v = serde_json::to_value(&r).expect("a report serialises");
    v["id"] = json!(id);
    v["objectType"] = json!("REPORT");
    v["createdDateTime"] = json!(created.unwrap_or_else(|| now.clone()));
    v["modificationDateTime"] = json!(now);
    v["clientID"] = json!(ven.client_id);
    Ok(v)
}

async fn post_report(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), Problem> {
    let ven = s.openadr.ven_of(&headers)?;
    let id = format!("report-{}", hex::encode(rand::random::<[u8; 8]>()));
    let v = accept_report(&s, &ven, &body, id, None)?;
    // A VEN with its meter: its usage becomes the meter's readings (queued before the report is
    // kept, so that a full queue changes nothing).
    if let (Some(_), Some(connection), Some(queue)) =
        (&ven.device, &ven.connection, s.openadr.readings.get())
    {
        let report: wire::ReportIn = parse_body(&body)?;
        let (usage, left_out) = readings::usage_of(&report);
        if !left_out.is_empty() {
            tracing::info!(ven = %ven.name, ?left_out, "report intervals that are no meter reading");
        }
        if !usage.is_empty() {
            let path = vens::device_key_path(s.openadr.registry.file(), &ven.id);
            let key = gridmesh_ledger::Keypair::load(&path).map_err(|e| {
                tracing::error!(ven = %ven.name, "its meter's key: {e}");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "this VEN's meter key cannot be read on the node",
                )
            })?;
            let job = readings::Job {
                ven: ven.name.clone(),
                connection: connection.clone(),
                key,
                usage,
            };
            queue.try_send(job).map_err(|_| {
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many reports wait to become readings: send it again later",
                )
            })?;
        }
    }
    let size = serde_json::to_vec(&v).map_or(0, |b| b.len());
    let mut all = s.openadr.reports.lock().expect("reports lock");
    let mine = all.entry(ven.id.clone()).or_default();
    mine.push((v.clone(), size));
    keep_within_bounds(mine);
    tracing::info!(ven = %ven.name, event = %v["eventID"], "OpenADR report");
    Ok((StatusCode::CREATED, Json(v)))
}

/// Drops a VEN's oldest reports beyond [`MAX_REPORTS_PER_VEN`] and
/// [`MAX_REPORT_BYTES_PER_VEN`] (the newest always stays).
fn keep_within_bounds(mine: &mut Vec<(Value, usize)>) {
    let mut bytes: usize = mine.iter().map(|r| r.1).sum();
    let mut drop = 0;
    while mine.len() - drop > 1
        && (mine.len() - drop > MAX_REPORTS_PER_VEN || bytes > MAX_REPORT_BYTES_PER_VEN)
    {
        bytes -= mine[drop].1;
        drop += 1;
    }
    mine.drain(..drop);
}

async fn reports(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(page): Query<Page>,
) -> Answer<Vec<Value>> {
    let ven = s.openadr.ven_of(&headers)?;
    let mut mine = s
        .openadr
        .reports
        .lock()
        .expect("reports lock")
        .get(&ven.id)
        .map(|list| list.iter().map(|r| r.0.clone()).collect::<Vec<_>>())
        .unwrap_or_default();
    if let Some(p) = &page.program_id {
        mine.retain(|r| r["programID"] == p.as_str());
    }
    if let Some(e) = &page.event_id {
        mine.retain(|r| r["eventID"] == e.as_str());
    }
    Ok(Json(page.apply(mine)))
}

/// Runs `f` on `ven`'s report `id` (a report of another VEN is as unknown as none).
fn with_report<T>(
    s: &Shared,
    ven: &vens::Ven,
    id: &str,
    f: impl FnOnce(&mut Vec<(Value, usize)>, usize) -> T,
) -> Result<T, Problem> {
    let mut all = s.openadr.reports.lock().expect("reports lock");
    let mine = all.entry(ven.id.clone()).or_default();
    let at = mine
        .iter()
        .position(|r| r.0["id"] == id)
        .ok_or_else(|| Problem::not_found(format!("no report {id:?} of this VEN")))?;
    Ok(f(mine, at))
}

async fn report(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer<Value> {
    let ven = s.openadr.ven_of(&headers)?;
    with_report(&s, &ven, &id, |mine, at| Json(mine[at].0.clone()))
}

async fn put_report(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Answer<Value> {
    let ven = s.openadr.ven_of(&headers)?;
    let created = with_report(&s, &ven, &id, |mine, at| {
        mine[at].0["createdDateTime"].as_str().map(str::to_string)
    })?;
    let v = accept_report(&s, &ven, &body, id.clone(), created)?;
    let size = serde_json::to_vec(&v).map_or(0, |b| b.len());
    with_report(&s, &ven, &id, |mine, at| {
        mine[at] = (v.clone(), size);
        keep_within_bounds(mine);
        Json(v)
    })
}

async fn delete_report(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer<Value> {
    let ven = s.openadr.ven_of(&headers)?;
    with_report(&s, &ven, &id, |mine, at| Json(mine.remove(at).0))
}

async fn subscriptions(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(page): Query<Page>,
) -> Answer<Vec<wire::Subscription>> {
    let ven = s.openadr.ven_of(&headers)?;
    let mut mine: Vec<_> = s
        .openadr
        .subscriptions
        .lock()
        .expect("subscriptions lock")
        .iter()
        .filter(|x| x.ven_id == ven.id)
        .cloned()
        .collect();
    if let Some(p) = &page.program_id {
        mine.retain(|x| &x.body.program_id == p);
    }
    Ok(Json(page.apply(mine)))
}

fn check_subscription(body: &[u8]) -> Result<wire::SubscriptionIn, Problem> {
    let b: wire::SubscriptionIn = parse_body(body)?;
    b.check().map_err(Problem::bad_request)?;
    if !wire::PROGRAM_IDS.contains(&b.program_id.as_str()) {
        return Err(Problem::bad_request(format!(
            "programID {:?}: the programs are {:?}",
            b.program_id,
            wire::PROGRAM_IDS
        )));
    }
    Ok(b)
}

async fn post_subscription(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<wire::Subscription>), Problem> {
    let ven = s.openadr.ven_of(&headers)?;
    let b = check_subscription(&body)?;
    let mut all = s.openadr.subscriptions.lock().expect("subscriptions lock");
    if all.iter().filter(|x| x.ven_id == ven.id).count() >= MAX_SUBSCRIPTIONS_PER_VEN {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            format!("a VEN holds at most {MAX_SUBSCRIPTIONS_PER_VEN} subscriptions"),
        ));
    }
    let now = wire::rfc3339(wire::wall_ms());
    let sub = wire::Subscription {
        id: format!("sub-{}", hex::encode(rand::random::<[u8; 8]>())),
        created_date_time: now.clone(),
        modification_date_time: now,
        object_type: "SUBSCRIPTION",
        ven_id: ven.id.clone(),
        body: b,
    };
    all.push(sub.clone());
    Ok((StatusCode::CREATED, Json(sub)))
}

fn with_subscription<T>(
    s: &Shared,
    ven: &vens::Ven,
    id: &str,
    f: impl FnOnce(&mut Vec<wire::Subscription>, usize) -> T,
) -> Result<T, Problem> {
    let mut all = s.openadr.subscriptions.lock().expect("subscriptions lock");
    let at = all
        .iter()
        .position(|x| x.id == id && x.ven_id == ven.id)
        .ok_or_else(|| Problem::not_found(format!("no subscription {id:?} of this VEN")))?;
    Ok(f(&mut all, at))
}

async fn subscription(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer<wire::Subscription> {
    let ven = s.openadr.ven_of(&headers)?;
    with_subscription(&s, &ven, &id, |all, at| Json(all[at].clone()))
}

async fn put_subscription(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Answer<wire::Subscription> {
    let ven = s.openadr.ven_of(&headers)?;
    let b = check_subscription(&body)?;
    with_subscription(&s, &ven, &id, |all, at| {
        all[at].body = b;
        all[at].modification_date_time = wire::rfc3339(wire::wall_ms());
        Json(all[at].clone())
    })
}

async fn delete_subscription(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer<wire::Subscription> {
    let ven = s.openadr.ven_of(&headers)?;
    with_subscription(&s, &ven, &id, |all, at| Json(all.remove(at)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        h
    }

    #[test]
    fn a_token_works_until_it_expires_or_its_ven_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let vtn = Vtn::new(dir.path());
        let file = vens::path_in(dir.path());
        let c = vens::add(&file, "home 4", Some("street-1/home-4"), None).unwrap();
        let token = vtn.issue_token(&c.id);
        assert_eq!(vtn.ven_of(&bearer(&token)).unwrap().id, c.id);
        let status = |h: &HeaderMap| vtn.ven_of(h).unwrap_err().status;
        assert_eq!(status(&HeaderMap::new()), StatusCode::UNAUTHORIZED);
        assert_eq!(status(&bearer("f00d")), StatusCode::UNAUTHORIZED);
        // An hour later.
        vtn.tokens.lock().unwrap().get_mut(&token).unwrap().1 = Instant::now();
        let e = vtn.ven_of(&bearer(&token)).unwrap_err();
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        assert!(e.detail.contains("expired"), "{}", e.detail);
        // A fresh one, then the VEN removed.
        let token = vtn.issue_token(&c.id);
        vens::remove(&file, &c.id).unwrap();
        vtn.registry.cached.lock().unwrap().0 = None;
        let e = vtn.ven_of(&bearer(&token)).unwrap_err();
        assert!(e.detail.contains("no longer registered"), "{}", e.detail);
    }

    #[test]
    fn a_ven_s_reports_are_bounded_by_count_and_bytes_the_newest_kept() {
        let report = |n: usize, bytes: usize| (json!({"id": n}), bytes);
        let mut mine: Vec<_> = (0..MAX_REPORTS_PER_VEN + 5)
            .map(|n| report(n, 10))
            .collect();
        keep_within_bounds(&mut mine);
        assert_eq!(mine.len(), MAX_REPORTS_PER_VEN);
        assert_eq!(mine[0].0["id"], 5);
        let mut mine = vec![report(0, 3 << 20), report(1, 3 << 20)];
        keep_within_bounds(&mut mine);
        assert_eq!(mine.len(), 1);
        assert_eq!(mine[0].0["id"], 1);
        let mut one = vec![report(0, 9 << 20)];
        keep_within_bounds(&mut one);
        assert_eq!(one.len(), 1, "the newest always stays");
    }

    #[test]
    fn tokens_are_bounded_and_the_oldest_goes_first() {
        let dir = tempfile::tempdir().unwrap();
        let vtn = Vtn::new(dir.path());
        let first = vtn.issue_token("ven-1");
        for _ in 0..MAX_TOKENS {
            vtn.issue_token("ven-1");
        }
        let t = vtn.tokens.lock().unwrap();
        assert_eq!(t.len(), MAX_TOKENS);
        assert!(!t.contains_key(&first));
    }
}
