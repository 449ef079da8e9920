//! The clearing mechanisms of one market (one area), over orders whose prices already include the
//! grid fees of reaching this market (see [`crate::hierarchy`]).
//!
//! Every function sorts its inputs itself by the documented priority, so its result does not depend
//! on the order of the slices it is given.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

/// How a slot is cleared.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    BorshSerialize,
    BorshDeserialize,
)]
#[serde(rename_all = "kebab-case")]
#[borsh(use_discriminant = true)]
#[repr(u8)]
pub enum Mechanism {
    /// Two-sided uniform-price call auction: every trade at one clearing price.
    PayAsClear = 0,
    /// Two-sided continuous matching in arrival order; each trade at the bid's price.
    PayAsBid = 1,
    /// One-sided: buyers, highest limit first, take the cheapest offers at the offer's price.
    PayAsOffer = 2,
    /// Huang, Scheller-Wolf and Sycara's multi-unit trade-reduction double auction: truthful and
    /// budget-balanced (the price-setting orders do not trade; buyers pay the price-setting bid,
    /// sellers receive the price-setting ask).
    Huang = 3,
    /// Regulated energy sharing: one local price halfway between feed-in and retail tariff,
    /// volume split pro rata over the long side.
    Community = 4,
}

impl Mechanism {
    pub const ALL: [Mechanism; 5] = [
        Mechanism::PayAsClear,
        Mechanism::PayAsBid,
        Mechanism::PayAsOffer,
        Mechanism::Huang,
        Mechanism::Community,
    ];

    /// The name used on the command line, in config files and in results.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::PayAsClear => "pay-as-clear",
            Mechanism::PayAsBid => "pay-as-bid",
            Mechanism::PayAsOffer => "pay-as-offer",
            Mechanism::Huang => "huang",
            Mechanism::Community => "community",
        }
    }

    /// Whether the result is a batch (call) auction over all orders at gate closure. `PayAsBid` is
    /// continuous: its result depends on arrival times (but still not on the order orders are listed in).
    pub fn is_call_auction(self) -> bool {
        !matches!(self, Mechanism::PayAsBid)
    }

    /// Whether every trade of one market has the same price (reported as the clearing price).
    pub fn has_uniform_price(self) -> bool {
        matches!(self, Mechanism::PayAsClear | Mechanism::Community)
    }
}

impl std::fmt::Display for Mechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Mechanism {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mechanism::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown mechanism {s:?} (expected one of: {})",
                    Mechanism::ALL.map(|m| m.name()).join(", ")
                )
            })
    }
}

/// An order as one market sees it: its price after the fees of getting here, and what is left of it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Eff {
    /// Index of the original order.
    pub order: u32,
    /// Effective price in this market.
    pub price: u64,
    pub time: u64,
    pub id: u64,
    /// Energy still unmatched.
    pub rem: u64,
}

/// A match in one market, in effective prices; `bid`/`ask` index the slices given to the mechanism.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Match {
    pub bid: usize,
    pub ask: usize,
    pub energy_mwh: u64,
    /// The effective price the buyer pays in this market.
    pub buyer_price: u64,
    /// The effective price the seller receives in this market.
    pub seller_price: u64,
}

/// What one market's clearing produced.
#[derive(Debug, Default)]
pub(crate) struct Cleared {
    pub matches: Vec<Match>,
    /// The uniform price of this market, for mechanisms that have one and traded.
    pub price: Option<u64>,
}

fn bid_key(e: &Eff) -> (Reverse<u64>, u64, u64) {
    (Reverse(e.price), e.time, e.id)
}

fn ask_key(e: &Eff) -> (u64, u64, u64) {
    (e.price, e.time, e.id)
}

/// Sorts bids (best first: highest price, earliest, lowest id) and asks (lowest price first).
pub(crate) fn sort_book(bids: &mut [Eff], asks: &mut [Eff]) {
    bids.sort_unstable_by_key(bid_key);
    asks.sort_unstable_by_key(ask_key);
}

