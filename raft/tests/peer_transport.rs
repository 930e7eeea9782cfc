//! The peer transport under abandoned calls and restarted peers, against a
//! real TCP peer that authenticates with the real handshake.
//!
//! openraft drops an append-entries future at its own timeout. If the request
//! had gone out, its answer can still arrive; a transport that then reused the
//! connection would hand that late "success" to the next append, and the
//! leader would count a follower for entries it never received: a leader
//! cut off from the majority could commit an ADD while another leader gave
//! the same address away.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ipkeep_raft::peer::conn::PeerConn;
use ipkeep_raft::peer::pool::PeerPool;
use ipkeep_raft::peer::raft_client::PeerNetwork;
use ipkeep_raft::peer::wire::{PeerRequest, PeerResponse};
use ipkeep_raft::peer::ClusterSecret;
use ipkeep_store::types::{PeerNode, TypeConfig};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
use openraft::{CommittedLeaderId, LogId, Vote};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const SERVER_ID: u64 = 2;
const CLIENT_ID: u64 = 1;

fn secret() -> ClusterSecret {
    ClusterSecret::new(b"a-test-cluster-secret-0123456789").expect("a valid secret")
}

fn append(last_index: u64) -> AppendEntriesRequest<TypeConfig> {
    AppendEntriesRequest {
        vote: Vote::new_committed(3, CLIENT_ID),
        prev_log_id: Some(LogId::new(CommittedLeaderId::new(3, CLIENT_ID), last_index)),
        entries: vec![],
        leader_commit: None,
    }
}

/// What the fake peer tells the test.
#[derive(Debug, PartialEq)]
enum Event {
    Answered { request: usize, connection: usize },
    Closed { connection: usize },
}

/// A peer that answers appends, counted across connections: the first with
/// Success, request number `late` (if any) with Success after 300 ms, every
/// other with Conflict. With `close_after_first`, it closes each connection
/// after answering its first request (a restart, as the client sees it).
async fn fake_peer(
    late: Option<usize>,
    close_after_first: bool,
) -> (String, mpsc::UnboundedReceiver<Event>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr").to_string();
    let (events, rx) = mpsc::unbounded_channel();
    let requests = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        for connection in 0.. {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (events, requests) = (events.clone(), requests.clone());
            tokio::spawn(async move {
                let mut conn =
                    PeerConn::accept(stream, &secret(), SERVER_ID, Duration::from_secs(5))
                        .await
                        .expect("the client authenticates");
                while let Ok(Some(request)) = conn.recv::<PeerRequest>().await {
                    assert!(matches!(request, PeerRequest::Append(_)), "{request:?}");
                    let request = requests.fetch_add(1, Ordering::SeqCst);
                    let answer = if Some(request) == late {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        AppendEntriesResponse::Success
                    } else if request == 0 {
                        AppendEntriesResponse::Success
                    } else {
                        AppendEntriesResponse::Conflict
                    };
                    conn.send(&PeerResponse::Append(Ok(answer)))
                        .await
                        .expect("send the answer");
                    let _ = events.send(Event::Answered {
                        request,
                        connection,
                    });
                    if close_after_first {
                        break;
                    }
                }
                drop(conn);
                let _ = events.send(Event::Closed { connection });
            });
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn an_abandoned_append_is_never_answered_by_the_next_ones_reply() {
    let (addr, mut events) = fake_peer(Some(1), false).await;
    let mut factory = PeerNetwork {
        secret: Some(secret()),
        my_id: CLIENT_ID,
    };
    let mut client = factory
        .new_client(SERVER_ID, &PeerNode { addr: addr.clone() })
        .await;

    // A first append sets the connection up (on a loaded machine the
    // handshake alone could outlast the timeout below).
    let option = RPCOption::new(Duration::from_secs(5));
    let answer = client
        .append_entries(append(1), option)
        .await
        .expect("the first append is answered");
    assert_eq!(answer, AppendEntriesResponse::Success);
    assert_eq!(
        events.recv().await,
        Some(Event::Answered {
            request: 0,
            connection: 0
        })
    );

    // openraft's replication gives up on the next append at its own
    // timeout (it passes the same time to the transport; whichever timer
    // fires first, the outer one must be safe, so it is the one used here)...
    let option = RPCOption::new(Duration::from_secs(5));
    let abandoned = tokio::time::timeout(
        Duration::from_millis(100),
        client.append_entries(append(2), option),
    )
    .await;
    assert!(
        abandoned.is_err(),
        "the first append was abandoned: {abandoned:?}"
    );
    // ...and the peer's late Success reaches the client's socket.
    assert_eq!(
        events.recv().await,
        Some(Event::Answered {
            request: 1,
            connection: 0
        })
    );

    // The next append must get its own answer, Conflict, not that Success.
    let option = RPCOption::new(Duration::from_secs(5));
    let answer = client
        .append_entries(append(3), option)
        .await
        .expect("the third append is answered");
    assert_eq!(answer, AppendEntriesResponse::Conflict);
    // And it was asked on a fresh connection: the old one was dropped.
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.push(events.recv().await.expect("an event"));
    }
    assert!(seen.contains(&Event::Closed { connection: 0 }), "{seen:?}");
    assert!(
        seen.contains(&Event::Answered {
            request: 2,
            connection: 1
        }),
        "{seen:?}"
    );
}

#[tokio::test]
async fn the_pool_skips_a_connection_the_peer_closed() {
    let (addr, mut events) = fake_peer(None, true).await;
    let pool = PeerPool::new(secret(), CLIENT_ID);
    let timeout = Duration::from_secs(5);

    let first = pool
        .call(&addr, &PeerRequest::Append(append(1)), timeout)
        .await
        .expect("the first call is answered");
    assert!(matches!(
        first,
        PeerResponse::Append(Ok(AppendEntriesResponse::Success))
    ));
    // The peer "restarts": it closes the connection the pool kept.
    let mut seen = Vec::new();
    while !seen.contains(&Event::Closed { connection: 0 }) {
        seen.push(events.recv().await.expect("an event"));
    }

    // The pooled connection is seen to be closed before anything is sent on
    // it, so the call goes out once, on a new connection, and succeeds.
    let second = pool
        .call(&addr, &PeerRequest::Append(append(2)), timeout)
        .await
        .expect("the second call is answered on a new connection");
    assert!(matches!(
        second,
        PeerResponse::Append(Ok(AppendEntriesResponse::Conflict))
    ));
    assert_eq!(
        events.recv().await,
        Some(Event::Answered {
            request: 1,
            connection: 1
        })
    );
}
