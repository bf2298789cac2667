//! Sorting with one copy of the standard library's sort in the wasm.
//!
//! `slice::sort_by` is generic over the element and the comparison, so every call site with
//! a closure of its own is a new copy of the whole sort (driftsort, its merges and small
//! sorts; `sort_unstable` likewise). On 2026-12-06 the engine's sorts were eleven copies in
//! the Worker's wasm, and sending them all through here took 10.5 KB off the gzipped Worker
//! (issue 15, item 5: the Worker with every example plugin under 1 MB). The standard sort runs
//! once, non-generic, on a list of positions compared through a `dyn` closure, and the
//! elements are then moved into the order found. The result is exactly `slice::sort_by`'s:
//! stable, so elements that compare equal keep their order. The engine sorts short lists
//! (search hits, routes and their usage, an outbox's deliveries, a schedule's switches), where
//! the indirection costs nothing worth a copy of the sort.
//!
//! Collecting into a `BTreeMap` or `BTreeSet` sorts the items first (stably, to build the
//! tree in one pass), another copy of the sort per element type; where that is the only
//! reason for a copy, the engine extends an empty map instead, which inserts one by one and
//! keeps the last value for a repeated key, as collecting does.

use core::cmp::Ordering;

/// Sorts `items` by `compare`, stably: what `items.sort_by(compare)` does.
pub fn sort_by<T>(items: &mut [T], mut compare: impl FnMut(&T, &T) -> Ordering) {
    let mut order = sorted_positions(items.len(), &mut |a, b| compare(&items[a], &items[b]));
    permute(items, &mut order);
}

/// Sorts `items` by the key `key` gives each, stably: what `items.sort_by_key(key)` does.
pub fn sort_by_key<T, K: Ord>(items: &mut [T], mut key: impl FnMut(&T) -> K) {
    sort_by(items, |a, b| key(a).cmp(&key(b)));
}

/// Sorts `items` in their own order: what `items.sort()` does (and `sort_unstable`, for
/// values that are equal only when they are the same).
pub fn sort<T: Ord>(items: &mut [T]) {
    sort_by(items, T::cmp);
}

/// The positions `0..len` in the order `compare` puts the elements at them in, stably. The
/// one place the standard sort is instantiated: never inlined into a caller.
#[inline(never)]
fn sorted_positions(len: usize, compare: &mut dyn FnMut(usize, usize) -> Ordering) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    order.sort_by(|&a, &b| compare(a, b));
    order
}

/// Moves the element at `order[k]` to position `k`, for every `k`, in place: each cycle of
/// the permutation is walked once, swapping the element that belongs at the current position
/// into it; `order[k] = k` marks a position done, so a later start on a walked cycle stops at
/// once.
fn permute<T>(items: &mut [T], order: &mut [usize]) {
    for start in 0..items.len() {
        // Invariant: `items[k]` holds the element that started at `start`; the one that
        // belongs at `k` is still where it started, at `order[k]`.
        let mut k = start;
        loop {
            let from = order[k];
            order[k] = k;
            if from == start {
                break;
            }
            items.swap(k, from);
            k = from;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (an LCG): keys with many ties.
    fn keys(n: usize, seed: u64, range: u64) -> Vec<u64> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 33) % range
            })
            .collect()
    }

    #[test]
    fn sorts_as_the_standard_stable_sort_does() {
        for n in [0, 1, 2, 3, 7, 20, 21, 64, 65, 300, 1000] {
            for (seed, range) in [(1, 3), (2, 10), (3, 1000), (4, u64::MAX)] {
                // Each element remembers where it started: ties must keep that order.
                let items: Vec<(u64, usize)> = keys(n, seed, range).into_iter().zip(0..).collect();
                let mut want = items.clone();
                want.sort_by_key(|e| e.0);
                let mut got = items.clone();
                sort_by(&mut got, |a, b| a.0.cmp(&b.0));
                assert_eq!(got, want, "n {n}, seed {seed}");
                let mut got = items.clone();
                sort_by_key(&mut got, |e| core::cmp::Reverse(e.0));
                want.sort_by_key(|e| core::cmp::Reverse(e.0));
                assert_eq!(got, want, "n {n}, seed {seed}, reversed");
            }
        }
    }

    #[test]
    fn sorts_owned_values_in_place() {
        let mut words: Vec<String> = ["pear", "apple", "fig", "apple", "date"]
            .iter()
            .map(|w| (*w).to_owned())
            .collect();
        sort(&mut words);
        assert_eq!(words, ["apple", "apple", "date", "fig", "pear"]);
    }

    #[test]
    fn every_permutation_of_four_is_put_in_order() {
        let mut seen = 0;
        for a in 0..4u8 {
            for b in 0..4 {
                for c in 0..4 {
                    for d in 0..4 {
                        let mut v = [a, b, c, d];
                        let mut distinct = v;
                        distinct.sort_unstable();
                        if distinct != [0, 1, 2, 3] {
                            continue;
                        }
                        seen += 1;
                        sort(&mut v);
                        assert_eq!(v, [0, 1, 2, 3]);
                    }
                }
            }
        }
        assert_eq!(seen, 24);
    }
}
