//! The free addresses of one subnet, as a set of disjoint inclusive intervals.
//!
//! Addresses are u128 (an IPv4 address is its u32 value). The set is a
//! B-tree of `start -> end`, so every operation is O(log n) in the number of
//! intervals, whatever the subnet's size: a /16 at 99% full or an IPv6 /64
//! with one address taken costs the same few lookups, never a scan.

use std::collections::BTreeMap;
use std::ops::Bound::{Excluded, Included, Unbounded};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FreeSet {
    /// start -> end (inclusive); intervals never overlap nor touch.
    ranges: BTreeMap<u128, u128>,
    count: u128,
}

impl FreeSet {
    /// A set holding every address of `[start, end]`.
    pub fn with_range(start: u128, end: u128) -> FreeSet {
        let mut set = FreeSet::default();
        if start <= end {
            set.ranges.insert(start, end);
            set.count = end - start + 1;
        }
        set
    }

    /// How many addresses are free.
    pub fn len(&self) -> u128 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The interval holding `addr`, if any.
    fn interval_of(&self, addr: u128) -> Option<(u128, u128)> {
        self.ranges
            .range(..=addr)
            .next_back()
            .filter(|(_, &end)| end >= addr)
            .map(|(&s, &e)| (s, e))
    }

    pub fn contains(&self, addr: u128) -> bool {
        self.interval_of(addr).is_some()
    }

    /// The first free address after `cursor` (or the lowest, when there is no
    /// cursor), wrapping around to the lowest free address: host-local's
    /// round robin, so that an address just released is not handed out again
    /// at once.
    pub fn next_after(&self, cursor: Option<u128>) -> Option<u128> {
        let Some(cursor) = cursor else {
            return self.ranges.keys().next().copied();
        };
        if let Some(next) = cursor.checked_add(1) {
            if self.contains(next) {
                return Some(next);
            }
            if let Some((&start, _)) = self.ranges.range((Excluded(cursor), Unbounded)).next() {
                return Some(start);
            }
        }
        self.ranges.keys().next().copied()
    }

    /// Takes one address out of the set; false if it was not free.
    pub fn take(&mut self, addr: u128) -> bool {
        self.remove_range(addr, addr) == 1
    }

    /// Takes every free address of `[start, end]` out of the set and returns
    /// how many were free.
    pub fn remove_range(&mut self, start: u128, end: u128) -> u128 {
        if start > end {
            return 0;
        }
        let overlapping: Vec<(u128, u128)> = self
            .ranges
            .range((Unbounded, Included(end)))
            .rev()
            .take_while(|(_, &e)| e >= start)
            .map(|(&s, &e)| (s, e))
            .collect();
        let mut removed = 0;
        for (s, e) in overlapping {
            self.ranges.remove(&s);
            if s < start {
                self.ranges.insert(s, start - 1);
            }
            if e > end {
                self.ranges.insert(end + 1, e);
            }
            removed += e.min(end) - s.max(start) + 1;
        }
        self.count -= removed;
        removed
    }

    /// Puts one address back; false if it was already free. Merges with its
    /// neighbours so that the set stays as small as the holes in it.
    pub fn put(&mut self, addr: u128) -> bool {
        if self.contains(addr) {
            return false;
        }
        let mut start = addr;
        let mut end = addr;
        if let Some((prev_start, _)) = addr.checked_sub(1).and_then(|p| self.interval_of(p)) {
            // The interval ending right below `addr` absorbs it.
            start = prev_start;
        }
        if let Some(next) = addr.checked_add(1) {
            if let Some(next_end) = self.ranges.get(&next).copied() {
                self.ranges.remove(&next);
                end = next_end;
            }
        }
        self.ranges.insert(start, end);
        self.count += 1;
        true
    }

    /// Puts every address of `[start, end]` back; returns how many were not
    /// free before.
    pub fn insert_range(&mut self, start: u128, end: u128) -> u128 {
        if start > end {
            return 0;
        }
        // Take out what is already free in the range, then insert the range
        // whole, merged with any neighbour that touches it.
        let already = self.remove_range(start, end);
        let mut lo = start;
        let mut hi = end;
        if let Some((prev_start, _)) = start.checked_sub(1).and_then(|p| self.interval_of(p)) {
            self.ranges.remove(&prev_start);
            lo = prev_start;
        }
        if let Some(next) = end.checked_add(1) {
            if let Some(next_end) = self.ranges.remove(&next) {
                hi = next_end;
            }
        }
        self.ranges.insert(lo, hi);
        let added = end - start + 1;
        self.count += added;
        added - already
    }