/// Clears one market. `bids` and `asks` are reordered (by priority) and their `rem` reduced by what
/// matched. `community_price` is the local price of the community mechanism (required for it).
pub(crate) fn clear_market(
    mechanism: Mechanism,
    bids: &mut [Eff],
    asks: &mut [Eff],
    community_price: Option<u64>,
) -> Cleared {
    match mechanism {
        Mechanism::PayAsClear => {
            sort_book(bids, asks);
            let matches = greedy(bids, asks, |_, _| (0, 0));
            let price = uniform_price(bids, asks, &matches);
            let matches = matches
                .into_iter()
                .map(|m| Match {
                    buyer_price: price.expect("there are matches"),
                    seller_price: price.expect("there are matches"),
                    ..m
                })
                .collect();
            Cleared { matches, price }
        }
        Mechanism::PayAsOffer => {
            sort_book(bids, asks);
            Cleared {
                matches: greedy(bids, asks, |_, a| (a.price, a.price)),
                price: None,
            }
        }
        Mechanism::PayAsBid => {
            sort_book(bids, asks);
            Cleared {
                matches: continuous(bids, asks),
                price: None,
            }
        }
        Mechanism::Huang => {
            sort_book(bids, asks);
            Cleared {
                matches: huang(bids, asks),
                price: None,
            }
        }
        Mechanism::Community => {
            sort_book(bids, asks);
            let price = community_price.expect("the community mechanism needs a tariff");
            let matches = community(bids, asks, price);
            let price = (!matches.is_empty()).then_some(price);
            Cleared { matches, price }
        }
    }
}

/// The welfare-maximising matching: best bid with cheapest ask while the bid covers the ask.
/// Inputs sorted by [`sort_book`]. `price(bid, ask)` gives (buyer, seller) prices per match.
fn greedy(
    bids: &mut [Eff],
    asks: &mut [Eff],
    price: impl Fn(&Eff, &Eff) -> (u64, u64),
) -> Vec<Match> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < bids.len() && j < asks.len() {
        if bids[i].rem == 0 {
            i += 1;
            continue;
        }
        if asks[j].rem == 0 {
            j += 1;
            continue;
        }
        if bids[i].price < asks[j].price {
            break;
        }
        let q = bids[i].rem.min(asks[j].rem);
        let (buyer_price, seller_price) = price(&bids[i], &asks[j]);
        out.push(Match {
            bid: i,
            ask: j,
            energy_mwh: q,
            buyer_price,
            seller_price,
        });
        bids[i].rem -= q;
        asks[j].rem -= q;
    }
    out
}

/// The uniform price of a greedy matching: the top of the interval of prices that clear the market,
/// `min(lowest matched bid, lowest ask with energy left)`. Every matched bid is at or above it and
/// every matched ask at or below it (the greedy stopped where the next bid is below the next ask).
/// See the crate docs for how this compares with gsy-e.
fn uniform_price(bids: &[Eff], asks: &[Eff], matches: &[Match]) -> Option<u64> {
    let last = matches.last()?;
    let marginal_bid = bids[last.bid].price;
    let next_ask = asks.iter().find(|a| a.rem > 0).map(|a| a.price);
    Some(next_ask.map_or(marginal_bid, |a| a.min(marginal_bid)))
}

/// Continuous double auction in arrival order (time, then id). An arriving order trades against
/// the best resting order on the other side while prices cross; every trade is at the bid's price.
fn continuous(bids: &mut [Eff], asks: &mut [Eff]) -> Vec<Match> {
    let mut arrivals: Vec<(u64, u64, bool, usize)> = bids
        .iter()
        .enumerate()
        .map(|(i, b)| (b.time, b.id, true, i))
        .chain(
            asks.iter()
                .enumerate()
                .map(|(j, a)| (a.time, a.id, false, j)),
        )
        .collect();
    arrivals.sort_unstable();
    // Slices are sorted by priority, so a smaller index is a better order: min-heaps of indices.
    let mut resting_bids: BinaryHeap<Reverse<usize>> = BinaryHeap::new();
    let mut resting_asks: BinaryHeap<Reverse<usize>> = BinaryHeap::new();
    let mut out = Vec::new();
    for (_, _, is_bid, k) in arrivals {
        // The arriving order takes the best resting orders on the other side while prices cross.
        let (incoming, resting, own_book, other_book) = if is_bid {
            (
                &mut bids[k],
                &mut *asks,
                &mut resting_bids,
                &mut resting_asks,
            )
        } else {
            (
                &mut asks[k],
                &mut *bids,
                &mut resting_asks,
                &mut resting_bids,
            )
        };
        while incoming.rem > 0 {
            let Some(&Reverse(r)) = other_book.peek() else {
                break;
            };
            let (bid_price, ask_price) = if is_bid {
                (incoming.price, resting[r].price)
            } else {
                (resting[r].price, incoming.price)
            };
            if bid_price < ask_price {
                break;
            }
            let q = incoming.rem.min(resting[r].rem);
            let (bid, ask) = if is_bid { (k, r) } else { (r, k) };
            out.push(Match {
                bid,
                ask,
                energy_mwh: q,
                buyer_price: bid_price,
                seller_price: bid_price,
            });
            incoming.rem -= q;
            resting[r].rem -= q;
            if resting[r].rem == 0 {
                other_book.pop();
            }
        }
        if incoming.rem > 0 {
            own_book.push(Reverse(k));
        }
    }
    out
}

