//! A peer without the cluster secret cannot change anything: a forged
//! AppendEntries, sent with no handshake or after a handshake whose proof is
//! wrong, is refused before it is decoded, and the node's log, term and
//! state stay as they were.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ipkeep_api::client::Client;
use ipkeep_api::codec;
use ipkeep_api::message::{NodeStatus, Request, Response};
use ipkeep_raft::peer::wire::PeerRequest;
use ipkeep_store::types::{Entry, TypeConfig};
use ipkeep_store::Command as StoreCommand;
use openraft::raft::AppendEntriesRequest;
use openraft::{CommittedLeaderId, EntryPayload, LogId, Vote};

struct Daemon {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn status(socket: &Path) -> Option<NodeStatus> {
    let mut client = Client::connect(socket, Duration::from_secs(2)).ok()?;
    match client.call(&Request::NodeStatus).ok()? {
        Response::NodeStatus(s) => Some(s),
        _ => None,
    }
}

fn subnet_names(socket: &Path) -> Vec<String> {
    let mut client = Client::connect(socket, Duration::from_secs(2)).expect("connect");
    match client.call(&Request::SubnetList).expect("subnet list") {
        Response::Subnets(list) => list.into_iter().map(|s| s.subnet.name).collect(),
        other => panic!("unexpected answer {other:?}"),
    }
}

fn start(dir: &Path, port: u16) -> Daemon {
    let secret = dir.join("secret");
    std::fs::write(&secret, "the-real-cluster-secret-0123456789").expect("secret");
    let socket = dir.join("sock/ipkeepd.sock");
    let log = dir.join("ipkeepd.log");
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_ipkeepd"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--socket")
        .arg(&socket)
        .args(["--node-id", "1", "--listen", &addr])
        .arg("--initial-cluster")
        .arg(format!("1={addr}"))
        .arg("--cluster-secret-file")
        .arg(&secret)
        .env("RUST_LOG", "info,openraft=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn ipkeepd");
    let daemon = Daemon { child, socket, log };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = status(&daemon.socket) {
            if s.role == "Leader" && s.last_applied == s.last_log_index {
                let names = subnet_names(&daemon.socket);
                if names.iter().any(|n| n == "default") {
                    return daemon;
                }
            }
        }
        assert!(Instant::now() < deadline, "ipkeepd did not become leader");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An AppendEntries from a made-up leader of a later term that would replace
/// the whole log with one entry deleting the default subnet.
fn forged_append() -> Vec<u8> {
    let leader = CommittedLeaderId::new(99, 2);
    let entry = Entry {
        log_id: LogId::new(leader, 1),
        payload: EntryPayload::Normal(StoreCommand::DeleteSubnet {
            name: "default".into(),
        }),
    };
    let request: AppendEntriesRequest<TypeConfig> = AppendEntriesRequest {
        vote: Vote::new_committed(99, 2),
        prev_log_id: None,
        entries: vec![entry],
        leader_commit: Some(LogId::new(leader, 1)),
    };
    codec::encode_frame(&PeerRequest::Append(request)).expect("encode")
}

/// Sends bytes and reads until the node closes the connection (bounded).
fn send_and_wait_for_close(port: u16, steps: &[Vec<u8>], read_between: usize) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to peer port");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    for (i, bytes) in steps.iter().enumerate() {
        if i == 1 && read_between > 0 {
            // The server's hello and proof, which a forger cannot check
            // nor answer.
            let mut reply = vec![0u8; read_between];
            stream.read_exact(&mut reply).expect("server hello");
        }
        // The node may already have hung up; that is the point.
        let _ = stream.write_all(bytes);
    }
    let mut rest = Vec::new();
    // Ends with EOF (or a reset) when the node closes; never with a reply.
    let _ = stream.read_to_end(&mut rest);
    assert!(
        rest.is_empty(),
        "the node answered a forged peer: {} bytes",
        rest.len()
    );
}

fn hello(id: u64) -> Vec<u8> {
    let mut bytes = b"IPKP".to_vec();
    bytes.extend_from_slice(&1u16.to_be_bytes());
    bytes.extend_from_slice(&[7u8; 32]);
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes
}

#[test]
fn a_forged_append_entries_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let daemon = start(dir.path(), port);
    let before = status(&daemon.socket).expect("status");

    // 1. The frame straight away, as if the transport had no handshake.
    send_and_wait_for_close(port, &[forged_append()], 0);

    // 2. A hello, then a made-up proof, then the frame and a made-up MAC.
    let mut frame = forged_append();
    frame.extend_from_slice(&[0u8; 32]);
    send_and_wait_for_close(port, &[hello(2), vec![0u8; 32], frame], 46 + 32);

    let after = status(&daemon.socket).expect("the node still serves");
    assert_eq!(after.term, before.term, "the forged vote moved the term");
    assert_eq!(after.leader, Some(1));
    assert_eq!(after.last_log_index, before.last_log_index);
    assert_eq!(after.last_applied, before.last_applied);
    assert!(subnet_names(&daemon.socket).iter().any(|n| n == "default"));

    // Refusals are logged in aggregate: the first at once, the second in
    // the next summary, each with why its handshake failed.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let log = loop {
        let log = std::fs::read_to_string(&daemon.log).expect("daemon log");
        if log.contains("does not know the cluster secret") || std::time::Instant::now() > deadline
        {
            break log;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        log.contains("refused connections: 1 failed authentication") && log.contains("bad magic"),
        "{log}"
    );
    assert!(log.contains("does not know the cluster secret"), "{log}");
    assert!(
        !log.contains("refused connections: 2"),
        "each refusal counted once:\n{log}"
    );
}
