//! What an upstream VTN's events say about the community, per slot: the node as a VEN of its
//! grid operator (issue 23; the client that fetches them is [`super::follow`]). It reads events
//! as OpenADR 3.1 writes them (the event's `intervalPeriod` the default of its intervals, each
//! interval starting where the one before ended unless it names its own start; durations in
//! ISO 8601, as `PT15M` or `P0Y0M0DT0H15M0S`) and gives each 15-minute slot
//!
//! - the lowest `IMPORT_CAPACITY_LIMIT` and `EXPORT_CAPACITY_LIMIT` of the intervals that cover it
//!   whole or in part, kW: a limit holds for every moment it names;
//! - the `PRICE` and `EXPORT_PRICE` of the interval that covers the slot's start, currency per
//!   kWh; where several do, the event of the highest priority (OpenADR's lowest number, none the
//!   lowest) wins, and between equals the one listed last.

use std::collections::BTreeMap;

use gridmesh_types::units::{parse_rfc3339_ms as time_ms, SLOT_MS};
use serde_json::Value;

/// Most slots one event may cover (a week).
pub const MAX_EVENT_SLOTS: u64 = 7 * 96;

/// An ISO 8601 duration in seconds (`PnYnMnWnDTnHnMnS`; years and months only as zero, their
/// length depending on the calendar), or `None` if it is not one.
pub fn duration_s(text: &str) -> Option<u64> {
    let rest = text.strip_prefix('P')?;
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) if !t.is_empty() => (d, Some(t)),
        Some(_) => return None,
        None => (rest, None),
    };
    let mut total: u64 = 0;
    let mut parts = 0;
    let mut take = |s: &str, units: &[(char, u64)]| -> Option<()> {
        let mut number = String::new();
        let mut allowed = units.iter();
        for c in s.chars() {
            if c.is_ascii_digit() {
                number.push(c);
                continue;
            }
            // Each unit at most once, in order.
            let (_, seconds) = allowed.by_ref().find(|(u, _)| *u == c)?;
            let n: u64 = number.parse().ok()?;
            number.clear();
            if *seconds == 0 && n != 0 {
                return None;
            }
            total = total.checked_add(n.checked_mul(*seconds)?)?;
            parts += 1;
        }
        number.is_empty().then_some(())
    };
    take(date, &[('Y', 0), ('M', 0), ('W', 604_800), ('D', 86_400)])?;
    if let Some(t) = time {
        take(t, &[('H', 3_600), ('M', 60), ('S', 1)])?;
    }
    (parts > 0).then_some(total)
}

/// What the upstream's events set for one slot (`None`: nothing).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SlotTerms {
    pub import_kw: Option<f64>,
    pub export_kw: Option<f64>,
    /// Currency per kWh, as the upstream program writes it.
    pub price_per_kwh: Option<f64>,
    pub export_price_per_kwh: Option<f64>,
}

impl SlotTerms {
    pub fn is_empty(&self) -> bool {
        *self == SlotTerms::default()
    }
}

fn lower(a: Option<f64>, b: f64) -> Option<f64> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// One interval of an event, resolved: Unix milliseconds `[start_ms, end_ms)` and its payloads.
struct Span<'a> {
    start_ms: u64,
    end_ms: u64,
    payloads: &'a [Value],
}

impl Span<'_> {
    /// The slots it touches, first and last.
    fn slots(&self) -> (u64, u64) {
        (self.start_ms / SLOT_MS, (self.end_ms - 1) / SLOT_MS)
    }
}

/// The intervals of `event` with their times; what is left out is said in `skipped`.
fn spans<'a>(event: &'a Value, skipped: &mut Vec<String>) -> Vec<Span<'a>> {
    let id = event["id"]
        .as_str()
        .or(event["resourceName"].as_str())
        .unwrap_or("?");
    let default_start = event["intervalPeriod"]["start"].as_str().and_then(time_ms);
    let default_duration = event["intervalPeriod"]["duration"]
        .as_str()
        .and_then(duration_s);
    let mut next_start = default_start;
    let mut out = Vec::new();
    for i in event["intervals"].as_array().into_iter().flatten() {
        let own = &i["intervalPeriod"];
        let start = own["start"].as_str().and_then(time_ms).or(next_start);
        let duration = own["duration"]
            .as_str()
            .and_then(duration_s)
            .or(default_duration);
        let (Some(start_ms), Some(duration)) = (start, duration) else {
            skipped.push(format!(
                "event {id}: an interval without a start or duration"
            ));
            next_start = None;
            continue;
        };
        let end_ms = start_ms.saturating_add(duration.saturating_mul(1_000));
        next_start = Some(end_ms);
        if end_ms <= start_ms || (end_ms - 1) / SLOT_MS - start_ms / SLOT_MS >= MAX_EVENT_SLOTS {
            skipped.push(format!("event {id}: an interval of {duration} s"));
            continue;
        }
        out.push(Span {
            start_ms,
            end_ms,
            payloads: i["payloads"].as_array().map_or(&[], Vec::as_slice),
        });
    }
    out
}

