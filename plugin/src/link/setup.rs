//! Making, removing and reading a pod's interface.

use std::net::IpAddr;

use ipkeep_api::Mac;
use ipnet::IpNet;
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth, MacVlanMode};
use rtnetlink::{Handle, LinkBridge, LinkMacVlan, LinkMessageBuilder, LinkUnspec, LinkVeth};

use super::netns::{run, NetnsFile};
use super::ops::{self, exists_error, LinkState};
use super::LinkError;

/// How the pod's interface reaches the outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// A macvlan in bridge mode on `master`.
    Macvlan { master: String },
    /// A veth pair; the host end is attached to `bridge` (made if missing),
    /// which gets the subnets' gateway addresses when `is_gateway`.
    Veth { bridge: String, is_gateway: bool },
}

/// A route as set in the pod (and listed in the result).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRoute {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
}

/// Everything needed to make one pod interface.
#[derive(Debug, Clone)]
pub struct Plan {
    pub mode: Mode,
    pub ifname: String,
    /// The host end's name (veth mode).
    pub host_name: String,
    pub mac: Mac,
    pub mtu: Option<u32>,
    pub addresses: Vec<IpNet>,
    /// The subnets' gateways with their prefix: put on the bridge when it is the gateway.
    pub gateways: Vec<IpNet>,
    pub routes: Vec<PlannedRoute>,
}

/// Makes the interface and configures it in the pod's namespace; answers the
/// host end's MAC (veth mode). On any failure, whatever it had made is
/// removed again before the error returns.
pub fn create(netns: &NetnsFile, plan: &Plan) -> Result<Option<Mac>, LinkError> {
    let host = run(None, |handle| async move {
        host_side(&handle, netns, plan).await
    })?;
    let inside = run(Some(netns), |handle| async move {
        let outcome = pod_side(&handle, plan).await;
        if outcome.is_err() {
            // Deleting the pod end of a veth takes the host end with it.
            if let Err(e) = ops::delete(&handle, &plan.ifname).await {
                tracing::warn!(error = %e, "cleanup after a failed ADD");
            }
        }
        outcome
    });
    if let Err(e) = inside {
        if matches!(plan.mode, Mode::Veth { .. }) {
            let name = plan.host_name.clone();
            let _ = run(
                None,
                |handle| async move { ops::delete(&handle, &name).await },
            );
        }
        return Err(e);
    }
    Ok(host)
}

/// Creates the link with its pod end already in the pod's namespace, named
/// CNI_IFNAME there: nothing of the pod's ever appears in the host's namespace.
async fn host_side(
    handle: &Handle,
    netns: &NetnsFile,
    plan: &Plan,
) -> Result<Option<Mac>, LinkError> {
    let exists = |e: &rtnetlink::Error, name: &str| {
        if exists_error(e) {
            LinkError::new(format!(
                "an interface named {name} already exists; CNI ADD makes a new one"
            ))
        } else {
            LinkError::new(format!("cannot create {name}: {e}"))
        }
    };
    match &plan.mode {
        Mode::Macvlan { master } => {
            let Some(master_link) = ops::find(handle, master).await? else {
                return Err(LinkError::new(format!(
                    "master: there is no link named {master} on this node"
                )));
            };
            let mut builder =
                LinkMacVlan::new(&plan.ifname, master_link.index, MacVlanMode::Bridge)
                    .address(plan.mac.octets().to_vec())
                    .setns_by_fd(netns.fd());
            if let Some(mtu) = plan.mtu {
                builder = builder.mtu(mtu);
            }
            handle
                .link()
                .add(builder.build())
                .execute()
                .await
                .map_err(|e| exists(&e, &format!("{} in {}", plan.ifname, netns.path)))?;
            Ok(None)
        }
        Mode::Veth { bridge, is_gateway } => {
            let bridge_link = ensure_bridge(handle, bridge, plan.mtu).await?;
            if *is_gateway {
                for gw in &plan.gateways {
                    ops::add_address(handle, bridge_link.index, *gw, true).await?;
                }
            }
            let mut peer = LinkMessageBuilder::<LinkUnspec>::new()
                .name(plan.ifname.clone())
                .address(plan.mac.octets().to_vec())
                .setns_by_fd(netns.fd());
            let mut host = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
                .name(plan.host_name.clone());
            if let Some(mtu) = plan.mtu {
                peer = peer.mtu(mtu);
                host = host.mtu(mtu);
            }
            let message = host
                .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
                .build();
            handle.link().add(message).execute().await.map_err(|e| {
                exists(
                    &e,
                    &format!(
                        "{} (host) or {} (in {})",
                        plan.host_name, plan.ifname, netns.path
                    ),
                )
            })?;
            let attach = async {
                let host_link = ops::find(handle, &plan.host_name).await?.ok_or_else(|| {
                    LinkError::new(format!("{} vanished after it was made", plan.host_name))
                })?;
                handle
                    .link()
                    .set(
                        LinkUnspec::new_with_index(host_link.index)
                            .controller(bridge_link.index)
                            .up()
                            .build(),
                    )
                    .execute()
                    .await
                    .map_err(|e| {
                        LinkError::new(format!(
                            "cannot attach {} to bridge {bridge}: {e}",
                            plan.host_name
                        ))
                    })?;
                Ok::<_, LinkError>(host_link.mac)
            };
            match attach.await {
                Ok(mac) => Ok(mac),
                Err(e) => {
                    let _ = ops::delete(handle, &plan.host_name).await;
                    Err(e)
                }
            }
        }
    }
}

