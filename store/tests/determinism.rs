//! Every node must compute the same state from the same log, whichever way
//! it got there: applying every entry, restarting from what its journal
//! wrote to disk, or installing a snapshot. A random workload is applied to
//! three copies (one that only applies, one rebuilt from its journal after
//! every step, one rebuilt from a snapshot of its records every few steps),
//! and every reply and every record must agree.

mod common;

use std::collections::BTreeMap;

use common::{add_on, key, subnet};
use ipkeep_api::message::PoolRequest;
use ipkeep_api::model::{IpRange, PodPattern, PodSelector, Sticky};
use ipkeep_store::records::{Change, Record};
use ipkeep_store::{Command, Reply, State};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn snapshot(state: &State) -> BTreeMap<Vec<u8>, Vec<u8>> {
    state.records().map(|r| (r.key(), r.value())).collect()
}

fn rebuild(records: &BTreeMap<Vec<u8>, Vec<u8>>) -> State {
    State::from_records(
        records
            .iter()
            .map(|(k, v)| Record::decode(k, v).expect("record decodes")),
    )
    .expect("state rebuilds")
}

fn replay(disk: &mut BTreeMap<Vec<u8>, Vec<u8>>, journal: Vec<Change>) {
    for change in journal {
        match change {
            Change::Put(k, v) => {
                disk.insert(k, v);
            }
            Change::Delete(k) => {
                disk.remove(&k);
            }
        }
    }
}

fn setup() -> Vec<Command> {
    let mut sticky_subnet = subnet("pods", "10.1.0.0/26");
    sticky_subnet.sticky = None;
    vec![
        Command::CreateSubnet {
            spec: sticky_subnet,
        },
        Command::CreatePool {
            request: PoolRequest {
                name: "sts".into(),
                subnet: "pods".into(),
                addresses: vec!["10.1.0.40-10.1.0.45".parse::<IpRange>().unwrap()],
                selector: PodSelector {
                    namespace: Some("ns".into()),
                    pods: vec!["pod-s*".parse::<PodPattern>().unwrap()],
                },
                sticky: Some(Sticky::default()),
            },
        },
    ]
}

fn random_command(rng: &mut Rng, now_ms: u64, held: &BTreeMap<String, u64>) -> Command {
    let cid = match rng.below(3) {
        0 => format!("s{}", rng.below(8)),
        _ => format!("c{}", rng.below(70)),
    };
    let node = format!("node-{}", rng.below(3));
    match rng.below(10) {
        0..=4 => {
            let mut c = add_on(&cid, &[&["pods"]], &node);
            if let Command::Add {
                at_ms, issued_us, ..
            } = &mut c
            {
                *at_ms = now_ms;
                // Sometimes a stale ADD, issued before a DEL of it.
                *issued_us = (now_ms - rng.below(3) * 1000) * 1000;
            }
            c
        }
        5..=7 => Command::Del {
            key: key(&cid),
            at_ms: now_ms,
            issued_us: (now_ms - rng.below(2) * 1000) * 1000,
        },
        8 => {
            let mut attachments = Vec::new();
            for (cid, since) in held {
                if rng.below(4) == 0 {
                    attachments.push((key(cid), *since + rng.below(2)));
                }
            }
            Command::Reclaim {
                attachments,
                at_ms: now_ms,
                issued_us: now_ms * 1000,
            }
        }
        _ => Command::ExpireBindings { at_ms: now_ms },
    }
}

#[test]
fn applying_restarting_and_installing_snapshots_agree() {
    for seed in 1..=6u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut applied = State::default();
        let mut disk = BTreeMap::new();
        let mut restarted = State::default();
        let mut installed = State::default();
        for c in setup() {
            let mut journal = Vec::new();
            applied.apply(&c, &mut journal);
            replay(&mut disk, journal);
            restarted.apply(&c, &mut Vec::new());
            installed.apply(&c, &mut Vec::new());
        }
        let mut now_ms = 1_700_000_000_000u64;
        let mut since: BTreeMap<String, u64> = BTreeMap::new();
        for step in 0..1500 {
            now_ms += 1 + rng.below(1500);
            let command = random_command(&mut rng, now_ms, &since);
            let mut journal = Vec::new();
            let a = applied.apply(&command, &mut journal);
            replay(&mut disk, journal);
            let b = restarted.apply(&command, &mut Vec::new());
            let c = installed.apply(&command, &mut Vec::new());
            assert_eq!(
                format!("{a:?}"),
                format!("{b:?}"),
                "seed {seed} step {step}: a restarted node answered differently to {command:?}"
            );
            assert_eq!(
                format!("{a:?}"),
                format!("{c:?}"),
                "seed {seed} step {step}: a node from a snapshot answered differently to {command:?}"
            );
            if let Command::Add { request, .. } = &command {
                if matches!(a, Reply::Added(_)) {
                    since
                        .entry(request.key.container_id.clone())
                        .or_insert(now_ms);
                }
            }
            if let Command::Del { key, .. } = &command {
                since.remove(&key.container_id);
            }
            // What a node restarted now would hold: its disk.
            restarted = rebuild(&disk);
            if step % 7 == 0 {
                installed = rebuild(&snapshot(&installed));
            }
            assert_eq!(
                snapshot(&applied),
                disk,
                "seed {seed} step {step}: the journal of {command:?} does not match the state"
            );
        }
    }
}
