//! Market areas (house -> street -> feeder) and the grid fees of each.
//!
//! Every area is a market. A slot clears bottom-up, as in gsy-e: first every leaf market (a
//! house), then each parent with the orders its children left unmatched, up to the root. An order
//! pays the fee of every market it passes through, so a trade inside one house pays one fee and a
//! trade across the feeder pays the fees of both houses, both streets and the feeder:
//!
//! - an ask entering a market (its own area first) raises its price by that market's fee;
//! - a bid leaving a market for the parent lowers its price by that market's fee;
//! - so a bid and an ask meet in their lowest common market with
//!   `bid − fees on the buyer's side >= ask + fees on the seller's side + the meeting market's fee`,
//!   and every fee on the path is paid exactly once, by the buyer (gsy-e's rule: the buyer pays all
//!   grid fees, a seller never receives less than it asked).
//!
//! Efficient mechanisms (pay-as-clear, pay-as-bid, pay-as-offer) leave no crossing orders behind in
//! a market, so orders of one branch always meet inside it. Huang's price setters and the
//! community mechanism's orders outside its price can move up unmatched and meet a neighbour of
//! their own branch higher up; such a trade pays every market the two orders passed through (as in
//! gsy-e, where forwarded orders pay the fee of the market they trade in).
//!
//! A percentage fee is a share of the original limit price of the order that carries it (the
//! ask's for the seller's side and the meeting market, the bid's for the buyer's side), added to
//! the constant part: `fee = constant + floor(price × basis points / 10,000)`. Fees do not
//! compound.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

use crate::order::AreaId;
use crate::MarketError;

/// Most areas one market hierarchy may have.
pub const MAX_AREAS: usize = 65_536;
/// Deepest hierarchy (root = depth 0).
pub const MAX_DEPTH: usize = 8;
/// Longest name of one area (one path segment).
pub const MAX_AREA_NAME: usize = 32;

/// The fee a market charges for every kWh traded in or through it.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    BorshSerialize,
    BorshDeserialize,
)]
pub struct GridFee {
    /// Base units per kWh.
    pub constant_per_kwh: u64,
    /// Share of the order's limit price, in basis points (1/100 of a percent).
    pub percent_bps: u32,
}

impl GridFee {
    /// The fee per kWh for an order of limit `price_per_kwh`.
    pub fn per_kwh(&self, price_per_kwh: u64) -> u64 {
        let pct = u128::from(price_per_kwh) * u128::from(self.percent_bps) / 10_000;
        self.constant_per_kwh.saturating_add(pct as u64)
    }

    pub fn is_zero(&self) -> bool {
        self.constant_per_kwh == 0 && self.percent_bps == 0
    }
}

/// Whether the market area `area` (a path like `street-1`; "" is the whole community) contains
/// the connection at `location` (`street-1/home-4`): itself or anything below it.
pub fn area_contains(area: &str, location: &str) -> bool {
    area.is_empty()
        || location
            .strip_prefix(area)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// A tree of market areas; area 0 is the root (the feeder, or the whole community).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Areas {
    parent: Vec<Option<AreaId>>,
    fee: Vec<GridFee>,
    /// Full path of each area: segments joined by '/', "" for the root.
    path: Vec<String>,
    depth: Vec<u32>,
    /// Path -> id (looked up for every order at clearing; never iterated).
    by_path: std::collections::HashMap<String, AreaId>,
}

impl Default for Areas {
    fn default() -> Self {
        Areas::flat()
    }
}

impl Areas {
    /// One market, no fees: every order in area 0.
    pub fn flat() -> Areas {
        Areas::with_root_fee(GridFee::default())
    }

    /// One market with a fee.
    pub fn with_root_fee(fee: GridFee) -> Areas {
        Areas {
            parent: vec![None],
            fee: vec![fee],
            path: vec![String::new()],
            depth: vec![0],
            by_path: [(String::new(), 0)].into_iter().collect(),
        }
    }

