//! Overflow-free integer arithmetic for consensus amounts: shares and percentages of any `u128`
//! without an intermediate product that could overflow.

/// `amount × percent / 100`, rounded down, for any `amount` (no intermediate overflow) and
/// `percent` ≤ 100.
pub(crate) fn percent_of(amount: u128, percent: u8) -> u128 {
    debug_assert!(percent <= 100);
    let p = u128::from(percent);
    amount / 100 * p + amount % 100 * p / 100
}

/// `amount × part / whole`, rounded down, for any `amount` (no intermediate overflow) and
/// `part` ≤ `whole` (a holder's shares of all; none of nothing).
pub(crate) fn share_of(amount: u128, part: u64, whole: u64) -> u128 {
    if whole == 0 {
        return 0;
    }
    debug_assert!(part <= whole);
    let (p, w) = (u128::from(part), u128::from(whole));
    amount / w * p + amount % w * p / w
}
