//! The live event stream: `GET /v1/events` upgrades to a WebSocket that sends one JSON message
//! per committed block (and a greeting first), for the dashboard and any client that would
//! otherwise poll.
//!
//! Limits: the node keeps the last [`EVENTS_CAPACITY`] events for slow subscribers; one that falls
//! further behind gets a `lagged` message saying how many it missed and continues from the newest.
//! At most [`MAX_SUBSCRIBERS`] streams are open at once, and [`MAX_SUBSCRIBERS_PER_CLIENT`] per
//! client address; more get 503. The node pings every third of the server's idle timeout and ends
//! a stream whose client has sent nothing (not even a pong) for the whole idle timeout, or that
//! does not take a message within [`SEND_TIMEOUT`]. Clients only listen: anything else they send
//! is ignored (a close ends the stream).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio::sync::broadcast;
use utoipa::ToSchema;

use crate::Shared;

/// Events kept for subscribers that fall behind.
pub const EVENTS_CAPACITY: usize = 256;
/// Most event streams open at once.
pub const MAX_SUBSCRIBERS: usize = 64;
/// Most event streams one client address may hold.
pub const MAX_SUBSCRIBERS_PER_CLIENT: usize = 4;
/// Longest wait for a client to take one message.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// One message of the stream.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NodeEvent {
    /// The first message: where the chain stands.
    Hello {
        chain_id: String,
        height: u64,
        timestamp_ms: u64,
    },
    /// A block was committed.
    Block {
        height: u64,
        hash: String,
        txs: u32,
        timestamp_ms: u64,
        /// The market slot the block's time falls in.
        slot: u64,
    },
    /// This subscriber fell behind and missed `missed` events.
    Lagged { missed: u64 },
}

/// The node's event channel and its subscriber count.
pub struct Events {
    tx: broadcast::Sender<NodeEvent>,
    subscribers: AtomicUsize,
    per_client: Mutex<HashMap<IpAddr, usize>>,
    idle: Duration,
}

impl Events {
    /// The stream's state; streams end after `idle` without a word from their client.
    pub fn new(idle: Duration) -> Events {
        Events {
            tx: broadcast::channel(EVENTS_CAPACITY).0,
            subscribers: AtomicUsize::new(0),
            per_client: Mutex::new(HashMap::new()),
            idle,
        }
    }
}

impl Events {
    /// Publishes a committed block (nobody listening is fine).
    pub fn block(&self, f: &gridmesh_consensus::Finalized) {
        let _ = self.tx.send(NodeEvent::Block {
            height: f.height,
            hash: f.hash.to_string(),
            txs: f.tx_count,
            timestamp_ms: f.timestamp_ms,
            slot: gridmesh_types::units::slot_of(f.timestamp_ms),
        });
    }

    pub fn subscribers(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }
}

/// Counts a subscriber, in all and for its client, while its stream is open.
struct Subscription(Arc<Shared>, IpAddr);

impl Subscription {
    /// Counts a new stream of `client`, unless that would pass a bound.
    fn open(s: &Arc<Shared>, client: IpAddr) -> Result<Subscription, String> {
        let mut per_client = s.events.per_client.lock().expect("per-client lock");
        let mine = per_client.get(&client).copied().unwrap_or(0);
        if mine >= MAX_SUBSCRIBERS_PER_CLIENT {
            return Err(format!(
                "at most {MAX_SUBSCRIBERS_PER_CLIENT} event streams may be open from one address"
            ));
        }
        if s.events.subscribers.load(Ordering::Relaxed) >= MAX_SUBSCRIBERS {
            return Err(format!(
                "at most {MAX_SUBSCRIBERS} event streams may be open at once"
            ));
        }
        s.events.subscribers.fetch_add(1, Ordering::Relaxed);
        per_client.insert(client, mine + 1);
        Ok(Subscription(s.clone(), client))
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut per_client = self.0.events.per_client.lock().expect("per-client lock");
        if let Some(n) = per_client.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                per_client.remove(&self.1);
            }
        }
        self.0.events.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Live events over a WebSocket: a `hello`, then a `block` message per committed block (JSON
/// text frames, see `NodeEvent`).
#[utoipa::path(
    get,
    path = "/v1/events",
    responses(
        (status = 101, description = "Switching to a WebSocket of JSON `NodeEvent` messages", body = NodeEvent),
        (status = 503, description = "Too many streams open", body = crate::api::ErrorBody)
    )
)]
pub async fn get_events(
    State(s): State<Arc<Shared>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    ws: WebSocketUpgrade,
) -> Response {
    let guard = match Subscription::open(&s, client.ip()) {
        Ok(g) => g,
        Err(why) => {
            return crate::api::ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_streams",
                why,
            )
            .into_response()
        }
    };
    let rx = s.events.tx.subscribe();
    ws.on_upgrade(move |socket| stream(guard, rx, socket))
}

async fn stream(
    guard: Subscription,
    mut rx: broadcast::Receiver<NodeEvent>,
    mut socket: WebSocket,
) {
    let idle = guard.0.events.idle;
    let mut ping = tokio::time::interval(idle / 3);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let mut heard = tokio::time::Instant::now();
    let hello = {
        let chain = guard.0.chain.read().expect("chain lock");
        NodeEvent::Hello {
            chain_id: chain.chain_id().to_string(),
            height: chain.head().height,
            timestamp_ms: chain.head().timestamp_ms,
        }
    };
    if send(&mut socket, &hello).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            event = rx.recv() => {
                let event = match event {
                    Ok(e) => e,
                    Err(broadcast::error::RecvError::Lagged(missed)) => NodeEvent::Lagged { missed },
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if send(&mut socket, &event).await.is_err() {
                    return;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => heard = tokio::time::Instant::now(),
            },
            _ = ping.tick() => {
                if heard.elapsed() >= idle {
                    tracing::debug!("ending an event stream whose client went quiet");
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
                let sent = tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Ping(Default::default()))).await;
                if !matches!(sent, Ok(Ok(()))) {
                    return;
                }
            }
        }
    }
}

/// Sends one event; an error also when the client has not taken it within [`SEND_TIMEOUT`].
async fn send(socket: &mut WebSocket, e: &NodeEvent) -> Result<(), ()> {
    let text = serde_json::to_string(e).expect("events serialise");
    match tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Text(text.into()))).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}