    /// A hierarchy with one area per distinct path prefix of `locations` ("street-1/house-4"
    /// creates "street-1" and "street-1/house-4" under the root), each charging the fee of its
    /// depth (`fees_by_depth[0]` for the root; depths beyond the list charge nothing).
    pub fn from_paths<'a>(
        locations: impl IntoIterator<Item = &'a str>,
        fees_by_depth: &[GridFee],
    ) -> Result<Areas, MarketError> {
        let mut areas = Areas::with_root_fee(fees_by_depth.first().copied().unwrap_or_default());
        for loc in locations {
            let mut parent = 0;
            if loc.is_empty() || areas.find(loc).is_some() {
                continue;
            }
            check_location(loc)?;
            // Each level's path is the location up to the slash after it (or all of it).
            let ends = loc.match_indices('/').map(|(i, _)| i);
            for (d, end) in ends.chain(std::iter::once(loc.len())).enumerate() {
                let path = &loc[..end];
                parent = match areas.find(path) {
                    Some(id) => id,
                    None => {
                        let fee = fees_by_depth.get(d + 1).copied().unwrap_or_default();
                        areas.add(parent, path.to_string(), fee)?
                    }
                };
            }
        }
        Ok(areas)
    }

    fn add(&mut self, parent: AreaId, path: String, fee: GridFee) -> Result<AreaId, MarketError> {
        if self.parent.len() >= MAX_AREAS {
            return Err(MarketError::TooManyAreas);
        }
        let id = self.parent.len() as AreaId;
        self.parent.push(Some(parent));
        self.fee.push(fee);
        self.by_path.insert(path.clone(), id);
        self.path.push(path);
        self.depth.push(self.depth[parent as usize] + 1);
        Ok(id)
    }

    /// The area with this path ("" is the root).
    pub fn find(&self, path: &str) -> Option<AreaId> {
        self.by_path.get(path).copied()
    }

    pub fn len(&self) -> usize {
        self.parent.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn parent(&self, area: AreaId) -> Option<AreaId> {
        self.parent[area as usize]
    }

    pub fn fee(&self, area: AreaId) -> GridFee {
        self.fee[area as usize]
    }

    pub fn path(&self, area: AreaId) -> &str {
        &self.path[area as usize]
    }

    pub fn depth(&self, area: AreaId) -> u32 {
        self.depth[area as usize]
    }

    /// Areas deepest first (ties by id): the order a slot clears in.
    pub(crate) fn bottom_up(&self) -> Vec<AreaId> {
        let mut ids: Vec<AreaId> = (0..self.len() as AreaId).collect();
        ids.sort_by_key(|&a| (std::cmp::Reverse(self.depth[a as usize]), a));
        ids
    }

    /// The total grid fee per kWh a trade between an ask at `seller` (limit `ask`) and a bid at
    /// `buyer` (limit `bid`) pays: every market on the path between them, once.
    pub fn path_fee(&self, seller: AreaId, ask: u64, buyer: AreaId, bid: u64) -> u64 {
        let (mut s, mut b) = (seller, buyer);
        let mut fee = 0u64;
        while self.depth(s) > self.depth(b) {
            fee = fee.saturating_add(self.fee(s).per_kwh(ask));
            s = self.parent(s).expect("deeper than the buyer");
        }
        while self.depth(b) > self.depth(s) {
            fee = fee.saturating_add(self.fee(b).per_kwh(bid));
            b = self.parent(b).expect("deeper than the seller");
        }
        while s != b {
            fee = fee.saturating_add(self.fee(s).per_kwh(ask));
            fee = fee.saturating_add(self.fee(b).per_kwh(bid));
            s = self.parent(s).expect("not the root");
            b = self.parent(b).expect("not the root");
        }
        fee.saturating_add(self.fee(s).per_kwh(ask))
    }
}

/// Whether `loc` names an area (`street-1/house-4`; empty is the root): at most [`MAX_DEPTH`]
/// levels, each named by 1 to [`MAX_AREA_NAME`] letters, digits, '-', '_' or '.'. What
/// [`Areas::from_paths`] requires of each location, without building a hierarchy.
pub fn check_location(loc: &str) -> Result<(), MarketError> {
    if loc.is_empty() {
        return Ok(());
    }
    if loc.split('/').count() > MAX_DEPTH {
        return Err(MarketError::BadLocation(
            loc.to_string(),
            format!("deeper than {MAX_DEPTH} levels"),
        ));
    }
    loc.split('/').try_for_each(|seg| check_segment(loc, seg))
}

