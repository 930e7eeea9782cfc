//! The peer wire, pinned: one frame of every kind of request and answer
//! nodes send each other (as `PeerConn` frames them, before the MAC that
//! depends on the session), checked against golden files in
//! `raft/tests/fixtures/peer/`. Each frame must encode to its file, and the
//! file must decode and encode back to the same bytes. A change here breaks
//! a cluster of mixed versions: it needs a new protocol version and
//! docs/compatibility.md, and only then `IPKEEP_WRITE_FIXTURES=1`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use ipkeep_api::message::{DiskStatus, NodeStatus, SnapshotTiming};
use ipkeep_api::model::AttachmentKey;
use ipkeep_api::{codec, golden, ApiError};
use ipkeep_raft::peer::wire::{
    Committed, ForwardError, MembershipChange, PeerRequest, PeerResponse,
};
use ipkeep_store::types::{Entry, LogId, PeerNode, SnapshotMeta, StoredMembership, Vote};
use ipkeep_store::{Command, Reply};
use openraft::error::{Fatal, InstallSnapshotError, RaftError, SnapshotMismatch};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{CommittedLeaderId, EntryPayload, Membership, SnapshotSegmentId};
use serde::de::DeserializeOwned;
use serde::Serialize;

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn vote() -> Vote {
    Vote::new_committed(4, 1)
}

fn del() -> Command {
    Command::Del {
        key: AttachmentKey {
            network: "net".into(),
            container_id: "c1".into(),
            ifname: "eth0".into(),
        },
        at_ms: 1_700_000_000_000,
        issued_us: 1_700_000_000_000_000,
    }
}

fn membership() -> Membership<u64, PeerNode> {
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
    Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes)
}

fn requests() -> Vec<(&'static str, PeerRequest)> {
    vec![
        (
            "request-append",
            PeerRequest::Append(AppendEntriesRequest {
                vote: vote(),
                prev_log_id: Some(log_id(4, 9)),
                entries: vec![
                    Entry {
                        log_id: log_id(4, 10),
                        payload: EntryPayload::Blank,
                    },
                    Entry {
                        log_id: log_id(4, 11),
                        payload: EntryPayload::Membership(membership()),
                    },
                    Entry {
                        log_id: log_id(4, 12),
                        payload: EntryPayload::Normal(del()),
                    },
                ],
                leader_commit: Some(log_id(4, 10)),
            }),
        ),
        (
            "request-vote",
            PeerRequest::Vote(VoteRequest {
                vote: Vote::new(5, 2),
                last_log_id: Some(log_id(4, 12)),
            }),
        ),
        (
            "request-snapshot",
            PeerRequest::Snapshot(InstallSnapshotRequest {
                vote: vote(),
                meta: SnapshotMeta {
                    last_log_id: Some(log_id(4, 12)),
                    last_membership: StoredMembership::new(Some(log_id(4, 11)), membership()),
                    snapshot_id: "4-12-1".into(),
                },
                offset: 3 << 20,
                data: b"IPKSNAP1 part".to_vec(),
                done: false,
            }),
        ),
        ("request-propose", PeerRequest::Propose(del())),
        ("request-read-index", PeerRequest::ReadIndex),
        (
            "request-membership-add",
            PeerRequest::Membership(MembershipChange::AddLearner {
                id: 4,
                addr: "10.0.0.4:7900".into(),
            }),
        ),
        (
            "request-membership-promote",
            PeerRequest::Membership(MembershipChange::Promote { id: 4 }),
        ),
        (
            "request-membership-remove",
            PeerRequest::Membership(MembershipChange::Remove { id: 4 }),
        ),
        ("request-status", PeerRequest::Status),
    ]
}

