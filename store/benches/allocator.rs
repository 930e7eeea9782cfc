//! How long the state machine takes to decide an ADD, empty and nearly full.
//! Prints figures; asserts nothing about time (`cargo bench -p ipkeep-store`).

use std::time::Instant;

use ipkeep_api::message::AddRequest;
use ipkeep_api::model::{AttachmentKey, PodRef, SubnetSpec};
use ipkeep_store::{Command, Reply, State};

fn add(i: usize) -> Command {
    Command::Add {
        request: AddRequest {
            key: AttachmentKey {
                network: "bench".into(),
                container_id: format!("c{i}"),
                ifname: "eth0".into(),
            },
            netns: String::new(),
            subnets: vec![vec!["s".into()]],
            pod: PodRef::default(),
            requested: vec![],
            mac: Default::default(),
            timing: Default::default(),
        },
        node: "n".into(),
        at_ms: 0,
        issued_us: 0,
    }
}

fn del(i: usize) -> Command {
    Command::Del {
        key: AttachmentKey {
            network: "bench".into(),
            container_id: format!("c{i}"),
            ifname: "eth0".into(),
        },
        at_ms: 0,
        issued_us: 0,
    }
}

fn measure(state: &mut State, from: usize, count: usize) -> f64 {
    let mut journal = Vec::new();
    let start = Instant::now();
    for i in from..from + count {
        journal.clear();
        let reply = state.apply(&add(i), &mut journal);
        assert!(matches!(reply, Reply::Added(_)), "{reply:?}");
    }
    start.elapsed().as_secs_f64() * 1e6 / count as f64
}

fn main() {
    for cidr in ["10.0.0.0/16", "10.0.0.0/12"] {
        let mut state = State::default();
        let mut journal = Vec::new();
        state.apply(
            &Command::CreateSubnet {
                spec: SubnetSpec::plain("s", cidr.parse().unwrap()),
            },
            &mut journal,
        );
        let size = state.subnet_info("s").unwrap().usage.assignable as usize;
        let empty_us = measure(&mut state, 0, 1000);
        let fill_to = size * 99 / 100;
        measure(&mut state, 1000, fill_to - 1000);
        // Free every 97th address so the free set is fragmented, as after churn.
        let mut freed = 0;
        for i in (0..fill_to).step_by(97) {
            journal.clear();
            state.apply(&del(i), &mut journal);
            freed += 1;
        }
        let full_us = measure(&mut state, fill_to, 1000.min(freed + size - fill_to));
        println!(
            "{cidr}: {size} addresses; ADD decision {empty_us:.2} us when empty, {full_us:.2} us at 99% full with {freed} scattered holes"
        );
    }
}
