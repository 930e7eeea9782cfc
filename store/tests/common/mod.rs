//! Builders shared by the store's tests.
#![allow(dead_code)]

use ipkeep_api::message::AddRequest;
use ipkeep_api::model::{AttachmentKey, PodRef, SubnetSpec};
use ipkeep_store::Command;

pub fn subnet(name: &str, cidr: &str) -> SubnetSpec {
    SubnetSpec::plain(name, cidr.parse().unwrap())
}

pub fn key(cid: &str) -> AttachmentKey {
    AttachmentKey {
        network: "net".into(),
        container_id: cid.into(),
        ifname: "eth0".into(),
    }
}

pub fn add(cid: &str, subnets: &[&[&str]]) -> Command {
    add_on(cid, subnets, "node-a")
}

pub fn add_on(cid: &str, subnets: &[&[&str]], node: &str) -> Command {
    Command::Add {
        request: AddRequest {
            key: key(cid),
            netns: format!("/run/netns/{cid}"),
            subnets: subnets
                .iter()
                .map(|set| set.iter().map(|s| s.to_string()).collect())
                .collect(),
            pod: PodRef {
                namespace: Some("ns".into()),
                name: Some(format!("pod-{cid}")),
                uid: None,
            },
            requested: vec![],
            mac: Default::default(),
            timing: Default::default(),
        },
        node: node.into(),
        at_ms: 1_700_000_000_000,
        issued_us: 1_700_000_000_000_000,
    }
}

pub fn del(cid: &str) -> Command {
    Command::Del {
        key: key(cid),
        at_ms: 1_700_000_100_000,
        issued_us: 1_700_000_100_000_000,
    }
}
