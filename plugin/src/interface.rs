//! Main-plugin mode: ipkeep makes the pod's interface itself, with the
//! address, routes and MAC the cluster decided.
//!
//! ADD asks the daemon first (the decision), then makes the interface; a
//! failure after the decision removes what was made and releases the
//! address. DEL removes the interface, then releases the address: an
//! address is never handed out again while an interface still carries it.

use ipkeep_api::message::{AddResult, MacWish};
use ipkeep_api::{code, Mac};
use ipnet::IpNet;

use crate::ask::{ask_add, ask_check, ask_del};
use crate::config::{LinkSettings, Settings};
use crate::env::CniEnv;
use crate::error::PluginError;
use crate::link::{self, LinkError, Mode, NetnsFile, Plan, PlannedRoute};
use crate::result::{full_result, Interface, Output};

fn interface_error(e: LinkError) -> PluginError {
    PluginError::new(code::INTERFACE, "cannot set up the pod's interface", e.0)
}

fn open_netns(env: &CniEnv) -> Result<NetnsFile, PluginError> {
    NetnsFile::open(&env.netns)
        .map_err(interface_error)?
        .ok_or_else(|| {
            PluginError::new(
                code::UNKNOWN_CONTAINER,
                "the pod's network namespace does not exist",
                format!("CNI_NETNS: {} does not exist", env.netns),
            )
        })
}

/// The routes set in the pod: the subnets' and the configuration's, each via
/// its own next hop or its family's gateway, and a default route through the
/// gateway of each family that has one, unless a route already covers it.
pub fn plan_routes(result: &AddResult, extra: &[ipkeep_api::model::Route]) -> Vec<PlannedRoute> {
    let gateway = |v4: bool| {
        result
            .ips
            .iter()
            .filter(|ip| ip.address.addr().is_ipv4() == v4)
            .find_map(|ip| ip.gateway)
    };
    let mut routes: Vec<PlannedRoute> = Vec::new();
    for r in result.routes.iter().chain(extra) {
        let planned = PlannedRoute {
            dst: r.dst,
            gw: r.gw.or_else(|| gateway(r.dst.addr().is_ipv4())),
        };
        if !routes.iter().any(|p| p.dst == planned.dst) {
            routes.push(planned);
        }
    }
    for v4 in [true, false] {
        let Some(gw) = gateway(v4) else { continue };
        let default: IpNet = if v4 {
            "0.0.0.0/0".parse().expect("literal")
        } else {
            "::/0".parse().expect("literal")
        };
        if !routes.iter().any(|p| p.dst == default) {
            routes.push(PlannedRoute {
                dst: default,
                gw: Some(gw),
            });
        }
    }
    routes
}

fn plan(env: &CniEnv, link: &LinkSettings, result: &AddResult, mac: Mac) -> Plan {
    Plan {
        mode: link.mode.clone(),
        ifname: env.ifname.clone(),
        host_name: link::host_veth_name(&env.container_id, &env.ifname),
        mac,
        mtu: link.mtu.or(result.mtu),
        addresses: result.ips.iter().map(|ip| ip.address).collect(),
        gateways: result
            .ips
            .iter()
            .filter_map(|ip| {
                ip.gateway
                    .and_then(|gw| IpNet::new(gw, ip.address.prefix_len()).ok())
            })
            .collect(),
        routes: plan_routes(result, &link.routes),
    }
}

fn interfaces(env: &CniEnv, plan: &Plan, host_mac: Option<Mac>) -> (Vec<Interface>, usize) {
    let pod = Interface {
        name: env.ifname.clone(),
        mac: Some(plan.mac),
        sandbox: Some(env.netns.clone()),
    };
    match plan.mode {
        Mode::Macvlan { .. } => (vec![pod], 0),
        Mode::Veth { .. } => (
            vec![
                Interface {
                    name: plan.host_name.clone(),
                    mac: host_mac,
                    sandbox: None,
                },
                pod,
            ],
            1,
        ),
    }
}

