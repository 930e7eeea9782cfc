//! ipkeep as the main plugin: it makes the pod's interface (veth on a
//! bridge, or macvlan), with the address, MAC and routes the cluster decided.
//! The plugin runs inside a "node" namespace, as a runtime on that node
//! would run it; pods are namespaces of their own.

use ipkeep_cluster_test::cni::{CniCall, CniOutput};
use ipkeep_cluster_test::conflist::{Attachment, Conflist};
use ipkeep_cluster_test::ctl::{ctl, held};
use ipkeep_cluster_test::daemon::{Daemon, DaemonOptions};
use ipkeep_cluster_test::netns::NetNs;
use ipkeep_cluster_test::{needs, require};
use serde_json::{json, Map, Value};

struct Node {
    daemon: Daemon,
    ns: NetNs,
}

impl Node {
    fn new() -> Node {
        Node {
            daemon: Daemon::start(DaemonOptions::default()),
            ns: NetNs::new("ik-node"),
        }
    }

    fn ctl(&self, args: &[&str]) {
        let out = ctl(&self.daemon.socket(), args);
        assert!(out.ok(), "ipkeepctl {args:?}: {}", out.stderr);
    }

    /// A master link for macvlan: one end of a veth pair (no dummy links here).
    fn master(&self, name: &str) {
        let peer = format!("{name}p");
        self.ns.exec(&[
            "ip", "link", "add", name, "type", "veth", "peer", "name", &peer,
        ]);
        self.ns.exec(&["ip", "link", "set", name, "up"]);
        self.ns.exec(&["ip", "link", "set", &peer, "up"]);
    }

    /// A main-plugin configuration; `link` holds mode and its settings.
    fn conf(&self, version: &str, network: &str, subnet: &str, link: Value) -> Value {
        let mut conf = json!({
            "cniVersion": version, "name": network, "type": "ipkeep",
            "ipam": {
                "subnet": subnet,
                "socket": self.daemon.socket(),
                "logFile": self.daemon.scratch().join("plugin.log"),
                "logLevel": "debug",
            },
        });
        for (k, v) in link.as_object().expect("object") {
            conf[k] = v.clone();
        }
        conf
    }

    fn call(
        &self,
        command: &str,
        pod: &NetNs,
        cid: &str,
        ifname: &str,
        args: &str,
        conf: &Value,
    ) -> CniOutput {
        CniCall::ipkeep(command)
            .attachment(cid, ifname, &pod.path())
            .args(args)
            .stdin(conf)
            .in_netns(&self.ns.name)
            .run()
    }

    fn held(&self) -> Vec<(String, String)> {
        held(&self.daemon.socket(), &[])
    }
}

fn with_prev(conf: &Value, prev: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = prev.clone();
    c
}

fn must(out: CniOutput, what: &str) -> Value {
    assert!(out.ok(), "{what} failed: {} {}", out.stdout, out.stderr);
    if out.stdout.trim().is_empty() {
        Value::Null
    } else {
        out.json()
    }
}

fn link_json(ns: &NetNs, ifname: &str) -> Value {
    let out = ns.exec(&["ip", "-j", "-d", "link", "show", "dev", ifname]);
    let v: Value = serde_json::from_str(&out).expect("ip -j");
    v[0].clone()
}

fn routes(ns: &NetNs) -> String {
    ns.exec(&["ip", "route", "show"])
}

const POD: &str = "IgnoreUnknown=1;K8S_POD_NAMESPACE=db;K8S_POD_NAME=";

