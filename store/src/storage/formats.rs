//! The persisted formats, pinned by golden files (`store/tests/fixtures/`):
//! a log segment holding one entry of every kind of command, and a snapshot
//! (the format of a backup too) holding a record of every kind. Each test
//! encodes today's values and compares them with the checked-in bytes, and
//! decodes the checked-in bytes back into those values. A change to a
//! format, even a field added to a type the log or a snapshot carries,
//! fails here: it must be a deliberate act, with a new version, a reader of
//! the old bytes, and a line in docs/compatibility.md. Then, and only then,
//! `IPKEEP_WRITE_FIXTURES=1 cargo test -p ipkeep-store formats` writes the
//! new golden files (keep the old ones as fixtures of the older version).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use ipkeep_api::message::{AddRequest, MacWish, PoolRequest, Timing};
use ipkeep_api::model::{
    AttachmentKey, IpRange, PodPattern, PodRef, PodSelector, Sticky, SubnetSpec, SubnetUpdate,
};
use ipkeep_api::Mac;
use openraft::{CommittedLeaderId, EntryPayload, Membership};

use super::log_file::LogFile;
use super::snapshot_file;
use crate::command::Command;
use crate::records::Record;
use crate::state::State;
use crate::types::{Entry, LogId, PeerNode, SnapshotMeta, StoredMembership};

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn golden(name: &str, bytes: &[u8]) {
    ipkeep_api::golden::check(&fixture_path(name), bytes);
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn key(container: &str) -> AttachmentKey {
    AttachmentKey {
        network: "net".into(),
        container_id: container.into(),
        ifname: "eth0".into(),
    }
}

fn range(start: &str, end: &str) -> IpRange {
    IpRange {
        start: start.parse().expect("address"),
        end: end.parse().expect("address"),
    }
}

const AT_MS: u64 = 1_700_000_000_000;
const ISSUED_US: u64 = 1_700_000_000_000_000;

fn add(container: &str, pod: (&str, &str)) -> Command {
    Command::Add {
        request: AddRequest {
            key: key(container),
            netns: format!("/run/netns/{container}"),
            subnets: vec![vec!["pods".into()]],
            pod: PodRef {
                namespace: Some(pod.0.into()),
                name: Some(pod.1.into()),
                uid: Some("0b9e2f6c".into()),
            },
            requested: vec![],
            mac: MacWish::Exactly(Mac([0x02, 0x42, 0x0a, 0x3c, 0x00, 0x0b])),
            timing: Timing {
                issued_us: ISSUED_US,
                deadline_us: ISSUED_US + 15_000_000,
            },
        },
        node: "node-a".into(),
        at_ms: AT_MS,
        issued_us: ISSUED_US,
    }
}

fn del(container: &str, offset_ms: u64) -> Command {
    Command::Del {
        key: key(container),
        at_ms: AT_MS + offset_ms,
        issued_us: ISSUED_US + offset_ms * 1000,
    }
}

fn create_subnet() -> Command {
    let mut spec = SubnetSpec::plain("pods", "10.60.0.0/24".parse().expect("CIDR"));
    spec.exclude = vec![range("10.60.0.2", "10.60.0.5")];
    Command::CreateSubnet { spec }
}

fn create_pool() -> Command {
    Command::CreatePool {
        request: PoolRequest {
            name: "etcd".into(),
            subnet: "pods".into(),
            addresses: vec![range("10.60.0.10", "10.60.0.12")],
            selector: PodSelector {
                namespace: Some("db".into()),
                pods: vec![PodPattern::Prefix("etcd-".into())],
            },
            sticky: Some(Sticky {
                idle_ttl_ms: Some(3_600_000),
            }),
        },
    }
}

/// One command of every kind, in the order of their variants.
fn every_command() -> Vec<Command> {
    vec![
        add("c1", ("db", "etcd-0")),
        del("c1", 1_000),
        Command::Gc {
            network: "net".into(),
            node: "node-a".into(),
            valid: vec![("c2".into(), "eth0".into())],
            at_ms: AT_MS,
            issued_us: ISSUED_US,
        },
        create_subnet(),
        Command::DeleteSubnet { name: "old".into() },
        Command::UpdateSubnet {
            name: "pods".into(),
            update: SubnetUpdate {
                namespaces: Some(vec!["db".into()]),
                quotas: vec![("db".into(), Some(10))],
                ..SubnetUpdate::default()
            },
        },
        create_pool(),
        Command::DeletePool { name: "old".into() },
        Command::ResizePool {
            name: "etcd".into(),
            addresses: vec![range("10.60.0.10", "10.60.0.13")],
        },
        Command::Reserve {
            range: range("10.60.0.20", "10.60.0.21"),
            note: "the routers".into(),
            at_ms: AT_MS,
        },
        Command::Unreserve {
            range: range("10.60.0.20", "10.60.0.21"),
        },
        Command::ReleaseBinding {
            namespace: "db".into(),
            name: "etcd-0".into(),
        },
        Command::Reclaim {
            attachments: vec![(key("c3"), AT_MS)],
            at_ms: AT_MS,
            issued_us: ISSUED_US,
        },
        Command::ForgetNode {
            node: "node-b".into(),
            at_ms: AT_MS,
            issued_us: ISSUED_US,
        },
        Command::Restore {
            records: vec![(b"s/x".to_vec(), vec![3, 0])],
        },
        Command::ExpireBindings { at_ms: AT_MS },
        Command::Batch(vec![add("c4", ("web", "front-0")), del("c4", 2_000)]),
    ]
}

/// A log as a cluster writes one: a blank entry of a new leader, a
/// membership, then a command of every kind.
fn every_entry() -> Vec<Entry> {
    let nodes: BTreeMap<u64, PeerNode> = (1..=3)
        .map(|id| {
            (
                id,
                PeerNode {
                    addr: format!("10.0.0.{id}:7900"),
                },
            )
        })
        .collect();
    let mut entries = vec![
        Entry {
            log_id: log_id(1, 1),
            payload: EntryPayload::Blank,
        },
        Entry {
            log_id: log_id(1, 2),
            payload: EntryPayload::Membership(Membership::new(
                vec![BTreeSet::from([1, 2, 3])],
                nodes,
            )),
        },
    ];
    for (i, command) in every_command().into_iter().enumerate() {
        entries.push(Entry {
            log_id: log_id(2, 3 + i as u64),
            payload: EntryPayload::Normal(command),
        });
    }
    entries
}

#[test]
fn a_log_segment_is_written_as_the_golden_file_and_read_back() {
    let entries = every_entry();
    let dir = tempfile::tempdir().expect("temp dir");
    let log = LogFile::open(dir.path()).expect("open log");
    log.append(entries.clone()).expect("append");
    log.sync_data().expect("sync");
    drop(log);
    let segment = dir.path().join(format!("{:020}.log", 1));
    let written = std::fs::read(&segment).expect("read segment");
    // A segment is presized: its header and records, then zeros to its end.
    let end = 16
        + entries
            .iter()
            .map(|e| 8 + super::log_file::encode(e).expect("entry encodes").len())
            .sum::<usize>();
    let (records, rest) = written.split_at(end);
    assert!(rest.iter().all(|&b| b == 0));
    golden("log/00000000000000000001.log", records);

    let copy = tempfile::tempdir().expect("temp dir");
    std::fs::copy(
        fixture_path("log/00000000000000000001.log"),
        copy.path().join(format!("{:020}.log", 1)),
    )
    .expect("copy golden segment");
    let log = LogFile::open(copy.path()).expect("the golden segment opens");
    assert_eq!(log.read(0, 1_000).expect("read"), entries);
}

/// A state with a record of every kind: a subnet and its cursor, a pool and
/// its cursor, a reservation, a sticky binding, an allocation, a past
/// holder and a DEL's tombstone.
fn state_with_every_record() -> State {
    let mut state = State::default();
    let mut journal = vec![];
    for command in [
        create_subnet(),
        create_pool(),
        Command::Reserve {
            range: range("10.60.0.20", "10.60.0.21"),
            note: "the routers".into(),
            at_ms: AT_MS,
        },
        add("c1", ("db", "etcd-0")),
        add("c2", ("web", "front-0")),
        del("c2", 1_000),
    ] {
        let reply = state.apply(&command, &mut journal);
        assert!(
            !matches!(reply, crate::command::Reply::Failed(_)),
            "{command:?}: {reply:?}"
        );
    }
    state
}

fn snapshot_meta() -> SnapshotMeta {
    let nodes: BTreeMap<u64, PeerNode> = [(
        1,
        PeerNode {
            addr: "10.0.0.1:7900".into(),
        },
    )]
    .into();
    SnapshotMeta {
        last_log_id: Some(log_id(2, 40)),
        last_membership: StoredMembership::new(
            Some(log_id(1, 2)),
            Membership::new(vec![BTreeSet::from([1])], nodes),
        ),
        snapshot_id: "2-40-1".into(),
    }
}

#[test]
fn a_snapshot_is_written_as_the_golden_file_and_read_back() {
    let state = state_with_every_record();
    let records: Vec<Record> = state.records().collect();
    for kind in [
        "Subnet",
        "Cursor",
        "Pool",
        "PoolCursor",
        "Reservation",
        "Binding",
        "Allocation",
        "History",
        "Tombstone",
    ] {
        assert!(
            records
                .iter()
                .any(|r| format!("{r:?}").starts_with(&format!("{kind} "))
                    || format!("{r:?}").starts_with(&format!("{kind}("))),
            "the state holds no {kind} record: {records:?}"
        );
    }
    let bytes = snapshot_file::encode(
        &snapshot_meta(),
        records.iter().map(|r| (r.key(), r.value())),
    );
    golden("snapshot.snap", &bytes);

    let pinned = std::fs::read(fixture_path("snapshot.snap")).expect("golden snapshot");
    snapshot_file::verify_bytes(&pinned).expect("its checksum holds");
    let mut read = vec![];
    let meta = snapshot_file::read_records_from(&pinned[..], |key, value| {
        read.push(Record::decode(&key, &value).expect("a record of the golden snapshot"));
        Ok(())
    })
    .expect("the golden snapshot reads");
    assert_eq!(meta, snapshot_meta());
    assert_eq!(read, records);
}