/// Consecutive runs of equal price in a sorted slice: (start, end, price, total energy).
fn price_groups(side: &[Eff]) -> Vec<(usize, usize, u64, u64)> {
    let mut groups = Vec::new();
    let mut start = 0;
    while start < side.len() {
        let p = side[start].price;
        let mut end = start;
        let mut total = 0u64;
        while end < side.len() && side[end].price == p {
            total += side[end].rem;
            end += 1;
        }
        groups.push((start, end, p, total));
        start = end;
    }
    groups
}

/// Huang's trade reduction over price groups (orders of one side with the same price act as one
/// trader, as in pymarket). Walks the breakpoints of the stepwise demand and supply curves to the
/// last quantity where demand's price exceeds supply's; the groups that cover that quantity set the
/// prices and do not trade, the groups before them trade, and the long side gives up the difference
/// ([`reduce_long_side`]). Buyers pay the price-setting bid, sellers receive the price-setting ask.
fn huang(bids: &mut [Eff], asks: &mut [Eff]) -> Vec<Match> {
    let bg = price_groups(bids);
    let sg = price_groups(asks);
    // Walk breakpoints: x is the cumulative quantity; gi/gj the groups covering x.
    let (mut gi, mut gj) = (0usize, 0usize);
    let (mut cum_b, mut cum_s) = (0u128, 0u128);
    if bg.is_empty() || sg.is_empty() {
        return Vec::new();
    }
    cum_b += u128::from(bg[0].3);
    cum_s += u128::from(sg[0].3);
    let mut setter: Option<(usize, usize)> = None;
    loop {
        // At breakpoint x = min(cum_b, cum_s), group gi covers x on demand and gj on supply.
        if bg[gi].2 <= sg[gj].2 {
            break;
        }
        setter = Some((gi, gj));
        // Advance to the next breakpoint.
        let x = cum_b.min(cum_s);
        if cum_b == x {
            gi += 1;
            if gi == bg.len() {
                break;
            }
            cum_b += u128::from(bg[gi].3);
        }
        if cum_s == x {
            gj += 1;
            if gj == sg.len() {
                break;
            }
            cum_s += u128::from(sg[gj].3);
        }
    }
    let Some((pb, ps)) = setter else {
        return Vec::new();
    };
    let price_buy = bg[pb].2;
    let price_sell = sg[ps].2;
    // Traders: the groups strictly before the price setters.
    let mut buy_q: Vec<u64> = bg[..pb].iter().map(|g| g.3).collect();
    let mut sell_q: Vec<u64> = sg[..ps].iter().map(|g| g.3).collect();
    let total_b: u128 = buy_q.iter().map(|&q| u128::from(q)).sum();
    let total_s: u128 = sell_q.iter().map(|&q| u128::from(q)).sum();
    if total_b > total_s {
        reduce_long_side(&mut buy_q, (total_b - total_s) as u64);
    } else if total_s > total_b {
        reduce_long_side(&mut sell_q, (total_s - total_b) as u64);
    }
    let buyers = split_groups(bids, &bg[..pb], &buy_q);
    let sellers = split_groups(asks, &sg[..ps], &sell_q);
    pair(bids, asks, &buyers, &sellers, |_, _| {
        (price_buy, price_sell)
    })
}

/// The long side of a trade-reduction auction gives up `gap` in equal shares (Huang et al. 2002,
/// footnote p. 8): a trader whose quantity is below the current share drops out entirely and the
/// rest share the remaining gap. Integer rule: each remaining trader gives `gap / n`, and the
/// last `gap % n` of them in priority order one milliwatt-hour more.
pub(crate) fn reduce_long_side(q: &mut [u64], mut gap: u64) {
    let mut active: Vec<usize> = (0..q.len()).collect();
    loop {
        if active.is_empty() {
            return;
        }
        let n = active.len() as u128;
        // The smallest active quantity (first in priority on ties).
        let (pos, &min_idx) = active
            .iter()
            .enumerate()
            .min_by_key(|(_, &i)| q[i])
            .expect("active is not empty");
        if u128::from(q[min_idx]) * n < u128::from(gap) {
            gap -= q[min_idx];
            q[min_idx] = 0;
            active.remove(pos);
        } else {
            break;
        }
    }
    let n = active.len() as u64;
    let share = gap / n;
    let extra = gap % n;
    for (k, &i) in active.iter().enumerate() {
        let more = u64::from((k as u64) >= n - extra);
        q[i] -= share + more;
    }
}

