//! Commands the unit tests apply.

use ipkeep_api::message::AddRequest;
use ipkeep_api::model::{AttachmentKey, PodRef, SubnetSpec};

use crate::command::Command;

pub fn create_subnet(name: &str, cidr: &str) -> Command {
    Command::CreateSubnet {
        spec: SubnetSpec::plain(name, cidr.parse().expect("CIDR")),
    }
}

/// An ADD of attachment `cid` (network "net", eth0) from `subnet`, on
/// node-a, with fixed stamps.
pub fn add(cid: &str, subnet: &str) -> Command {
    Command::Add {
        request: AddRequest {
            key: AttachmentKey {
                network: "net".into(),
                container_id: cid.into(),
                ifname: "eth0".into(),
            },
            netns: format!("/run/netns/{cid}"),
            subnets: vec![vec![subnet.into()]],
            pod: PodRef::default(),
            requested: vec![],
            mac: Default::default(),
            timing: Default::default(),
        },
        node: "node-a".into(),
        at_ms: 1_700_000_000_000,
        issued_us: 1_700_000_000_000_000,
    }
}