fn responses() -> Vec<(&'static str, PeerResponse)> {
    vec![
        (
            "response-append",
            PeerResponse::Append(Ok(AppendEntriesResponse::Success)),
        ),
        (
            "response-append-conflict",
            PeerResponse::Append(Ok(AppendEntriesResponse::Conflict)),
        ),
        (
            "response-append-higher-vote",
            PeerResponse::Append(Ok(AppendEntriesResponse::HigherVote(Vote::new(6, 3)))),
        ),
        (
            "response-append-fatal",
            PeerResponse::Append(Err(RaftError::Fatal(Fatal::Stopped))),
        ),
        (
            "response-vote",
            PeerResponse::Vote(Ok(VoteResponse {
                vote: Vote::new(5, 2),
                vote_granted: true,
                last_log_id: Some(log_id(4, 12)),
            })),
        ),
        (
            "response-snapshot",
            PeerResponse::Snapshot(Ok(InstallSnapshotResponse { vote: vote() })),
        ),
        (
            "response-snapshot-mismatch",
            PeerResponse::Snapshot(Err(RaftError::APIError(
                InstallSnapshotError::SnapshotMismatch(SnapshotMismatch {
                    expect: SnapshotSegmentId {
                        id: "4-12-1".into(),
                        offset: 0,
                    },
                    got: SnapshotSegmentId {
                        id: "4-12-1".into(),
                        offset: 3 << 20,
                    },
                }),
            ))),
        ),
        (
            "response-proposed",
            PeerResponse::Proposed(Ok(Committed {
                reply: Reply::Done,
                index: 12,
            })),
        ),
        (
            "response-proposed-failed",
            PeerResponse::Proposed(Ok(Committed {
                reply: Reply::Failed(ApiError::try_again("the subnet is full")),
                index: 13,
            })),
        ),
        (
            "response-not-leader",
            PeerResponse::Proposed(Err(ForwardError::NotLeader { leader: Some(1) })),
        ),
        (
            "response-forward-error",
            PeerResponse::Membership(Err(ForwardError::Api(ApiError::invalid(
                "id",
                "is not a member",
            )))),
        ),
        ("response-read-index", PeerResponse::ReadIndex(Ok(12))),
        ("response-membership", PeerResponse::Membership(Ok(()))),
        (
            "response-status",
            PeerResponse::Status(NodeStatus {
                node_id: 2,
                node_name: "node-b".into(),
                role: "Follower".into(),
                leader: Some(1),
                term: 4,
                last_log_index: Some(12),
                last_applied: Some(12),
                snapshot_index: Some(10),
                purged_index: Some(9),
                voters: vec![1, 2, 3],
                learners: vec![4],
                last_snapshot_built: Some(SnapshotTiming {
                    index: 10,
                    millis: 40,
                    bytes: 4096,
                }),
                last_snapshot_installed: None,
                disk: Some(DiskStatus {
                    free_bytes: 1 << 30,
                    floor_bytes: 256 << 20,
                    low: false,
                }),
            }),
        ),
        (
            "response-refused",
            PeerResponse::Refused("the disk is under its floor".into()),
        ),
    ]
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/peer")
        .join(format!("{name}.frame"))
}

/// The frame encodes to its golden file, and the golden file decodes into a
/// value that encodes back to the same bytes.
fn pinned<T: Serialize + DeserializeOwned>(name: &str, value: &T) {
    let frame = codec::encode_frame(value).expect("a peer message encodes");
    golden::check(&fixture(name), &frame);
    let bytes = std::fs::read(fixture(name)).expect("golden frame");
    let decoded: T = codec::decode_frame_body(&bytes[4..])
        .unwrap_or_else(|e| panic!("the golden frame {name} does not decode: {e}"));
    assert_eq!(
        codec::encode_frame(&decoded).expect("encodes again"),
        bytes,
        "{name} does not survive a round trip"
    );
}

#[test]
fn every_peer_request_is_framed_as_its_golden_file() {
    for (name, request) in requests() {
        pinned(name, &request);
    }
}

#[test]
fn every_peer_response_is_framed_as_its_golden_file() {
    for (name, response) in responses() {
        pinned(name, &response);
    }
}
