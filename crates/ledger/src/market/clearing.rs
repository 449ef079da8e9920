//! Clearing at gate closure: the slot's open orders, trimmed to the grid operator's envelopes, go
//! through `gridmesh-market`'s mechanism (island rules while the microgrid is islanded); each
//! trade keeps in escrow what settlement will need and the rest is released.

use gridmesh_market::{self as mk, value_floor, Areas, Mechanism, Order, Side};
use gridmesh_types::{Address, Amount};

use super::escrow_account;
use super::records::{
    MarketResult, OrderRecord, OrderStatus, SellerPosition, SettlementStatus, SlotRecord,
    TradeRecord,
};
use crate::config::MarketConfig;
use crate::grid_operator::{grid_mode, EnvelopeRecord};
use crate::kv::{decode as dec, encode as enc, keys, Tag};
use crate::state::Overlay;

/// Clears `slot` (its gate has closed) in the block at `height`.
pub(crate) fn clear_slot(o: &mut Overlay<'_>, cfg: &MarketConfig, slot: u64, height: u64) {
    o.kv_delete(keys::open_slot(slot));
    if cfg.history_days > 0 {
        o.kv_put(
            keys::slot_due(Tag::PruneDue, cfg.prune_ms(slot), slot),
            Vec::new(),
        );
    }
    let records: Vec<(u64, OrderRecord)> = o
        .kv_scan(&keys::group(Tag::Order, slot))
        .into_iter()
        .map(|(k, v)| {
            let id = keys::u64_after_group(&k);
            (id, dec::<OrderRecord>(&v))
        })
        .filter(|(_, r)| r.status == OrderStatus::Open)
        .collect();
    // The grid operator's tariff for the slot, if it set one. A seller's shortfall stays at the
    // genesis price: asks locked their collateral at it when placed.
    let tariff = crate::grid_operator::tariff(o, cfg, slot);
    let shortfall = cfg.shortfall_price(slot);
    // Areas from the orders' locations (in order-id order, so the tree is the same everywhere).
    // More distinct locations than one hierarchy holds: one market with the root's fee.
    let areas = Areas::from_paths(
        records.iter().map(|(_, r)| r.location.as_str()),
        &cfg.grid_fees,
    )
    .unwrap_or_else(|_| Areas::with_root_fee(cfg.grid_fees.first().copied().unwrap_or_default()));
    // Island rules while the PCC breaker is open: no utility counterparty, bids clear at most at
    // the island price cap (scarcity pricing, bounded); the community mechanism, which needs the
    // utility's prices, clears pay-as-clear.
    let island = grid_mode(o).is_islanded();
    let orders: Vec<Order> = records
        .iter()
        .map(|(id, r)| Order {
            id: *id,
            side: r.side,
            energy_mwh: r.energy_mwh,
            price_per_kwh: if island && r.side == Side::Bid {
                r.price_per_kwh.min(cfg.island_price_cap_per_kwh)
            } else {
                r.price_per_kwh
            },
            time: r.time,
            area: areas.find(&r.location).unwrap_or(0),
        })
        .collect();
    // The grid operator's envelopes: each connection's orders trimmed to what it may import and
    // export (envelopes for locations without orders change nothing).
    let limits: std::collections::BTreeMap<u32, mk::AreaLimit> = o
        .kv_scan(&keys::group(Tag::Envelope, slot))
        .into_iter()
        .map(|(_, v)| dec::<EnvelopeRecord>(&v))
        .filter_map(|e| {
            let area = areas.find(&e.location)?;
            // Only a connection's own market: with more locations than one hierarchy holds,
            // every order sits in the root and an envelope cannot tell them apart.
            (areas.path(area) == e.location).then_some((
                area,
                mk::AreaLimit {
                    import_mwh: e.import_mwh,
                    export_mwh: e.export_mwh,
                },
            ))
        })
        .collect();
    let orders = if limits.is_empty() {
        orders
    } else {
        mk::within_limits(&orders, &limits)
    };
    let (mechanism, utility_tariff) = match (island, cfg.mechanism) {
        (false, m) => (m, Some(tariff)),
        (true, Mechanism::Community) => (Mechanism::PayAsClear, None),
        (true, m) => (m, None),
    };
    // Every order was checked at placement (energy, price, location, count) and the tariff was
    // checked in the genesis, so clearing cannot refuse them.
    let clearing = mk::clear(&orders, &areas, mechanism, utility_tariff)
        .expect("orders were validated when placed");
    let index_of: std::collections::BTreeMap<u64, usize> = records
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (*id, i))
        .collect();
    let mut held = vec![0u128; records.len()];
    let mut traded = vec![0u64; records.len()];
    let mut sellers: std::collections::BTreeMap<Address, Vec<u32>> = Default::default();
    for (i, t) in clearing.trades.iter().enumerate() {
        let (bi, ai) = (index_of[&t.bid], index_of[&t.ask]);
        let buyer_escrow = value_floor(t.energy_mwh, t.buyer_price_per_kwh);
        let seller_collateral = value_floor(
            t.energy_mwh,
            shortfall.saturating_sub(t.buyer_price_per_kwh),
        );
        // An order's trades are parts of it: their sums stay within its escrow and energy.
        let part = "an order's trades are parts of it";
        held[bi] = held[bi].checked_add(buyer_escrow).expect(part);
        held[ai] = held[ai].checked_add(seller_collateral).expect(part);
        traded[bi] = traded[bi].checked_add(t.energy_mwh).expect(part);
        traded[ai] = traded[ai].checked_add(t.energy_mwh).expect(part);
        let seller = records[ai].1.owner;
        sellers.entry(seller).or_default().push(i as u32);
        o.kv_put(
            keys::trade(slot, i as u32),
            enc(&TradeRecord {
                trade: *t,
                buyer: records[bi].1.owner,
                seller,
                buyer_escrow,
                seller_collateral,
                settlement: None,
            }),
        );
    }
    for (i, (id, r)) in records.iter().enumerate() {
        let release = r
            .escrow
            .checked_sub(held[i])
            .expect("an order's escrow covers its trades");
        o.move_funds(escrow_account(), r.owner, Amount(release))
            .expect("escrow holds every open order's escrow");
        let mut r = r.clone();
        r.escrow = 0;
        r.traded_mwh = traded[i];
        r.status = OrderStatus::Cleared;
        o.kv_put(keys::order(slot, *id), enc(&r));
    }
    for (seller, trades) in sellers {
        o.kv_put(
            keys::seller(slot, &seller),
            enc(&SellerPosition {
                trades,
                status: SettlementStatus::Pending,
            }),
        );
    }
    o.kv_put(
        keys::slot(slot),
        enc(&SlotRecord {
            mechanism,
            cleared_at_height: height,
            tariff,
            shortfall_price_per_kwh: shortfall,
            orders: records.len() as u32,
            clearing_price_per_kwh: clearing.clearing_price_per_kwh,
            volume_mwh: clearing.volume_mwh,
            welfare: clearing.welfare,
            optimal_welfare: clearing.optimal_welfare,
            trades: clearing.trades.len() as u32,
            markets: clearing
                .markets
                .iter()
                .map(|m| MarketResult {
                    area: areas.path(m.area).to_string(),
                    price_per_kwh: m.price_per_kwh,
                    volume_mwh: m.volume_mwh,
                })
                .collect(),
            utility: clearing.utility,
            settlement: SettlementStatus::Pending,
            provisional_sellers: 0,
            island,
            envelopes: limits.len() as u32,
        }),
    );
    o.kv_put(
        keys::slot_due(Tag::SettleDue, cfg.settlement_ms(slot), slot),
        Vec::new(),
    );
}