fn check_segment(loc: &str, seg: &str) -> Result<(), MarketError> {
    if seg.is_empty() || seg.len() > MAX_AREA_NAME {
        return Err(MarketError::BadLocation(
            loc.to_string(),
            format!("every level needs a name of 1 to {MAX_AREA_NAME} characters"),
        ));
    }
    if !seg
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(MarketError::BadLocation(
            loc.to_string(),
            "names may use letters, digits, '-', '_' and '.'".to_string(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_area_contains_itself_and_what_lies_below_it() {
        assert!(area_contains("", "street-1/home-4"));
        assert!(area_contains("street-1", "street-1/home-4"));
        assert!(area_contains("street-1/home-4", "street-1/home-4"));
        assert!(!area_contains("street-1", "street-10/home-4"));
        assert!(!area_contains("street-1/home-4", "street-1"));
    }

    #[test]
    fn paths_build_a_tree_with_fees_by_depth() {
        let fees = [
            GridFee {
                constant_per_kwh: 20,
                percent_bps: 0,
            },
            GridFee {
                constant_per_kwh: 10,
                percent_bps: 0,
            },
        ];
        let a = Areas::from_paths(["n1/h1", "n2/h2", "n1/h3", ""], &fees).unwrap();
        assert_eq!(a.len(), 6);
        let h1 = a.find("n1/h1").unwrap();
        let h3 = a.find("n1/h3").unwrap();
        let h2 = a.find("n2/h2").unwrap();
        assert_eq!(a.depth(h1), 2);
        assert_eq!(a.fee(h1), GridFee::default());
        assert_eq!(a.path_fee(h1, 100, h1, 200), 0);
        assert_eq!(a.path_fee(h1, 100, h3, 200), 10);
        assert_eq!(a.path_fee(h2, 100, h1, 200), 10 + 20 + 10);
        assert_eq!(a.bottom_up()[..3], [h1, h2, h3]);
        // Every level of a deeper path is an area under the one above it.
        let deep = Areas::from_paths(["a/b/c", "a/d", "a/b"], &fees).unwrap();
        assert_eq!(deep.len(), 5);
        let (a, b, c, d) = (
            deep.find("a").unwrap(),
            deep.find("a/b").unwrap(),
            deep.find("a/b/c").unwrap(),
            deep.find("a/d").unwrap(),
        );
        assert_eq!(
            (
                deep.parent(a),
                deep.parent(b),
                deep.parent(c),
                deep.parent(d)
            ),
            (Some(0), Some(a), Some(b), Some(a))
        );
        assert_eq!((deep.depth(c), deep.path(c)), (3, "a/b/c"));
        assert_eq!((deep.fee(a), deep.fee(b)), (fees[1], GridFee::default()));
        assert!(Areas::from_paths(["a//b"], &fees).is_err());
        assert!(Areas::from_paths(["a b"], &fees).is_err());
        assert!(Areas::from_paths(["a/b/c/d/e/f/g/h/i"], &fees).is_err());
    }

    #[test]
    fn a_location_is_checked_as_a_hierarchy_would_take_it() {
        let long = "x".repeat(MAX_AREA_NAME + 1);
        let deepest = ["a"; MAX_DEPTH].join("/");
        let deeper = ["a"; MAX_DEPTH + 1].join("/");
        for (loc, ok) in [
            ("", true),
            ("street-1/house_4.b", true),
            (deepest.as_str(), true),
            (deeper.as_str(), false),
            ("a//b", false),
            ("/a", false),
            ("a/", false),
            ("a b", false),
            ("street-1/häuser", false),
            (long.as_str(), false),
        ] {
            let checked = check_location(loc);
            assert_eq!(checked.is_ok(), ok, "{loc}: {checked:?}");
            // The same verdict and message as building a hierarchy with it.
            assert_eq!(checked.err(), Areas::from_paths([loc], &[]).err(), "{loc}");
        }
    }

    #[test]
    fn percentage_fees_are_shares_of_the_limit_price() {
        let f = GridFee {
            constant_per_kwh: 1,
            percent_bps: 500,
        };
        assert_eq!(f.per_kwh(100_000), 1 + 5_000);
    }
}