    /// The free intervals, lowest first.
    pub fn iter(&self) -> impl Iterator<Item = (u128, u128)> + '_ {
        self.ranges.iter().map(|(&s, &e)| (s, e))
    }

    /// How many addresses of `[start, end]` are free.
    pub fn count_in(&self, start: u128, end: u128) -> u128 {
        if start > end {
            return 0;
        }
        let mut n = 0;
        let first = self.interval_of(start).map(|(s, _)| s).unwrap_or(start);
        for (&s, &e) in self.ranges.range(first..=end) {
            n += e.min(end) - s.max(start) + 1;
        }
        n
    }

    /// Number of intervals (for tests and memory accounting).
    pub fn intervals(&self) -> usize {
        self.ranges.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_in_round_robin_order() {
        let mut set = FreeSet::with_range(10, 14);
        let mut cursor = None;
        let mut got = vec![];
        while let Some(a) = set.next_after(cursor) {
            assert!(set.take(a));
            got.push(a);
            cursor = Some(a);
        }
        assert_eq!(got, vec![10, 11, 12, 13, 14]);
        assert!(set.is_empty());
        // A released address is not reused while others are free after the cursor.
        let mut set = FreeSet::with_range(10, 14);
        for a in 10..=12 {
            set.take(a);
        }
        set.put(10);
        assert_eq!(set.next_after(Some(12)), Some(13));
        assert_eq!(set.next_after(Some(14)), Some(10), "wraps around");
    }

    #[test]
    fn put_merges_neighbours() {
        let mut set = FreeSet::with_range(0, 9);
        for a in 0..10 {
            set.take(a);
        }
        assert_eq!(set.intervals(), 0);
        set.put(3);
        set.put(5);
        assert_eq!(set.intervals(), 2);
        set.put(4);
        assert_eq!(set.intervals(), 1);
        assert_eq!(set.len(), 3);
        assert!(!set.put(4), "double put is refused");
        assert_eq!(set.len(), 3);
    }

    #[test]
    fn remove_range_splits_and_counts() {
        let mut set = FreeSet::with_range(0, 99);
        assert_eq!(set.remove_range(10, 19), 10);
        assert_eq!(set.remove_range(15, 25), 6);
        assert_eq!(set.len(), 100 - 16);
        assert!(!set.contains(20));
        assert!(set.contains(26));
        assert!(set.contains(9));
        assert_eq!(set.next_after(Some(9)), Some(26));
    }

    #[test]
    fn extremes_of_u128_do_not_overflow() {
        let mut set = FreeSet::with_range(u128::MAX - 2, u128::MAX);
        assert_eq!(set.next_after(Some(u128::MAX)), Some(u128::MAX - 2));
        assert!(set.take(u128::MAX));
        assert!(set.put(u128::MAX));
        assert_eq!(set.len(), 3);
    }

    #[test]
    fn insert_range_merges_and_counts() {
        let mut set = FreeSet::with_range(0, 9);
        set.remove_range(2, 7);
        assert_eq!(set.insert_range(4, 5), 2);
        assert_eq!(set.len(), 6);
        assert_eq!(
            set.insert_range(0, 9),
            4,
            "only the missing addresses count"
        );
        assert_eq!(set.intervals(), 1);
        assert_eq!(set.len(), 10);
        assert_eq!(set.count_in(3, 20), 7);
        set.remove_range(5, 5);
        assert_eq!(set.count_in(3, 7), 4);
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![(0, 4), (6, 9)]);
    }

    /// Checks the set against a plain model under a long random sequence.
    #[test]
    fn agrees_with_a_model() {
        let mut set = FreeSet::with_range(0, 511);
        let mut model = vec![true; 512];
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let addr = (x % 512) as u128;
            if x & (1 << 40) == 0 {
                assert_eq!(set.take(addr), model[addr as usize]);
                model[addr as usize] = false;
            } else {
                assert_eq!(set.put(addr), !model[addr as usize]);
                model[addr as usize] = true;
            }
            let cursor = (x >> 20) % 512;
            let expect = (cursor + 1..512)
                .chain(0..=cursor)
                .find(|&a| model[a as usize])
                .map(|a| a as u128);
            assert_eq!(set.next_after(Some(cursor as u128)), expect);
            assert_eq!(set.len(), model.iter().filter(|f| **f).count() as u128);
        }
    }
}