/// The payload types this node acts on.
pub const FOLLOWED_PAYLOADS: [&str; 4] = [
    "IMPORT_CAPACITY_LIMIT",
    "EXPORT_CAPACITY_LIMIT",
    "PRICE",
    "EXPORT_PRICE",
];

/// The first and last slot `event` sets something for (a limit or a price), if any.
pub fn event_slots(event: &Value) -> Option<(u64, u64)> {
    let mut range: Option<(u64, u64)> = None;
    for span in spans(event, &mut Vec::new()) {
        let followed = span
            .payloads
            .iter()
            .any(|p| FOLLOWED_PAYLOADS.contains(&p["type"].as_str().unwrap_or("")));
        if followed {
            let (a, b) = span.slots();
            range = Some(range.map_or((a, b), |(x, y)| (x.min(a), y.max(b))));
        }
    }
    range
}

/// The values of `payload` in the intervals of `obj` (an event, or a report's resource: their
/// intervals are read alike) that are exactly one slot, by slot: the first value, a finite
/// number. Intervals of other lengths or starts, and values that are no number, are left out and
/// said in the second value.
pub fn slot_values(obj: &Value, payload: &str) -> (Vec<(u64, f64)>, Vec<String>) {
    let mut skipped = Vec::new();
    let mut out = Vec::new();
    for span in spans(obj, &mut skipped) {
        for p in span.payloads.iter().filter(|p| p["type"] == payload) {
            if span.start_ms % SLOT_MS != 0 || span.end_ms - span.start_ms != SLOT_MS {
                skipped.push(format!(
                    "{payload} over {}..{} ms is not one 15-minute slot",
                    span.start_ms, span.end_ms
                ));
                continue;
            }
            match p["values"][0].as_f64().filter(|v| v.is_finite()) {
                Some(v) => out.push((span.start_ms / SLOT_MS, v)),
                None => skipped.push(format!("{payload} {} is no number", p["values"])),
            }
        }
    }
    (out, skipped)
}

