//! The VTN's notifier: every [`NOTIFY_INTERVAL`], each subscription's events (those its VEN
//! sees in its program) are compared with what was last delivered to it, and each new, changed or
//! ended event is posted to the subscription's callback URL as an OpenADR notification
//! (`{"objectType": "EVENT", "operation": "POST" | "PUT" | "DELETE", "object": event}`), with
//! the subscription's bearer token. A delivery that fails is tried again next round; one
//! subscription's slow callback holds up only that subscription.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::Shared;

/// How often subscriptions are checked for changes.
pub const NOTIFY_INTERVAL: Duration = Duration::from_secs(1);
/// Longest a callback may take to answer.
pub const CALLBACK_TIMEOUT: Duration = Duration::from_secs(5);

/// What was last delivered, per (subscription, event id).
type Delivered = HashMap<(String, String), Value>;

#[derive(Default)]
struct State {
    delivered: Delivered,
    in_flight: HashSet<String>,
    failing: HashSet<String>,
}

/// Runs the notifier until the runtime ends.
pub fn spawn(shared: Arc<Shared>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let state = Arc::new(Mutex::new(State::default()));
        let agent = gridmesh_https::agent()
            .timeout(CALLBACK_TIMEOUT)
            .redirects(0)
            .build();
        let mut tick = tokio::time::interval(NOTIFY_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            round(&shared, &state, &agent);
        }
    })
}

/// One notification of `op` on `event`.
pub fn notification(op: &str, event: &Value) -> Value {
    json!({
        "objectType": "EVENT",
        "operation": op,
        "object": event,
        "targets": event["targets"],
    })
}

fn round(shared: &Arc<Shared>, state: &Arc<Mutex<State>>, agent: &ureq::Agent) {
    let vtn = &shared.openadr;
    let registered: HashMap<String, super::vens::Ven> = vtn
        .registry
        .vens()
        .into_iter()
        .map(|v| (v.id.clone(), v))
        .collect();
    // Subscriptions and reports of VENs removed since go with them.
    let subs = {
        let mut all = vtn.subscriptions.lock().expect("subscriptions lock");
        all.retain(|s| registered.contains_key(&s.ven_id));
        all.clone()
    };
    vtn.reports
        .lock()
        .expect("reports lock")
        .retain(|ven, _| registered.contains_key(ven));
    {
        let ids: HashSet<&str> = subs.iter().map(|s| s.id.as_str()).collect();
        let mut st = state.lock().expect("notifier lock");
        st.delivered
            .retain(|(sub, _), _| ids.contains(sub.as_str()));
    }
    // Each VEN's events, built once a round whatever its number of subscriptions.
    let mut events: HashMap<String, Vec<super::wire::Event>> = HashMap::new();
    for sub in subs {
        let Some(ven) = registered.get(&sub.ven_id) else {
            continue;
        };
        let visible = events
            .entry(ven.id.clone())
            .or_insert_with(|| super::visible_events(shared, ven));
        let now: HashMap<String, Value> = visible
            .iter()
            .filter(|e| e.program_id == sub.body.program_id)
            .map(|e| {
                (
                    e.id.clone(),
                    serde_json::to_value(e).expect("events serialise"),
                )
            })
            .collect();
        let mut changes: Vec<(String, &str, Value)> = Vec::new();
        {
            let mut st = state.lock().expect("notifier lock");
            if st.in_flight.contains(&sub.id) {
                continue;
            }
            for (id, e) in &now {
                match st.delivered.get(&(sub.id.clone(), id.clone())) {
                    None => changes.push((id.clone(), "POST", e.clone())),
                    Some(old) if old != e => changes.push((id.clone(), "PUT", e.clone())),
                    Some(_) => {}
                }
            }
            for ((s, id), old) in &st.delivered {
                if s == &sub.id && !now.contains_key(id) {
                    changes.push((id.clone(), "DELETE", old.clone()));
                }
            }
            if changes.is_empty() {
                continue;
            }
            st.in_flight.insert(sub.id.clone());
        }
        let (state, agent, sub) = (state.clone(), agent.clone(), sub.clone());
        tokio::task::spawn_blocking(move || {
            let mut done = Vec::new();
            let mut error = None;
            for (id, op, event) in changes {
                // Not subscribed to this operation: it counts as delivered.
                let targets = sub.body.wants("EVENT", op);
                let sent = targets.iter().try_for_each(|(url, token)| {
                    let mut req = agent.post(url);
                    if let Some(t) = token {
                        req = req.set("Authorization", &format!("Bearer {t}"));
                    }
                    req.send_json(notification(op, &event))
                        .map(drop)
                        .map_err(|e| format!("{url}: {e}"))
                });
                match sent {
                    Ok(()) => done.push((id, op, event)),
                    Err(e) => {
                        error = Some(e);
                        break;
                    }
                }
            }
            let mut st = state.lock().expect("notifier lock");
            for (id, op, event) in done {
                let key = (sub.id.clone(), id);
                if op == "DELETE" {
                    st.delivered.remove(&key);
                } else {
                    st.delivered.insert(key, event);
                }
            }
            match error {
                Some(e) => {
                    if st.failing.insert(sub.id.clone()) {
                        tracing::warn!(subscription = %sub.id, "OpenADR notification not delivered (tried again every second): {e}");
                    }
                }
                None => {
                    st.failing.remove(&sub.id);
                }
            }
            st.in_flight.remove(&sub.id);
        });
    }
}