/// Splits each group's traded quantity over its orders pro rata ([`pro_rata`]); returns
/// (index into the side, quantity) for every order with a positive quantity, in priority order.
fn split_groups(
    side: &[Eff],
    groups: &[(usize, usize, u64, u64)],
    traded: &[u64],
) -> Vec<(usize, u64)> {
    let mut out = Vec::new();
    for (g, &q) in groups.iter().zip(traded) {
        let members: Vec<u64> = side[g.0..g.1].iter().map(|e| e.rem).collect();
        for (k, share) in pro_rata(&members, q).into_iter().enumerate() {
            if share > 0 {
                out.push((g.0 + k, share));
            }
        }
    }
    out
}

/// Splits `target` (at most the sum of `capacity`) in proportion to `capacity`: each gets
/// `floor(capacity × target / total)`, and the units left over go one each to the first entries
/// (priority order) that still have room. Exact: the shares sum to `target`, none exceeds its capacity.
pub fn pro_rata(capacity: &[u64], target: u64) -> Vec<u64> {
    let total: u128 = capacity.iter().map(|&c| u128::from(c)).sum();
    debug_assert!(u128::from(target) <= total);
    if total == 0 {
        return vec![0; capacity.len()];
    }
    let mut shares: Vec<u64> = capacity
        .iter()
        .map(|&c| (u128::from(c) * u128::from(target) / total) as u64)
        .collect();
    let mut left = target - shares.iter().sum::<u64>();
    for (s, &c) in shares.iter_mut().zip(capacity) {
        if left == 0 {
            break;
        }
        if *s < c {
            *s += 1;
            left -= 1;
        }
    }
    debug_assert_eq!(left, 0);
    shares
}

/// Pairs allocated buyers with allocated sellers in priority order (both lists sum to the same
/// energy), reducing `rem` on both sides.
fn pair(
    bids: &mut [Eff],
    asks: &mut [Eff],
    buyers: &[(usize, u64)],
    sellers: &[(usize, u64)],
    price: impl Fn(&Eff, &Eff) -> (u64, u64),
) -> Vec<Match> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    let (mut left_b, mut left_s) = (
        buyers.first().map_or(0, |b| b.1),
        sellers.first().map_or(0, |s| s.1),
    );
    while i < buyers.len() && j < sellers.len() {
        let q = left_b.min(left_s);
        let (bi, sj) = (buyers[i].0, sellers[j].0);
        let (buyer_price, seller_price) = price(&bids[bi], &asks[sj]);
        out.push(Match {
            bid: bi,
            ask: sj,
            energy_mwh: q,
            buyer_price,
            seller_price,
        });
        bids[bi].rem -= q;
        asks[sj].rem -= q;
        left_b -= q;
        left_s -= q;
        if left_b == 0 {
            i += 1;
            left_b = buyers.get(i).map_or(0, |b| b.1);
        }
        if left_s == 0 {
            j += 1;
            left_s = sellers.get(j).map_or(0, |s| s.1);
        }
    }
    debug_assert!(
        i == buyers.len() && j == sellers.len(),
        "sides must balance"
    );
    out
}

/// Energy sharing: bids at or above the local price and asks at or below it take part; the short
/// side trades all its energy, the long side is cut pro rata; every trade is at the local price.
fn community(bids: &mut [Eff], asks: &mut [Eff], price: u64) -> Vec<Match> {
    let nb = bids.iter().take_while(|b| b.price >= price).count();
    let na = asks.iter().take_while(|a| a.price <= price).count();
    let demand: Vec<u64> = bids[..nb].iter().map(|b| b.rem).collect();
    let supply: Vec<u64> = asks[..na].iter().map(|a| a.rem).collect();
    let d: u128 = demand.iter().map(|&q| u128::from(q)).sum();
    let s: u128 = supply.iter().map(|&q| u128::from(q)).sum();
    let volume = d.min(s) as u64;
    let collect = |shares: Vec<u64>| -> Vec<(usize, u64)> {
        shares
            .into_iter()
            .enumerate()
            .filter(|(_, q)| *q > 0)
            .collect()
    };
    let buyers = collect(pro_rata(&demand, volume));
    let sellers = collect(pro_rata(&supply, volume));
    pair(bids, asks, &buyers, &sellers, |_, _| (price, price))
}

