//! Requests on the node API that could stop a node: each is refused with
//! a clear error, and the daemon goes on serving.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use ipkeep_api::codec::{self, PROTOCOL_VERSION};
use ipkeep_api::message::{AddRequest, Request, Response};
use ipkeep_api::model::{AttachmentKey, IpRange, PodRef, SubnetSpec};
use ipkeep_api::{code, ApiError};
use ipkeep_cluster_test::cni::{ipam, ipam_only_conf, CniCall};
use ipkeep_cluster_test::ctl::{ctl, held};
use ipkeep_cluster_test::daemon::{Daemon, DaemonOptions};
use serde_json::json;

/// Sends raw frame bytes and reads one answer; None when the daemon closed
/// the connection without one.
fn send_raw(daemon: &Daemon, frame: &[u8]) -> Option<Response> {
    let mut stream = UnixStream::connect(daemon.socket()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(frame).expect("write");
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).ok()?;
    let len = codec::frame_len(header, codec::MAX_RESPONSE_FRAME).ok()?;
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).ok()?;
    codec::decode_frame_body(&body).ok()
}

/// A frame of `depth` Linearize wrappers around a status request, built from
/// bytes (encoding such a value would itself recurse `depth` deep).
fn nested_linearize(depth: usize) -> Vec<u8> {
    let leaf = codec::encode(&Request::NodeStatus).unwrap();
    let one = codec::encode(&Request::Linearize(Box::new(Request::NodeStatus))).unwrap();
    let wrapper = &one[..one.len() - leaf.len()];
    let mut body = PROTOCOL_VERSION.to_be_bytes().to_vec();
    for _ in 0..depth {
        body.extend_from_slice(wrapper);
    }
    body.extend_from_slice(&leaf);
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

#[test]
fn a_small_deeply_nested_frame_is_refused_and_the_daemon_serves_on() {
    let mut daemon = Daemon::start(DaemonOptions::default());
    let frame = nested_linearize(1_850);
    assert!(frame.len() < 4096, "{} bytes", frame.len());
    match send_raw(&daemon, &frame) {
        Some(Response::Error(e)) => assert!(e.to_string().contains("nests more than"), "{e}"),
        other => panic!("a nested frame was not refused with a reason: {other:?}"),
    }
    assert_serving(&mut daemon);
}

/// The daemon is alive and answers a new connection.
fn assert_serving(daemon: &mut Daemon) {
    match daemon.request(&Request::NodeStatus) {
        Ok(Response::NodeStatus(_)) => {}
        other => panic!(
            "the daemon no longer serves ({other:?}, exit {:?}):\n{}",
            daemon.exited(),
            daemon.log()
        ),
    }
    assert_eq!(daemon.exited(), None);
}

fn add(container: &str, pod: PodRef, netns: &str) -> Request {
    Request::Add(AddRequest {
        key: AttachmentKey {
            network: "hostile".into(),
            container_id: container.into(),
            ifname: "eth0".into(),
        },
        netns: netns.into(),
        subnets: vec![vec!["pods".into()]],
        pod,
        requested: vec![],
        mac: Default::default(),
        timing: Default::default(),
    })
}

fn pod(namespace: &str, name: &str) -> PodRef {
    PodRef {
        namespace: Some(namespace.into()),
        name: Some(name.into()),
        uid: None,
    }
}

fn refusal(daemon: &Daemon, request: &Request) -> ApiError {
    match daemon.request(request) {
        Err(ipkeep_api::ClientError::Api(e)) | Ok(Response::Error(e)) => e,
        other => panic!("not refused: {other:?}"),
    }
}

/// 40 ADDs at once, each with a pod name of a megabyte: stored whole, they
/// would make one Raft entry larger than the log accepts, and the leader
/// would exit. Each is refused, naming the field, and nothing is stored.
#[test]
fn oversized_fields_are_refused_before_the_log_and_the_leader_stays_up() {
    let mut daemon = Daemon::start(DaemonOptions {
        default_subnet: "pods=10.73.0.0/16".into(),
        ..Default::default()
    });
    let huge = "p".repeat(1_000_000);
    let answers: Vec<_> = (0..40)
        .map(|i| {
            let (socket, huge) = (daemon.socket(), huge.clone());
            std::thread::spawn(move || {
                let mut client =
                    ipkeep_api::Client::connect(&socket, Duration::from_secs(30)).expect("connect");
                client.call(&add(
                    &format!("big{i}"),
                    pod("team-a", &huge),
                    "/run/netns/x",
                ))
            })
        })
        .collect();
    for answer in answers {
        match answer.join().expect("client") {
            Err(ipkeep_api::ClientError::Api(e)) | Ok(Response::Error(e)) => {
                assert_eq!(e.code, code::INVALID_ENV, "{e}");
                assert!(e.details.contains("K8S_POD_NAME"), "{e}");
            }
            other => panic!("a megabyte pod name was not refused: {other:?}"),
        }
    }
    assert_serving(&mut daemon);

    for (what, request, field) in [
        (
            "a newline in the namespace",
            add("c1", pod("team\na", "web-0"), "/run/netns/x"),
            "K8S_POD_NAMESPACE",
        ),
        (
            "a NUL in the pod name",
            add("c2", pod("team-a", "web\u{0}0"), "/run/netns/x"),
            "K8S_POD_NAME",
        ),
        (
            "an uid past 253 bytes",
            add(
                "c3",
                PodRef {
                    uid: Some("u".repeat(300)),
                    ..pod("team-a", "web-0")
                },
                "/run/netns/x",
            ),
            "K8S_POD_UID",
        ),
        (
            "a netns path past PATH_MAX",
            add("c4", pod("team-a", "web-0"), &"/x".repeat(3000)),
            "CNI_NETNS",
        ),
        (
            "a newline in the netns path",
            add("c5", pod("team-a", "web-0"), "/run/netns/a\nb"),
            "CNI_NETNS",
        ),
    ] {
        let e = refusal(&daemon, &request);
        assert_eq!(e.code, code::INVALID_ENV, "{what}: {e}");
        assert!(e.details.contains(field), "{what}: {e}");
    }
    assert!(held(&daemon.socket(), &[]).is_empty(), "nothing was stored");
    assert_serving(&mut daemon);
}

#[test]
fn subnets_the_allocator_cannot_hold_are_refused_and_large_ipv6_ones_are_shown() {
    let daemon = Daemon::start(DaemonOptions::default());
    // From the wire, not the CLI (which parses ranges itself).
    let mut inverted = SubnetSpec::plain("inv", "10.74.0.0/24".parse().unwrap());
    inverted.exclude = vec![IpRange {
        start: "10.74.0.20".parse().unwrap(),
        end: "10.74.0.10".parse().unwrap(),
    }];
    let e = refusal(&daemon, &Request::SubnetCreate(inverted));
    assert_eq!(e.code, code::INVALID_REQUEST, "{e}");
    assert!(e.details.starts_with("exclude"), "{e}");
    assert!(e.details.contains("starts after it ends"), "{e}");

    let out = ctl(
        &daemon.socket(),
        &["subnet", "create", "everything", "--cidr", "::/0"],
    );
    assert!(!out.ok(), "::/0 was accepted");
    assert!(out.stderr.contains("cidr"), "{}", out.stderr);

    let out = ctl(
        &daemon.socket(),
        &["subnet", "create", "v6", "--cidr", "fd00:74::/48"],
    );
    assert!(out.ok(), "{}", out.stderr);
    let shown = ctl(&daemon.socket(), &["subnet", "show", "v6", "-o", "json"]);
    assert!(shown.ok(), "{}", shown.stderr);
    let json = shown.json();
    assert_eq!(json["subnet"]["name"], "v6");
    // Exact digits in the output (a JSON reader may take them as a float).
    let free = (1u128 << 80) - 2;
    assert!(
        shown.stdout.contains(&format!("\"free\": {free}")),
        "every host address but the gateway and the subnet-router anycast one: {}",
        shown.stdout
    );
    let table = ctl(&daemon.socket(), &["subnet", "show", "v6"]);
    assert!(table.ok(), "{}", table.stderr);
    assert!(
        table.stdout.contains(&((1u128 << 80) - 2).to_string()),
        "{}",
        table.stdout
    );
}

/// CHECK's prevResult must be a result: `ips` that is not a list is a bad
/// configuration (CNI error 7), not "nothing to check".
#[test]
fn check_with_a_prev_result_whose_ips_are_not_a_list_is_error_7() {
    let daemon = Daemon::start(DaemonOptions {
        default_subnet: "pods=10.75.0.0/24".into(),
        ..Default::default()
    });
    let conf = ipam_only_conf(
        "1.0.0",
        "checknet",
        ipam(
            json!("pods"),
            &daemon.socket(),
            &daemon.scratch().join("plugin.log"),
        ),
    );
    let added = CniCall::ipkeep("ADD")
        .attachment("chk1", "eth0", "/run/netns/chk1")
        .stdin(&conf)
        .run();
    assert!(added.ok(), "{}", added.stdout);
    for prev in [
        json!({"ips": "10.75.0.2/24"}),
        json!("a string"),
        json!({"ips": [{}]}),
    ] {
        let mut with_prev = conf.clone();
        with_prev["prevResult"] = prev.clone();
        let out = CniCall::ipkeep("CHECK")
            .attachment("chk1", "eth0", "/run/netns/chk1")
            .stdin(&with_prev)
            .run();
        assert!(!out.ok(), "CHECK passed with prevResult {prev}");
        assert_eq!(out.error_code(), 7, "{prev}: {}", out.stdout);
        assert!(out.error_text().contains("prevResult"), "{}", out.stdout);
    }
}
