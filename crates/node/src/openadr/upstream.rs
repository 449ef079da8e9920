//! What an upstream VTN's events say about the community, per slot: the first piece of the
//! node as a VEN of its grid operator (issue 23). It reads events as OpenADR 3.1 writes them
//! (the event's `intervalPeriod` the default of its intervals, each interval starting where the
//! one before ended unless it names its own start; durations in ISO 8601, as `PT15M` or
//! `P0Y0M0DT0H15M0S`) and gives each 15-minute slot the lowest `IMPORT_CAPACITY_LIMIT` and
//! `EXPORT_CAPACITY_LIMIT` of the intervals that cover it whole or in part, kW.
//!
//! Not yet wired: the grid operator service will cap the sum of the connections' envelopes with
//! these limits once the node follows an upstream VTN.

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

/// The limits of one slot, kW (`None`: no event limits it).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SlotLimits {
    pub import_kw: Option<f64>,
    pub export_kw: Option<f64>,
}

fn lower(a: Option<f64>, b: f64) -> Option<f64> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// The capacity limits per slot in `events` (an upstream VTN's `GET /events` answer). Intervals
/// without a start or duration, limits that are not non-negative numbers, and intervals longer
/// than [`MAX_EVENT_SLOTS`] are left out; what they say is reported in the second value, one
/// line each.
pub fn capacity_limits(events: &[Value]) -> (BTreeMap<u64, SlotLimits>, Vec<String>) {
    let mut slots: BTreeMap<u64, SlotLimits> = BTreeMap::new();
    let mut skipped = Vec::new();
    for e in events {
        let id = e["id"].as_str().unwrap_or("?");
        let default_start = e["intervalPeriod"]["start"].as_str().and_then(time_ms);
        let default_duration = e["intervalPeriod"]["duration"]
            .as_str()
            .and_then(duration_s);
        let mut next_start = default_start;
        for i in e["intervals"].as_array().into_iter().flatten() {
            let own = &i["intervalPeriod"];
            let start = own["start"].as_str().and_then(time_ms).or(next_start);
            let duration = own["duration"]
                .as_str()
                .and_then(duration_s)
                .or(default_duration);
            let (Some(start), Some(duration)) = (start, duration) else {
                skipped.push(format!(
                    "event {id}: an interval without a start or duration"
                ));
                next_start = None;
                continue;
            };
            let end = start.saturating_add(duration.saturating_mul(1_000));
            next_start = Some(end);
            let (first, last) = (start / SLOT_MS, end.saturating_sub(1) / SLOT_MS);
            if end <= start || last - first >= MAX_EVENT_SLOTS {
                skipped.push(format!("event {id}: an interval of {duration} s"));
                continue;
            }
            for p in i["payloads"].as_array().into_iter().flatten() {
                let kind = p["type"].as_str().unwrap_or("");
                if !matches!(kind, "IMPORT_CAPACITY_LIMIT" | "EXPORT_CAPACITY_LIMIT") {
                    continue;
                }
                let Some(kw) = p["values"][0]
                    .as_f64()
                    .filter(|v| v.is_finite() && *v >= 0.0)
                else {
                    skipped.push(format!("event {id}: {kind} {} is no power", p["values"]));
                    continue;
                };
                for slot in first..=last {
                    let s = slots.entry(slot).or_default();
                    if kind == "IMPORT_CAPACITY_LIMIT" {
                        s.import_kw = lower(s.import_kw, kw);
                    } else {
                        s.export_kw = lower(s.export_kw, kw);
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
        let (slots, skipped) = capacity_limits(&events);
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
        assert_eq!(at(4), SlotLimits::default());
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
        let (slots, skipped) = capacity_limits(&events);
        assert!(slots.is_empty(), "{slots:?}");
        assert_eq!(skipped.len(), 4, "{skipped:?}");
    }
}
