//! Single netlink requests, each with an error that says what failed.

use std::net::IpAddr;

use futures_util::TryStreamExt;
use ipkeep_api::Mac;
use ipnet::IpNet;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{LinkAttribute, LinkInfo};
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

use super::LinkError;

const ENODEV: i32 = libc::ENODEV;
const EEXIST: i32 = libc::EEXIST;

/// The errno of a netlink error, if it is one.
pub fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

pub fn exists_error(e: &rtnetlink::Error) -> bool {
    errno(e) == Some(EEXIST)
}

fn failed(what: impl std::fmt::Display, e: rtnetlink::Error) -> LinkError {
    let reason = match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io().to_string(),
        other => other.to_string(),
    };
    LinkError::new(format!("{what}: {reason}"))
}

/// What ipkeep reads back about a link.
#[derive(Debug, Clone)]
pub struct LinkState {
    pub index: u32,
    pub mac: Option<Mac>,
    /// "veth", "macvlan", "bridge", ...
    pub kind: Option<String>,
    pub mtu: Option<u32>,
    /// The bridge it is attached to.
    pub controller: Option<u32>,
}

pub async fn find(handle: &Handle, name: &str) -> Result<Option<LinkState>, LinkError> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    let message = match links.try_next().await {
        Ok(Some(m)) => m,
        Ok(None) => return Ok(None),
        Err(e) if errno(&e) == Some(ENODEV) => return Ok(None),
        Err(e) => return Err(failed(format!("cannot look up link {name}"), e)),
    };
    let mut state = LinkState {
        index: message.header.index,
        mac: None,
        kind: None,
        mtu: None,
        controller: None,
    };
    for attr in message.attributes {
        match attr {
            LinkAttribute::Address(bytes) => {
                state.mac = <[u8; 6]>::try_from(bytes.as_slice()).ok().map(Mac)
            }
            LinkAttribute::Mtu(mtu) => state.mtu = Some(mtu),
            LinkAttribute::Controller(index) => state.controller = Some(index),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(kind) = info {
                        state.kind = Some(kind.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    Ok(Some(state))
}

/// Deletes a link; false when it was already gone.
pub async fn delete(handle: &Handle, name: &str) -> Result<bool, LinkError> {
    let Some(link) = find(handle, name).await? else {
        return Ok(false);
    };
    match handle.link().del(link.index).execute().await {
        Ok(()) => Ok(true),
        Err(e) if errno(&e) == Some(ENODEV) => Ok(false),
        Err(e) => Err(failed(format!("cannot delete link {name}"), e)),
    }
}

pub async fn set_up(handle: &Handle, index: u32, name: &str) -> Result<(), LinkError> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(|e| failed(format!("cannot set link {name} up"), e))
}

/// Global addresses on a link, with their prefix length.
pub async fn addresses(handle: &Handle, index: u32) -> Result<Vec<IpNet>, LinkError> {
    let mut stream = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    let mut out = Vec::new();
    while let Some(message) = stream
        .try_next()
        .await
        .map_err(|e| failed("cannot list addresses", e))?
    {
        let prefix = message.header.prefix_len;
        let mut found = None;
        for attr in &message.attributes {
            match attr {
                // IFA_LOCAL is the address itself on IPv4; IPv6 has only IFA_ADDRESS.
                AddressAttribute::Local(a) => found = Some(*a),
                AddressAttribute::Address(a) if found.is_none() => found = Some(*a),
                _ => {}
            }
        }
        if let Some(addr) = found {
            let link_local = match addr {
                IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
                IpAddr::V4(v4) => v4.is_link_local(),
            };
            if !link_local {
                if let Ok(net) = IpNet::new(addr, prefix) {
                    out.push(net);
                }
            }
        }
    }
    Ok(out)
}

/// Adds an address; one already there is fine when `may_exist`.
pub async fn add_address(
    handle: &Handle,
    index: u32,
    address: IpNet,
    may_exist: bool,
) -> Result<(), LinkError> {
    match handle
        .address()
        .add(index, address.addr(), address.prefix_len())
        .execute()
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if may_exist && exists_error(&e) => Ok(()),
        Err(e) => Err(failed(format!("cannot add address {address}"), e)),
    }
}

/// A route through the link, via `gw` when given.
pub async fn add_route(
    handle: &Handle,
    index: u32,
    dst: IpNet,
    gw: Option<IpAddr>,
) -> Result<(), LinkError> {
    let shown = match gw {
        Some(gw) => format!("cannot add route {dst} via {gw}"),
        None => format!("cannot add route {dst}"),
    };
    let mut builder = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(dst.network(), dst.prefix_len())
        .map_err(|e| LinkError::new(format!("{shown}: {e:?}")))?
        .output_interface(index);
    if let Some(gw) = gw {
        builder = builder
            .gateway(gw)
            .map_err(|e| LinkError::new(format!("{shown}: {e:?}")))?;
    }
    match handle.route().add(builder.build()).execute().await {
        Ok(()) => Ok(()),
        // The kernel already made it (the connected route of an address).
        Err(e) if exists_error(&e) => Ok(()),
        Err(e) => Err(failed(shown, e)),
    }
}

/// IPv6 duplicate address detection would hold a fresh pod's addresses
/// "tentative" for a second or more; ipkeep already guarantees uniqueness.
/// /proc/sys/net is the namespace of the thread that opens it.
pub fn disable_dad(ifname: &str) {
    let path = format!("/proc/sys/net/ipv6/conf/{ifname}/accept_dad");
    if let Err(e) = std::fs::write(&path, "0") {
        tracing::debug!(path, error = %e, "cannot turn off DAD (IPv6 disabled?)");
    }
}
