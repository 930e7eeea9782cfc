//! ipkeep as the `ipam` of the reference bridge, macvlan and ptp plugins
//! (Debian's containernetworking-plugins), run the way a runtime runs them.
//! Each test builds a "node" network namespace (so nothing touches the host's
//! interfaces) and pods as namespaces; the plugins run inside the node.

use ipkeep_cluster_test::cni::{ipam, CniCall, CniOutput};
use ipkeep_cluster_test::ctl::held;
use ipkeep_cluster_test::daemon::{Daemon, DaemonOptions};
use ipkeep_cluster_test::netns::NetNs;
use ipkeep_cluster_test::{needs, require};
use serde_json::{json, Value};

struct Node {
    daemon: Daemon,
    ns: NetNs,
}

impl Node {
    fn new(subnet: &str) -> Node {
        Node {
            daemon: Daemon::start(DaemonOptions {
                default_subnet: format!("pods={subnet}"),
                ..Default::default()
            }),
            ns: NetNs::new("ik-node"),
        }
    }

    fn ipam(&self) -> Value {
        ipam(
            json!("pods"),
            &self.daemon.socket(),
            &self.daemon.scratch().join("plugin.log"),
        )
    }

    fn call(&self, plugin: &str, command: &str, pod: &NetNs, cid: &str, conf: &Value) -> CniOutput {
        CniCall::reference(plugin, command)
            .attachment(cid, "eth0", &pod.path())
            .args(&format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=ref;K8S_POD_NAME={cid}"
            ))
            .stdin(conf)
            .in_netns(&self.ns.name)
            .run()
    }
}

fn address_of(result: &Value) -> (String, String) {
    let cidr = result["ips"][0]["address"]
        .as_str()
        .expect("address")
        .to_owned();
    let addr = cidr.split('/').next().unwrap().to_owned();
    (cidr, addr)
}

fn with_prev(conf: &Value, prev: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = prev.clone();
    c
}

/// ADD two pods, check addresses and reachability, CHECK both, DEL both.
fn two_pods(node: &Node, plugin: &str, conf: &Value, ping_each_other: bool) {
    let pods = [NetNs::new("ik-pod"), NetNs::new("ik-pod")];
    let mut results = vec![];
    for (i, pod) in pods.iter().enumerate() {
        let cid = format!("{plugin}{i}");
        let out = node.call(plugin, "ADD", pod, &cid, conf);
        assert!(
            out.ok(),
            "{plugin} ADD failed: {} {}",
            out.stdout,
            out.stderr
        );
        let result = out.json();
        let (cidr, _) = address_of(&result);
        assert_eq!(
            pod.addresses("eth0"),
            vec![cidr.clone()],
            "{plugin}: pod interface has the address"
        );
        results.push(result);
    }
    let (_, a0) = address_of(&results[0]);
    let (_, a1) = address_of(&results[1]);
    assert_ne!(a0, a1);
    let listed = held(&node.daemon.socket(), &["--namespace", "ref"]);
    assert_eq!(listed.len(), 2, "{listed:?}");

    if ping_each_other {
        assert!(
            pods[0].try_exec(&["ping", "-c", "1", "-W", "5", &a1]),
            "{plugin}: pod 0 cannot reach pod 1 at {a1}"
        );
        assert!(
            pods[1].try_exec(&["ping", "-c", "1", "-W", "5", &a0]),
            "{plugin}: pod 1 cannot reach pod 0 at {a0}"
        );
    }

    for (i, pod) in pods.iter().enumerate() {
        let cid = format!("{plugin}{i}");
        let out = node.call(plugin, "CHECK", pod, &cid, &with_prev(conf, &results[i]));
        assert!(
            out.ok(),
            "{plugin} CHECK failed: {} {}",
            out.stdout,
            out.stderr
        );
    }
    for (i, pod) in pods.iter().enumerate() {
        let cid = format!("{plugin}{i}");
        let out = node.call(plugin, "DEL", pod, &cid, &with_prev(conf, &results[i]));
        assert!(
            out.ok(),
            "{plugin} DEL failed: {} {}",
            out.stdout,
            out.stderr
        );
        assert!(
            !pod.has_link("eth0"),
            "{plugin}: DEL removed the pod's interface"
        );
        // DEL again, as runtimes do, succeeds.
        let out = node.call(plugin, "DEL", pod, &cid, conf);
        assert!(
            out.ok(),
            "{plugin} second DEL failed: {} {}",
            out.stdout,
            out.stderr
        );
    }
    assert!(
        held(&node.daemon.socket(), &[]).is_empty(),
        "{plugin}: DEL released the addresses"
    );
}

#[test]
fn bridge_pods_get_their_addresses_and_reach_each_other() {
    require!(needs::NETNS, [needs::PING, needs::REFERENCE_PLUGINS]);
    let node = Node::new("10.100.0.0/24");
    let conf = json!({
        "cniVersion": "1.0.0", "name": "brnet", "type": "bridge",
        "bridge": "ikbr0", "isGateway": true, "ipMasq": false,
        "ipam": node.ipam(),
    });
    two_pods(&node, "bridge", &conf, true);
    // The bridge got the subnet's gateway.
    assert!(node
        .ns
        .addresses("ikbr0")
        .contains(&"10.100.0.1/24".to_string()));
}

#[test]
fn macvlan_pods_get_their_addresses_and_reach_each_other() {
    require!(needs::NETNS, [needs::PING, needs::REFERENCE_PLUGINS]);
    let node = Node::new("10.101.0.0/24");
    // The master: one end of a veth pair (this kernel has no dummy links).
    node.ns.exec(&[
        "ip", "link", "add", "ikmaster", "type", "veth", "peer", "name", "ikpeer",
    ]);
    node.ns.exec(&["ip", "link", "set", "ikmaster", "up"]);
    node.ns.exec(&["ip", "link", "set", "ikpeer", "up"]);
    let conf = json!({
        "cniVersion": "0.4.0", "name": "mvnet", "type": "macvlan",
        "master": "ikmaster", "mode": "bridge",
        "ipam": node.ipam(),
    });
    two_pods(&node, "macvlan", &conf, true);
}

#[test]
fn ptp_pods_get_their_addresses_and_reach_the_node() {
    require!(needs::NETNS, [needs::PING, needs::REFERENCE_PLUGINS]);
    let node = Node::new("10.102.0.0/24");
    let conf = json!({
        "cniVersion": "1.0.0", "name": "ptpnet", "type": "ptp", "ipMasq": false,
        "ipam": node.ipam(),
    });
    // ptp gives each pod a point-to-point link to the node, not to each
    // other: check the node reaches a pod before the common checks.
    let probe = NetNs::new("ik-pod");
    let out = node.call("ptp", "ADD", &probe, "probe", &conf);
    assert!(out.ok(), "ptp ADD failed: {} {}", out.stdout, out.stderr);
    let result = out.json();
    let (_, addr) = address_of(&result);
    assert!(
        node.ns.try_exec(&["ping", "-c", "1", "-W", "5", &addr]),
        "the node cannot reach its ptp pod at {addr}"
    );
    assert!(
        probe.try_exec(&["ping", "-c", "1", "-W", "5", "10.102.0.1"]),
        "the pod cannot reach its gateway"
    );
    assert!(node
        .call("ptp", "DEL", &probe, "probe", &with_prev(&conf, &result))
        .ok());
    two_pods(&node, "ptp", &conf, false);
}