/// The bridge, made and set up if it is not there (another plugin run may
/// make it at the same moment: that is fine).
async fn ensure_bridge(
    handle: &Handle,
    name: &str,
    mtu: Option<u32>,
) -> Result<LinkState, LinkError> {
    if ops::find(handle, name).await?.is_none() {
        let mut builder = LinkBridge::new(name);
        if let Some(mtu) = mtu {
            builder = builder.mtu(mtu);
        }
        if let Err(e) = handle.link().add(builder.build()).execute().await {
            if !exists_error(&e) {
                return Err(LinkError::new(format!("cannot create bridge {name}: {e}")));
            }
        }
    }
    let link = ops::find(handle, name)
        .await?
        .ok_or_else(|| LinkError::new(format!("bridge {name} vanished after it was made")))?;
    if link.kind.as_deref() != Some("bridge") {
        return Err(LinkError::new(format!(
            "bridge: {name} exists but is a {} link, not a bridge",
            link.kind.as_deref().unwrap_or("plain")
        )));
    }
    ops::set_up(handle, link.index, name).await?;
    Ok(link)
}

async fn pod_side(handle: &Handle, plan: &Plan) -> Result<(), LinkError> {
    let link = ops::find(handle, &plan.ifname).await?.ok_or_else(|| {
        LinkError::new(format!(
            "{} is not in the pod's namespace after it was made",
            plan.ifname
        ))
    })?;
    if plan.addresses.iter().any(|a| a.addr().is_ipv6()) {
        ops::disable_dad(&plan.ifname);
    }
    for address in &plan.addresses {
        ops::add_address(handle, link.index, *address, false).await?;
    }
    ops::set_up(handle, link.index, &plan.ifname).await?;
    for route in &plan.routes {
        ops::add_route(handle, link.index, route.dst, route.gw).await?;
    }
    Ok(())
}

/// Removes the pod's interface (and with a veth, its host end); false when
/// there was nothing to remove.
pub fn remove(netns: Option<&NetnsFile>, ifname: &str, host_name: &str) -> Result<bool, LinkError> {
    let mut removed = false;
    if let Some(ns) = netns {
        let name = ifname.to_owned();
        removed = run(Some(ns), |handle| async move {
            ops::delete(&handle, &name).await
        })?;
    }
    // A veth whose pod end went with its namespace is gone already; one left
    // behind by an interrupted ADD is not.
    let host = host_name.to_owned();
    removed |= run(None, |handle| async move {
        match ops::find(&handle, &host).await? {
            Some(link) if link.kind.as_deref() == Some("veth") => ops::delete(&handle, &host).await,
            _ => Ok(false),
        }
    })?;
    Ok(removed)
}

/// What the pod's interface looks like now.
#[derive(Debug, Clone)]
pub struct Observed {
    pub mac: Option<Mac>,
    pub kind: Option<String>,
    pub mtu: Option<u32>,
    pub addresses: Vec<IpNet>,
}

pub fn inspect(netns: &NetnsFile, ifname: &str) -> Result<Option<Observed>, LinkError> {
    let name = ifname.to_owned();
    run(Some(netns), |handle| async move {
        let Some(link) = ops::find(&handle, &name).await? else {
            return Ok(None);
        };
        Ok(Some(Observed {
            mac: link.mac,
            kind: link.kind,
            mtu: link.mtu,
            addresses: ops::addresses(&handle, link.index).await?,
        }))
    })
}