/// The maximum welfare `Σ energy × (bid − ask)` (in mWh × base units per kWh) over all matchings of
/// these orders, ignoring areas and fees: the greedy matching of the sorted book is optimal for
/// divisible orders. Used as the yardstick every mechanism is measured against.
pub(crate) fn optimal_welfare(mut bids: Vec<Eff>, mut asks: Vec<Eff>) -> u128 {
    sort_book(&mut bids, &mut asks);
    greedy(&mut bids, &mut asks, |_, _| (0, 0))
        .iter()
        .map(|m| u128::from(m.energy_mwh) * u128::from(bids[m.bid].price - asks[m.ask].price))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eff(id: u64, price: u64, q: u64) -> Eff {
        Eff {
            order: id as u32,
            price,
            time: 0,
            id,
            rem: q,
        }
    }

    #[test]
    fn reduce_long_side_matches_pymarket_examples() {
        // pymarket: update_quantity([1, 2, 3], 0.6) == [0.8, 1.8, 2.8]; in tenths.
        let mut q = vec![10, 20, 30];
        reduce_long_side(&mut q, 6);
        assert_eq!(q, vec![8, 18, 28]);
        // update_quantity([1, 0.5, 2], 1.8) == [0.35, 0, 1.35]; in hundredths.
        let mut q = vec![100, 50, 200];
        reduce_long_side(&mut q, 180);
        assert_eq!(q, vec![35, 0, 135]);
        // Integer remainder: the last in priority order give one unit more.
        let mut q = vec![10, 10, 10];
        reduce_long_side(&mut q, 4);
        assert_eq!(q, vec![9, 9, 8]);
    }

    #[test]
    fn continuous_matching_trades_at_the_bid_in_arrival_order() {
        let at = |id: u64, price: u64, time: u64| Eff {
            order: id as u32,
            price,
            time,
            id,
            rem: 10,
        };
        // ask 0.10 rests; bid 0.20 arrives and takes it at 0.20; bid 0.15 rests; ask 0.12 arrives
        // and takes the resting bid at 0.15; ask 0.30 finds no bid that high.
        let mut bids = vec![at(1, 20, 1), at(2, 15, 2)];
        let mut asks = vec![at(0, 10, 0), at(3, 12, 3), at(4, 30, 4)];
        sort_book(&mut bids, &mut asks);
        let m = continuous(&mut bids, &mut asks);
        let got: Vec<(u64, u64, u64)> = m
            .iter()
            .map(|m| (bids[m.bid].id, asks[m.ask].id, m.buyer_price))
            .collect();
        assert_eq!(got, vec![(1, 0, 20), (2, 3, 15)]);
        assert!(m
            .iter()
            .all(|m| m.buyer_price == m.seller_price && m.energy_mwh == 10));
    }

    #[test]
    fn pro_rata_is_exact_and_bounded() {
        assert_eq!(pro_rata(&[1, 1, 1], 2), vec![1, 1, 0]);
        assert_eq!(pro_rata(&[10, 20, 30], 30), vec![5, 10, 15]);
        assert_eq!(pro_rata(&[3, 3, 3], 4), vec![2, 1, 1]);
        assert_eq!(pro_rata(&[5, 0], 5), vec![5, 0]);
    }

    #[test]
    fn huang_matches_pymarket_doc_examples() {
        // No trade because the price setters don't trade: bids (1 @ 3), (2 @ 1)? pymarket's
        // add_bid(quantity, price, user, buying): buy 1 @ 3, buy 2 @ 1, sell 2 @ 2.
        let mut bids = vec![eff(0, 3, 1), eff(1, 1, 2)];
        let mut asks = vec![eff(2, 2, 2)];
        sort_book(&mut bids, &mut asks);
        assert!(huang(&mut bids, &mut asks).is_empty());
        // Adding a small sell 0.3 @ 1 and a small buy 0.2 @ 3.3: those trade 0.2 at sell 2, buy 3.
        // Quantities in tenths of a unit... use hundredths: 0.2 -> 20, 0.3 -> 30, 1 -> 100.
        let mut bids = vec![eff(0, 300, 100), eff(1, 100, 200), eff(4, 330, 20)];
        let mut asks = vec![eff(2, 200, 200), eff(3, 100, 30)];
        sort_book(&mut bids, &mut asks);
        let m = huang(&mut bids, &mut asks);
        assert_eq!(m.len(), 1);
        assert_eq!(bids[m[0].bid].id, 4);
        assert_eq!(asks[m[0].ask].id, 3);
        assert_eq!(m[0].energy_mwh, 20);
        assert_eq!((m[0].buyer_price, m[0].seller_price), (300, 200));
    }
}
