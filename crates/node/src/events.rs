//! The live event stream: `GET /v1/events` upgrades to a WebSocket that sends one JSON message
//! per committed block (and a greeting first), for the dashboard and any client that would
//! otherwise poll.
//!
//! Limits: the node keeps the last [`EVENTS_CAPACITY`] events for slow subscribers; one that falls
//! further behind gets a `lagged` message saying how many it missed and continues from the newest.
//! At most [`MAX_SUBSCRIBERS`] streams are open at once; more get 503. Clients only listen:
//! anything they send is ignored (a close ends the stream).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
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
}

impl Default for Events {
    fn default() -> Self {
        Events {
            tx: broadcast::channel(EVENTS_CAPACITY).0,
            subscribers: AtomicUsize::new(0),
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

/// Counts a subscriber while its stream is open.
struct Subscription(Arc<Shared>);

impl Drop for Subscription {
    fn drop(&mut self) {
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
pub async fn get_events(State(s): State<Arc<Shared>>, ws: WebSocketUpgrade) -> Response {
    let open = s.events.subscribers.fetch_add(1, Ordering::Relaxed);
    let guard = Subscription(s.clone());
    if open >= MAX_SUBSCRIBERS {
        drop(guard);
        return crate::api::ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            format!("at most {MAX_SUBSCRIBERS} event streams may be open at once"),
        )
        .into_response();
    }
    let rx = s.events.tx.subscribe();
    ws.on_upgrade(move |socket| stream(guard, rx, socket))
}

async fn stream(
    guard: Subscription,
    mut rx: broadcast::Receiver<NodeEvent>,
    mut socket: WebSocket,
) {
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
                Some(Ok(_)) => {}
            },
        }
    }
}

async fn send(socket: &mut WebSocket, e: &NodeEvent) -> Result<(), axum::Error> {
    let text = serde_json::to_string(e).expect("events serialise");
    socket.send(Message::Text(text.into())).await
}