pub fn add(env: &CniEnv, settings: &Settings, link: &LinkSettings) -> Result<Output, PluginError> {
    let netns = open_netns(env)?;
    let wish = match settings.mac.or(env.args.mac) {
        Some(mac) => MacWish::Exactly(mac),
        None => MacWish::Any,
    };
    let result = ask_add(env, settings, wish)?;
    let Some(mac) = result.mac else {
        let _ = ask_del(env, settings);
        return Err(PluginError::new(
            code::PROTOCOL,
            "the daemon answered no MAC",
            "ipkeepd is older than this plugin; upgrade it",
        ));
    };
    let plan = plan(env, link, &result, mac);
    let answer = |host_mac| {
        let (ifaces, index) = interfaces(env, &plan, host_mac);
        Output::Json(full_result(
            &settings.cni_version,
            &result,
            &ifaces,
            index,
            &plan.routes,
        ))
    };

    // An ADD retried after it had made the interface: the same answer.
    match link::inspect(&netns, &env.ifname) {
        Ok(Some(seen)) => {
            if seen.mac == Some(mac) && plan.addresses.iter().all(|a| seen.addresses.contains(a)) {
                tracing::info!(ifname = %env.ifname, "interface already made by an earlier ADD");
                return Ok(answer(None));
            }
            let _ = ask_del(env, settings);
            return Err(interface_error(LinkError::new(format!(
                "CNI_IFNAME: {} already exists in {} and is not this attachment's",
                env.ifname, env.netns
            ))));
        }
        Ok(None) => {}
        Err(e) => {
            let _ = ask_del(env, settings);
            return Err(interface_error(e));
        }
    }

    match link::create(&netns, &plan) {
        Ok(host_mac) => {
            tracing::info!(ifname = %env.ifname, %mac, "interface made");
            Ok(answer(host_mac))
        }
        Err(e) => {
            // A failed ADD leaves nothing behind: the interface is gone
            // (create cleans up after itself), and so is the address.
            if let Err(release) = ask_del(env, settings) {
                tracing::warn!(error = %release, "cannot release the address of a failed ADD");
            }
            Err(interface_error(e))
        }
    }
}

pub fn del(env: &CniEnv, settings: &Settings, _link: &LinkSettings) -> Result<Output, PluginError> {
    // DEL must work when the namespace is already gone (CNI_NETNS may be
    // empty or point nowhere): the interface went with it.
    let netns = NetnsFile::open(&env.netns).map_err(interface_error)?;
    let host_name = link::host_veth_name(&env.container_id, &env.ifname);
    let removed = link::remove(netns.as_ref(), &env.ifname, &host_name).map_err(interface_error)?;
    tracing::info!(ifname = %env.ifname, removed, "interface removed");
    ask_del(env, settings)?;
    Ok(Output::Nothing)
}

fn mismatch(env: &CniEnv, what: String) -> PluginError {
    PluginError::new(
        code::CHECK_FAILED,
        "the pod's interface is not as ipkeep made it",
        format!("{} in {}: {what}", env.ifname, env.netns),
    )
}

pub fn check(
    env: &CniEnv,
    settings: &Settings,
    link: &LinkSettings,
) -> Result<Output, PluginError> {
    let held = ask_check(env, settings)?;
    let netns = open_netns(env)?;
    let Some(seen) = link::inspect(&netns, &env.ifname).map_err(interface_error)? else {
        return Err(mismatch(env, "the interface does not exist".into()));
    };
    let kind = match link.mode {
        Mode::Macvlan { .. } => "macvlan",
        Mode::Veth { .. } => "veth",
    };
    if seen.kind.as_deref() != Some(kind) {
        return Err(mismatch(
            env,
            format!(
                "it is a {} link, the configuration makes {kind}",
                seen.kind.as_deref().unwrap_or("plain")
            ),
        ));
    }
    if let Some(mac) = held.mac {
        if seen.mac != Some(mac) {
            let shown = seen
                .mac
                .map(|m| m.to_string())
                .unwrap_or_else(|| "none".into());
            return Err(mismatch(
                env,
                format!("its MAC is {shown}, ipkeep gave it {mac}"),
            ));
        }
    }
    for ip in &held.ips {
        if !seen.addresses.contains(&ip.address) {
            let shown: Vec<String> = seen.addresses.iter().map(IpNet::to_string).collect();
            return Err(mismatch(
                env,
                format!(
                    "it lacks {} (it has {})",
                    ip.address,
                    if shown.is_empty() {
                        "none".into()
                    } else {
                        shown.join(", ")
                    }
                ),
            ));
        }
    }
    let extra: Vec<&IpNet> = seen
        .addresses
        .iter()
        .filter(|a| !held.ips.iter().any(|ip| ip.address == **a))
        .collect();
    if let Some(a) = extra.first() {
        return Err(mismatch(
            env,
            format!("it carries {a}, which ipkeep did not give it"),
        ));
    }
    if let (Some(want), Some(have)) = (link.mtu.or(held.mtu), seen.mtu) {
        if want != have {
            return Err(mismatch(
                env,
                format!("its MTU is {have}, the configuration says {want}"),
            ));
        }
    }
    Ok(Output::Nothing)
}