#[test]
fn veth_pods_get_address_mac_routes_and_reach_each_other() {
    require!(needs::NETNS, [needs::PING]);
    let node = Node::new();
    node.ctl(&[
        "subnet",
        "create",
        "data",
        "--cidr",
        "10.110.0.0/24",
        "--mtu",
        "1400",
        "--route",
        "10.96.0.0/12",
    ]);
    let conf = node.conf(
        "1.0.0",
        "data",
        "data",
        json!({"mode": "veth", "bridge": "ikbr1", "isGateway": true}),
    );
    let pods = [NetNs::new("ik-pod"), NetNs::new("ik-pod")];
    let mut results = vec![];
    for (i, pod) in pods.iter().enumerate() {
        let result = must(
            node.call(
                "ADD",
                pod,
                &format!("v{i}"),
                "eth0",
                &format!("{POD}web-{i}"),
                &conf,
            ),
            "veth ADD",
        );
        // The result lists the host end and the pod's interface, and the
        // address is on the pod's (index 1).
        let ifaces = result["interfaces"].as_array().expect("interfaces");
        assert_eq!(ifaces.len(), 2, "{result}");
        assert!(
            ifaces[0].get("sandbox").is_none(),
            "host end has no sandbox"
        );
        assert_eq!(ifaces[1]["name"], "eth0");
        assert_eq!(ifaces[1]["sandbox"], json!(pod.path()));
        assert_eq!(result["ips"][0]["interface"], 1);
        let cidr = result["ips"][0]["address"].as_str().expect("address");
        assert_eq!(pod.addresses("eth0"), vec![cidr.to_owned()]);
        // The MAC derives from the address: 0a:58 and the IPv4 octets.
        let link = link_json(pod, "eth0");
        let ip: std::net::Ipv4Addr = cidr.split('/').next().unwrap().parse().unwrap();
        let o = ip.octets();
        let want = format!("0a:58:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3]);
        assert_eq!(link["address"], json!(want));
        assert_eq!(ifaces[1]["mac"], json!(want));
        // The subnet's MTU, routes and a default route through the gateway.
        assert_eq!(link["mtu"], 1400);
        let table = routes(pod);
        assert!(table.contains("default via 10.110.0.1 dev eth0"), "{table}");
        assert!(
            table.contains("10.96.0.0/12 via 10.110.0.1 dev eth0"),
            "{table}"
        );
        // The host end is on the bridge.
        let host = ifaces[0]["name"].as_str().unwrap();
        assert_eq!(link_json(&node.ns, host)["master"], "ikbr1");
        results.push(result);
    }
    assert!(node
        .ns
        .addresses("ikbr1")
        .contains(&"10.110.0.1/24".to_string()));
    let addr = |r: &Value| {
        r["ips"][0]["address"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_owned()
    };
    assert!(
        pods[0].try_exec(&["ping", "-c", "1", "-W", "5", &addr(&results[1])]),
        "pod to pod"
    );
    assert!(
        node.ns
            .try_exec(&["ping", "-c", "1", "-W", "5", &addr(&results[0])]),
        "node to pod"
    );

    // CHECK passes on what ADD made; DEL removes both ends and the address.
    for (i, pod) in pods.iter().enumerate() {
        must(
            node.call(
                "CHECK",
                pod,
                &format!("v{i}"),
                "eth0",
                "",
                &with_prev(&conf, &results[i]),
            ),
            "CHECK",
        );
    }
    let host0 = results[0]["interfaces"][0]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    must(node.call("DEL", &pods[0], "v0", "eth0", "", &conf), "DEL");
    assert!(!pods[0].has_link("eth0"));
    assert!(
        !node.ns.has_link(&host0),
        "the host end went with the pod's"
    );
    assert_eq!(node.held().len(), 1);
    must(
        node.call("DEL", &pods[0], "v0", "eth0", "", &conf),
        "second DEL",
    );

    // DEL after the pod's namespace is gone still releases the address.
    let gone = pods[1].path();
    let [_, pod1] = pods;
    drop(pod1);
    let out = CniCall::ipkeep("DEL")
        .attachment("v1", "eth0", &gone)
        .stdin(&conf)
        .in_netns(&node.ns.name)
        .run();
    must(out, "DEL without the namespace");
    assert!(node.held().is_empty(), "{:?}", node.held());
}

#[test]
fn macvlan_pods_keep_their_mac_explicit_or_sticky() {
    require!(needs::NETNS);
    let node = Node::new();
    node.master("ikup0");
    node.ctl(&[
        "subnet",
        "create",
        "lan",
        "--cidr",
        "10.111.0.0/24",
        "--sticky",
    ]);
    let conf = node.conf(
        "0.4.0",
        "lan",
        "lan",
        json!({"mode": "macvlan", "master": "ikup0", "mtu": 1450,
               "capabilities": {"mac": true}}),
    );
    let pod = NetNs::new("ik-pod");
    // An explicit MAC through CNI_ARGS (as CRI-O passes it).
    let r = must(
        node.call(
            "ADD",
            &pod,
            "m1",
            "eth0",
            &format!("{POD}lic-0;MAC=02:aa:bb:cc:dd:01"),
            &conf,
        ),
        "macvlan ADD",
    );
    assert_eq!(r["interfaces"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["ips"][0]["interface"], 0);
    assert_eq!(
        r["ips"][0]["version"], "4",
        "0.4.0 results carry the family"
    );
    let link = link_json(&pod, "eth0");
    assert_eq!(link["address"], "02:aa:bb:cc:dd:01");
    assert_eq!(link["linkinfo"]["info_kind"], "macvlan");
    assert_eq!(link["linkinfo"]["info_data"]["mode"], "bridge");
    assert_eq!(link["mtu"], 1450, "the configuration's MTU");
    let first = r["ips"][0]["address"].as_str().unwrap().to_owned();
    must(node.call("DEL", &pod, "m1", "eth0", "", &conf), "DEL");
    assert!(!pod.has_link("eth0"));

    // The same pod name comes back (another container, no MAC asked): the
    // sticky binding gives it the same address and the same MAC.
    let pod2 = NetNs::new("ik-pod");
    let r = must(
        node.call("ADD", &pod2, "m2", "eth0", &format!("{POD}lic-0"), &conf),
        "ADD again",
    );
    assert_eq!(r["ips"][0]["address"], json!(first));
    assert_eq!(link_json(&pod2, "eth0")["address"], "02:aa:bb:cc:dd:01");
    let bindings = ctl(&node.daemon.socket(), &["binding", "list", "-o", "json"]).json();
    assert_eq!(bindings[0]["mac"], "02:aa:bb:cc:dd:01", "{bindings}");
    must(node.call("DEL", &pod2, "m2", "eth0", "", &conf), "DEL");

    // runtimeConfig mac (with the capability) sets a new one, kept from then on.
    let mut with_mac = conf.clone();
    with_mac["runtimeConfig"] = json!({"mac": "02:aa:bb:cc:dd:02"});
    let pod3 = NetNs::new("ik-pod");
    must(
        node.call(
            "ADD",
            &pod3,
            "m3",
            "eth0",
            &format!("{POD}lic-0"),
            &with_mac,
        ),
        "ADD with mac",
    );
    assert_eq!(link_json(&pod3, "eth0")["address"], "02:aa:bb:cc:dd:02");

    // A bad MAC is refused, naming where it came from.
    let out = node.call(
        "ADD",
        &pod,
        "m4",
        "eth0",
        &format!("{POD}x;MAC=01:00:5e:00:00:01"),
        &conf,
    );
    assert_eq!(out.error_code(), 4, "{}", out.stdout);
    assert!(
        out.error_text().contains("MAC") && out.error_text().contains("multicast"),
        "{}",
        out.error_text()
    );
}

#[test]
fn two_networks_on_one_pod_are_set_and_released_independently() {
    require!(needs::NETNS);
    let node = Node::new();
    node.master("ikup1");
    node.ctl(&["subnet", "create", "data", "--cidr", "10.112.0.0/24"]);
    node.ctl(&[
        "subnet",
        "create",
        "ctrl",
        "--cidr",
        "10.113.0.0/24",
        "--no-gateway",
    ]);
    let data = node.conf(
        "1.0.0",
        "data",
        "data",
        json!({"mode": "veth", "bridge": "ikbr2"}),
    );
    let ctrl = node.conf(
        "1.0.0",
        "ctrl",
        "ctrl",
        json!({"mode": "macvlan", "master": "ikup1"}),
    );
    let pod = NetNs::new("ik-pod");
    let a = must(
        node.call("ADD", &pod, "p1", "eth0", &format!("{POD}app-0"), &data),
        "data ADD",
    );
    let b = must(
        node.call("ADD", &pod, "p1", "net1", &format!("{POD}app-0"), &ctrl),
        "ctrl ADD",
    );
    assert!(a["ips"][0]["address"]
        .as_str()
        .unwrap()
        .starts_with("10.112.0."));
    assert!(b["ips"][0]["address"]
        .as_str()
        .unwrap()
        .starts_with("10.113.0."));
    // No gateway on ctrl: no default route through it.
    assert!(b.get("routes").is_none(), "{b}");
    let table = routes(&pod);
    assert_eq!(table.matches("default").count(), 1, "{table}");
    assert_eq!(node.held().len(), 2);

    must(node.call("DEL", &pod, "p1", "eth0", "", &data), "data DEL");
    assert!(!pod.has_link("eth0"));
    assert!(pod.has_link("net1"), "the other network's interface stays");
    assert_eq!(pod.addresses("net1").len(), 1);
    let left = node.held();
    assert_eq!(left.len(), 1);
    assert!(left[0].0.starts_with("10.113.0."), "{left:?}");
    must(
        node.call("CHECK", &pod, "p1", "net1", "", &with_prev(&ctrl, &b)),
        "ctrl CHECK",
    );
}

#[test]
fn check_says_what_differs() {
    require!(needs::NETNS);
    let node = Node::new();
    node.ctl(&["subnet", "create", "data", "--cidr", "10.114.0.0/24"]);
    let conf = node.conf(
        "1.0.0",
        "data",
        "data",
        json!({"mode": "veth", "bridge": "ikbr3"}),
    );
    let pod = NetNs::new("ik-pod");
    let r = must(node.call("ADD", &pod, "c1", "eth0", "", &conf), "ADD");
    let check = |what: &str| -> String {
        let out = node.call("CHECK", &pod, "c1", "eth0", "", &with_prev(&conf, &r));
        assert_eq!(out.error_code(), 105, "CHECK after {what}: {}", out.stdout);
        out.error_text()
    };
    pod.exec(&["ip", "addr", "add", "10.114.0.200/24", "dev", "eth0"]);
    assert!(check("an extra address").contains("10.114.0.200/24"));
    pod.exec(&["ip", "addr", "del", "10.114.0.200/24", "dev", "eth0"]);
    pod.exec(&["ip", "link", "set", "eth0", "address", "02:00:00:00:00:42"]);
    assert!(check("a new MAC").contains("02:00:00:00:00:42"));
    pod.exec(&["ip", "link", "del", "eth0"]);
    assert!(check("removing it").contains("does not exist"));
    // DEL with the interface already gone still releases.
    must(node.call("DEL", &pod, "c1", "eth0", "", &conf), "DEL");
    assert!(node.held().is_empty());
}

#[test]
fn a_failed_add_leaves_nothing_behind() {
    require!(needs::NETNS);
    let node = Node::new();
    node.ctl(&["subnet", "create", "data", "--cidr", "10.115.0.0/24"]);
    let pod = NetNs::new("ik-pod");
    // The pod already has an eth0 that is not ipkeep's.
    pod.exec(&[
        "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other0",
    ]);
    let conf = node.conf(
        "1.0.0",
        "data",
        "data",
        json!({"mode": "veth", "bridge": "ikbr4"}),
    );
    let out = node.call("ADD", &pod, "f1", "eth0", "", &conf);
    assert_eq!(out.error_code(), 113, "{}", out.stdout);
    assert!(out.error_text().contains("eth0"), "{}", out.error_text());
    assert!(
        node.held().is_empty(),
        "the address was released: {:?}",
        node.held()
    );
    let host = "ipk".to_string();
    let links = node.ns.exec(&["ip", "-o", "link"]);
    assert!(!links.contains(&host), "no host end left: {links}");
    assert!(pod.has_link("other0"), "what was there stays");

    // macvlan on a master the node does not have.
    let conf = node.conf(
        "1.0.0",
        "data",
        "data",
        json!({"mode": "macvlan", "master": "nosuch0"}),
    );
    let out = node.call("ADD", &pod, "f2", "net1", "", &conf);
    assert_eq!(out.error_code(), 113);
    assert!(out.error_text().contains("master") && out.error_text().contains("nosuch0"));
    assert!(node.held().is_empty());
    assert!(!pod.has_link("net1"));

    // A bad mode names the field.
    let conf = node.conf("1.0.0", "data", "data", json!({"mode": "ipvlan"}));
    let out = node.call("ADD", &pod, "f3", "net1", "", &conf);
    assert_eq!(out.error_code(), 7);
    assert!(out.error_text().contains("mode"), "{}", out.error_text());
}

/// Dual stack main-plugin mode in a chain. CHECK leaves portmap out:
/// Debian's portmap 1.1.1 fails its own CHECK, looking for its IPv4 rules in
/// the IPv6 table (and with IPv4 only, for an IPv6 chain it never made:
/// containernetworking/plugins#819).
#[test]
fn chains_with_tuning_portmap_and_bandwidth() {
    require!(
        needs::NETNS,
        [needs::PING, needs::REFERENCE_PLUGINS, needs::IPTABLES]
    );
    let node = Node::new();
    node.ctl(&["subnet", "create", "data4", "--cidr", "10.116.0.0/24"]);
    node.ctl(&["subnet", "create", "data6", "--cidr", "fd00:116::/64"]);
    let mut ipkeep = node.conf(
        "1.0.0",
        "chain",
        "data4",
        json!({"mode": "veth", "bridge": "ikbr5", "isGateway": true}),
    );
    let ipam = ipkeep["ipam"].as_object_mut().unwrap();
    ipam.remove("subnet");
    ipam.insert("subnets".into(), json!(["data4", "data6"]));
    let obj = ipkeep.as_object_mut().unwrap();
    obj.remove("cniVersion");
    obj.remove("name");
    let list = Conflist::new(json!({
        "cniVersion": "1.0.0", "name": "chain",
        "plugins": [
            ipkeep,
            {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.arp_notify": "1"}},
            {"type": "portmap", "capabilities": {"portMappings": true}},
            {"type": "bandwidth", "capabilities": {"bandwidth": true}},
        ],
    }));
    let pod = NetNs::new("ik-pod");
    let mut caps = Map::new();
    caps.insert(
        "portMappings".into(),
        json!([{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]),
    );
    caps.insert(
        "bandwidth".into(),
        json!({"ingressRate": 8000000, "ingressBurst": 80000,
               "egressRate": 8000000, "egressBurst": 80000}),
    );
    let at = Attachment {
        container_id: "chain1".into(),
        ifname: "eth0".into(),
        netns: pod.path(),
        cni_args: format!("{POD}web-0"),
        capability_args: caps,
        node_netns: node.ns.name.clone(),
    };
    let result = list
        .add(&at)
        .unwrap_or_else(|f| panic!("{} failed in the chain: {:?}", f.plugin, f.output));
    // ipkeep's result came through every plugin: both families on the pod's
    // interface, default routes for both.
    let ips = result["ips"].as_array().expect("ips");
    assert_eq!(ips.len(), 2, "{result}");
    let mut on_pod = pod.addresses("eth0");
    on_pod.sort();
    let mut given: Vec<String> = ips
        .iter()
        .map(|ip| {
            assert_eq!(ip["interface"], 1, "{result}");
            ip["address"].as_str().unwrap().to_owned()
        })
        .collect();
    given.sort();
    assert_eq!(on_pod, given);
    let v6_routes = pod.exec(&["ip", "-6", "route", "show"]);
    assert!(
        v6_routes.contains("default via fd00:116::1 dev eth0"),
        "{v6_routes}"
    );
    assert_eq!(
        pod.exec(&["cat", "/proc/sys/net/ipv4/conf/eth0/arp_notify"])
            .trim(),
        "1",
        "tuning ran on ipkeep's interface"
    );
    let nat = node.ns.exec(&["iptables", "-t", "nat", "-S"]);
    assert!(nat.contains("18080"), "portmap made its DNAT rule: {nat}");
    let host = result["interfaces"][0]["name"].as_str().unwrap();
    let qdisc = node.ns.exec(&["tc", "qdisc", "show", "dev", host]);
    assert!(
        qdisc.contains("tbf"),
        "bandwidth shaped ipkeep's host end: {qdisc}"
    );

    list.check(&at, &result, &["portmap"])
        .unwrap_or_else(|f| panic!("{} CHECK failed: {:?}", f.plugin, f.output));
    list.del(&at, Some(&result))
        .unwrap_or_else(|f| panic!("{} DEL failed: {:?}", f.plugin, f.output));
    assert!(!pod.has_link("eth0"));
    assert!(!node.ns.has_link(host));
    assert!(!node
        .ns
        .exec(&["iptables", "-t", "nat", "-S"])
        .contains("18080"));
    assert!(node.held().is_empty());
}