/// What `events` (an upstream VTN's `GET /events` answer) set per slot. Intervals without a
/// start or duration, values that are not non-negative numbers (a negative price included: the
/// community's tariff has none), and intervals longer than [`MAX_EVENT_SLOTS`] are left out;
/// what they say is reported in the second value, one line each.
pub fn slot_terms(events: &[Value]) -> (BTreeMap<u64, SlotTerms>, Vec<String>) {
    let mut slots: BTreeMap<u64, SlotTerms> = BTreeMap::new();
    // Who set each slot's price and export price: (priority, listed index), the least wins.
    let mut price_by: BTreeMap<(u64, bool), (u64, std::cmp::Reverse<usize>)> = BTreeMap::new();
    let mut skipped = Vec::new();
    for (index, e) in events.iter().enumerate() {
        let id = e["id"].as_str().unwrap_or("?");
        let priority = e["priority"].as_u64().unwrap_or(u64::MAX);
        for span in spans(e, &mut skipped) {
            let (first, last) = span.slots();
            for p in span.payloads {
                let kind = p["type"].as_str().unwrap_or("");
                if !FOLLOWED_PAYLOADS.contains(&kind) {
                    continue;
                }
                let Some(v) = p["values"][0]
                    .as_f64()
                    .filter(|v| v.is_finite() && *v >= 0.0)
                else {
                    skipped.push(format!("event {id}: {kind} {} is left out", p["values"]));
                    continue;
                };
                for slot in first..=last {
                    let start = slot * SLOT_MS;
                    match kind {
                        "IMPORT_CAPACITY_LIMIT" => {
                            let s = slots.entry(slot).or_default();
                            s.import_kw = lower(s.import_kw, v);
                        }
                        "EXPORT_CAPACITY_LIMIT" => {
                            let s = slots.entry(slot).or_default();
                            s.export_kw = lower(s.export_kw, v);
                        }
                        _ if start >= span.start_ms && start < span.end_ms => {
                            let export = kind == "EXPORT_PRICE";
                            let rank = (priority, std::cmp::Reverse(index));
                            if price_by.get(&(slot, export)).is_some_and(|r| *r < rank) {
                                continue;
                            }
                            price_by.insert((slot, export), rank);
                            let s = slots.entry(slot).or_default();
                            if export {
                                s.export_price_per_kwh = Some(v);
                            } else {
                                s.price_per_kwh = Some(v);
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    (slots, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn iso_8601_durations_as_vtns_write_them() {
        assert_eq!(duration_s("PT15M"), Some(900));
        assert_eq!(duration_s("P0Y0M0DT0H15M0S"), Some(900));
        assert_eq!(duration_s("P1DT1H"), Some(90_000));
        assert_eq!(duration_s("P1W"), Some(604_800));
        assert_eq!(duration_s("PT0S"), Some(0));
        for bad in [
            "", "P", "PT", "15M", "P1M", "PT15", "PT1S15M", "P1H", "PTxM",
        ] {
            assert_eq!(duration_s(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn each_slot_takes_the_lowest_limit_of_the_intervals_covering_it() {
        // As openleadr-vtn answers: the event's period the default, intervals one after the
        // other; a second event names its own start and overlaps.
        let events = vec![
            json!({"id": "a", "intervalPeriod": {"start": "2026-12-06T17:00:00+00:00",
                "duration": "P0Y0M0DT0H15M0S"},
                "intervals": [
                    {"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [80]}]},
                    {"id": 1, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [60]},
                                            {"type": "PRICE", "values": [0.3]}]},
                    {"id": 2, "intervalPeriod": {"duration": "PT30M"},
                     "payloads": [{"type": "EXPORT_CAPACITY_LIMIT", "values": [40.5]}]}]}),
            json!({"id": "b", "intervals": [{"id": 0,
                "intervalPeriod": {"start": "2026-12-06T17:10:00Z", "duration": "PT10M"},
                "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [70]}]}]}),
        ];
        let (slots, skipped) = slot_terms(&events);
        assert!(skipped.is_empty(), "{skipped:?}");
        let first = time_ms("2026-12-06T17:00:00Z").unwrap() / SLOT_MS;
        assert_eq!(time_ms("2026-12-06T17:00:00+00:00"), Some(first * SLOT_MS));
        let at = |k: u64| slots.get(&(first + k)).copied().unwrap_or_default();
        // 17:00 80 kW, but b covers 17:10-17:20: 70; 17:15 60; 17:30-18:00 export 40.5.
        assert_eq!(at(0).import_kw, Some(70.0));
        assert_eq!(at(1).import_kw, Some(60.0));
        assert_eq!(at(2).export_kw, Some(40.5));
        assert_eq!(at(3).export_kw, Some(40.5));
        assert_eq!(at(2).import_kw, None);
        assert_eq!(at(4), SlotTerms::default());
        assert_eq!(slots.len(), 4);
    }

    #[test]
    fn nonsense_intervals_are_left_out_and_said() {
        let events = vec![json!({"id": "x", "intervals": [
            {"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [1]}]},
            {"id": 1, "intervalPeriod": {"start": "2026-12-06T17:00:00Z", "duration": "P30D"},
             "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [1]}]},
            {"id": 2, "intervalPeriod": {"start": "2026-12-06T17:00:00Z", "duration": "PT15M"},
             "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [-5]},
                          {"type": "EXPORT_CAPACITY_LIMIT", "values": ["lots"]}]}]})];
        let (slots, skipped) = slot_terms(&events);
        assert!(slots.is_empty(), "{slots:?}");
        assert_eq!(skipped.len(), 4, "{skipped:?}");
    }

    #[test]
    fn a_slot_takes_the_price_of_the_interval_at_its_start_and_the_highest_priority() {
        let events = vec![
            json!({"id": "day", "priority": 5, "intervalPeriod": {"start": "2026-12-06T17:00:00Z",
                "duration": "PT1H"},
                "intervals": [{"id": 0, "payloads": [{"type": "PRICE", "values": [0.30]},
                                                     {"type": "EXPORT_PRICE", "values": [0.08]}]}]}),
            // A higher priority for half an hour, starting mid-slot: the slot it starts in keeps
            // the price at its start.
            json!({"id": "peak", "priority": 1, "intervals": [{"id": 0,
                "intervalPeriod": {"start": "2026-12-06T17:20:00Z", "duration": "PT25M"},
                "payloads": [{"type": "PRICE", "values": [0.55]}]}]}),
            // A lower priority than "day": ignored where "day" speaks.
            json!({"id": "low", "intervals": [{"id": 0,
                "intervalPeriod": {"start": "2026-12-06T17:45:00Z", "duration": "PT30M"},
                "payloads": [{"type": "PRICE", "values": [0.10]},
                             {"type": "PRICE", "values": [-0.02]}]}]}),
        ];
        let (slots, skipped) = slot_terms(&events);
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        let first = time_ms("2026-12-06T17:00:00Z").unwrap() / SLOT_MS;
        let price = |k: u64| slots.get(&(first + k)).and_then(|s| s.price_per_kwh);
        assert_eq!(price(0), Some(0.30));
        assert_eq!(price(1), Some(0.30));
        assert_eq!(price(2), Some(0.55));
        assert_eq!(price(3), Some(0.30));
        assert_eq!(price(4), Some(0.10));
        assert_eq!(slots[&(first + 3)].export_price_per_kwh, Some(0.08));
        assert_eq!(slots[&(first + 4)].export_price_per_kwh, None);
        assert_eq!(event_slots(&events[1]), Some((first + 1, first + 2)));
        assert_eq!(event_slots(&json!({"id": "none", "intervals": []})), None);
    }
}
