//! A state's digest and its own consistency, for comparing replicas and
//! checking a run: every replica that applied the same entries must hold
//! the same records, and every index must agree with the records it is
//! built from.

use std::collections::BTreeMap;

use ipkeep_api::message::StateDigest;

use super::State;
use crate::subnet::addr_to_u128;

/// FNV-1a, 64 bits: stable across builds and platforms (the standard
/// library's hasher is not), and enough to tell two states apart.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn add(&mut self, bytes: &[u8]) {
        // The length first, so that ("ab", "c") and ("a", "bc") differ.
        for b in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

impl State {
    /// A digest per part: the records of each kind (what a snapshot holds),
    /// and each subnet's and pool's counters and free addresses (what the
    /// allocator decides from).
    pub fn digest(&self, applied: Option<u64>) -> StateDigest {
        let mut parts: BTreeMap<String, Fnv> = BTreeMap::new();
        for record in self.records() {
            let key = record.key();
            let kind = key
                .iter()
                .position(|&b| b == b'/')
                .map_or(&key[..], |end| &key[..end]);
            let part = format!("records:{}", String::from_utf8_lossy(kind));
            let hash = parts.entry(part).or_insert_with(Fnv::new);
            hash.add(&key);
            hash.add(&record.value());
        }
        for subnet in self.subnets.values() {
            let hash = parts
                .entry(format!("subnet:{}", subnet.subnet.name))
                .or_insert_with(Fnv::new);
            let u = subnet.usage();
            for n in [
                u.assignable,
                u.held.into(),
                u.free,
                u.reserved,
                u.pooled,
                u.bound_idle.into(),
            ] {
                hash.add(&n.to_le_bytes());
            }
            hash.add(&subnet.cursor().map(addr_to_u128).unwrap_or(0).to_le_bytes());
            for (start, end) in subnet.free_ranges() {
                hash.add(&start.to_le_bytes());
                hash.add(&end.to_le_bytes());
            }
        }
        for pool in self.pools.values() {
            let hash = parts
                .entry(format!("pool:{}", pool.pool.name))
                .or_insert_with(Fnv::new);
            let u = pool.usage();
            for n in [u.size, u.held.into(), u.free, u.bound_idle.into()] {
                hash.add(&n.to_le_bytes());
            }
        }
        let usage = parts.entry("usage".into()).or_insert_with(Fnv::new);
        for ((subnet, namespace), n) in &self.usage {
            usage.add(subnet.as_bytes());
            usage.add(namespace.as_bytes());
            usage.add(&n.to_le_bytes());
        }
        StateDigest {
            applied,
            parts: parts.into_iter().map(|(k, v)| (k, v.0)).collect(),
            inconsistencies: self.inconsistencies(),
        }
    }

    /// Where the indexes contradict the records they are built from: an
    /// address held by two attachments (the address index keeps one of
    /// them), an address both free and taken, counters that do not match.
    /// Empty for a sound state.
    pub fn inconsistencies(&self) -> Vec<String> {
        let mut found = Vec::new();
        let mut held_addresses = 0usize;
        for held in &self.allocations {
            let key = held.key();
            for address in held.addresses() {
                held_addresses += 1;
                match self.holders.get(&address) {
                    Some(h) if h.key() == key => {}
                    Some(h) => found.push(format!("{address} is held by {key} and by {}", h.key())),
                    None => found.push(format!(
                        "{address} of {key} is missing from the address index"
                    )),
                }
            }
        }
        if held_addresses != self.holders.len() {
            found.push(format!(
                "{} addresses held by allocations, {} in the address index",
                held_addresses,
                self.holders.len()
            ));
        }
        let mut bound_addresses = 0usize;
        for (pod, binding) in &self.bindings {
            for a in &binding.addresses {
                bound_addresses += 1;
                if self.bound.get(&a.address) != Some(pod) {
                    found.push(format!(
                        "{} bound to {}/{} is not so in the binding index",
                        a.address, pod.0, pod.1
                    ));
                }
            }
        }
        if bound_addresses != self.bound.len() {
            found.push(format!(
                "{} addresses bound by bindings, {} in the binding index",
                bound_addresses,
                self.bound.len()
            ));
        }
        let taken = self
            .holders
            .keys()
            .map(|a| (*a, "held"))
            .chain(self.bound.keys().map(|a| (*a, "bound")))
            .chain(self.reservations.keys().map(|a| (*a, "reserved")));
        for (address, how) in taken {
            if let Some(subnet) = self.subnet_of(address) {
                if subnet.is_free(address) {
                    found.push(format!(
                        "{address} is {how} and free in subnet {}",
                        subnet.subnet.name
                    ));
                }
            }
        }
        let mut held_by_subnet: BTreeMap<&str, u64> = BTreeMap::new();
        for held in &self.allocations {
            for (subnet, _) in held.subnet_addresses() {
                *held_by_subnet.entry(subnet).or_default() += 1;
            }
        }
        for subnet in self.subnets.values() {
            let counted = held_by_subnet
                .get(subnet.subnet.name.as_str())
                .copied()
                .unwrap_or(0);
            if subnet.held != counted {
                found.push(format!(
                    "subnet {} counts {} held, its allocations hold {counted}",
                    subnet.subnet.name, subnet.held
                ));
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;
    use crate::held::Held;
    use crate::test_commands::{add, create_subnet};

    fn state_after(commands: &[Command]) -> State {
        let mut state = State::default();
        let mut journal = Vec::new();
        for c in commands {
            state.apply(c, &mut journal);
        }
        state
    }

    fn commands(n: usize) -> Vec<Command> {
        let mut v = vec![create_subnet("pods", "10.9.0.0/24")];
        v.extend((0..n).map(|i| add(&format!("c{i}"), "pods")));
        v
    }

    #[test]
    fn replicas_of_the_same_entries_have_one_digest_and_no_inconsistency() {
        let a = state_after(&commands(20));
        let b = state_after(&commands(20));
        assert_eq!(a.digest(Some(21)), b.digest(Some(21)));
        assert!(a.inconsistencies().is_empty(), "{:?}", a.inconsistencies());
        let c = state_after(&commands(21));
        let (da, dc) = (a.digest(None), c.digest(None));
        let differing: Vec<&String> = da
            .parts
            .iter()
            .zip(&dc.parts)
            .filter(|(x, y)| x != y)
            .map(|(x, _)| &x.0)
            .collect();
        assert!(
            differing.iter().any(|p| p.starts_with("records:")),
            "{differing:?}"
        );
        assert!(
            differing.iter().any(|p| p.starts_with("subnet:")),
            "{differing:?}"
        );
    }

    /// The listing by address shows one holder per address whatever the
    /// records say; the audit reads the records themselves.
    #[test]
    fn an_address_held_by_two_attachments_is_found() {
        let mut state = state_after(&commands(2));
        let first = state.allocations.iter().next().unwrap().to_allocation();
        let mut twin = first.clone();
        twin.key.container_id = "twin".into();
        state.allocations.insert(Held::pack(&twin));
        let found = state.inconsistencies();
        assert!(found.iter().any(|f| f.contains("held by")), "{found:?}");
    }
}
