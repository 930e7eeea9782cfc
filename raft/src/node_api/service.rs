//! The node API: one function per request, from a decoded request to the
//! response. Writes are proposed through Raft; reads come from this node's
//! replica.

use ipkeep_api::message::{
    AddRequest, AddressHistory, CheckRequest, DelRequest, ForgetResult, GcRequest, IpListRequest,
    ReadyRequest, Request, Response, Timing,
};
use ipkeep_api::{code, fields, ApiError};
use ipkeep_store::storage::backup;
use ipkeep_store::subnet::settle;
use ipkeep_store::{Command, Reply};

use crate::cluster::node::{now_ms, now_us, Node};
use crate::peer::wire::MembershipChange;

async fn member_add(node: &Node, id: u64, addr: String) -> Result<Response, ApiError> {
    if id == 0 {
        return Err(ApiError::invalid("id", "node ids start at 1"));
    }
    addr.parse::<std::net::SocketAddr>().map_err(|_| {
        ApiError::invalid(
            "addr",
            format!("{addr:?} is not IP:PORT (the node's --listen address)"),
        )
    })?;
    node.change_membership(MembershipChange::AddLearner { id, addr })
        .await
        .map(|_| Response::Members(node.members()))
}

pub async fn handle(node: &Node, request: Request) -> Response {
    if let Request::Linearize(inner) = request {
        if matches!(*inner, Request::Linearize(_)) {
            return Response::Error(ApiError::invalid("request", "Linearize cannot be nested"));
        }
        return match node.read_barrier().await {
            Ok(()) => Box::pin(handle(node, *inner)).await,
            Err(e) => Response::Error(e),
        };
    }
    let outcome = match request {
        Request::Linearize(_) => unreachable!("handled above"),
        Request::MemberList => Ok(Response::Members(node.members())),
        Request::MemberAdd { id, addr } => member_add(node, id, addr).await,
        Request::MemberPromote { id } => node
            .change_membership(MembershipChange::Promote { id })
            .await
            .map(|_| Response::Members(node.members())),
        Request::MemberRemove { id } => node
            .change_membership(MembershipChange::Remove { id })
            .await
            .map(|_| Response::Members(node.members())),
        Request::IpLeaks => {
            crate::jobs::reconciler::pass(node, now_ms());
            Ok(Response::Leaks(node.leaks.report(&node.name)))
        }
        Request::NodeForget {
            name,
            member,
            force,
        } => forget(node, name, member, force).await,
        Request::Add(req) => add(node, req).await,
        Request::Del(req) => del(node, req).await,
        Request::Check(req) => check(node, req),
        Request::Gc(req) => gc(node, req).await,
        Request::Ready(req) => ready(node, req).await,
        Request::NodeStatus => Ok(Response::NodeStatus(node.status())),
        Request::ClusterStatus => Ok(Response::ClusterStatus(node.cluster_status().await)),
        Request::SnapshotSave => {
            let bytes = backup::encode(&node.machine.read());
            tracing::info!(bytes = bytes.len(), "backup taken");
            Ok(Response::Backup(bytes))
        }
        Request::SubnetCreate(spec) => {
            // Settled here too, so a bad spec is refused before it reaches the log.
            match settle(&spec) {
                Err(e) => Err(e),
                Ok(_) => propose(node, Command::CreateSubnet { spec }).await,
            }
        }
        Request::SubnetUpdate { name, update } => {
            propose(node, Command::UpdateSubnet { name, update }).await
        }
        Request::IpHistory { address } => {
            let m = node.machine.read();
            Ok(Response::History(AddressHistory {
                address,
                current: m.state.ip_entry(address),
                past: m.state.history_of(address),
            }))
        }
        Request::IpReserve { range, note } => {
            propose(
                node,
                Command::Reserve {
                    range,
                    note,
                    at_ms: 0,
                },
            )
            .await
        }
        Request::IpUnreserve { range } => propose(node, Command::Unreserve { range }).await,
        Request::IpReservations => Ok(Response::Reservations(
            node.machine.read().state.reservations().cloned().collect(),
        )),
        Request::PoolCreate(request) => propose(node, Command::CreatePool { request }).await,
        Request::PoolList => {
            let m = node.machine.read();
            Ok(Response::Pools(
                m.state
                    .pools()
                    .filter_map(|p| m.state.pool_info(p.name()))
                    .collect(),
            ))
        }
        Request::PoolShow { name } => node
            .machine
            .read()
            .state
            .pool_info(&name)
            .map(Response::Pool)
            .ok_or_else(|| ApiError::not_found(format!("no pool named {name}"))),
        Request::PoolDelete { name } => propose(node, Command::DeletePool { name }).await,
        Request::PoolResize { name, addresses } => {
            propose(node, Command::ResizePool { name, addresses }).await
        }
        Request::BindingList { namespace } => Ok(Response::Bindings(
            node.machine
                .read()
                .state
                .bindings()
                .filter(|b| namespace.as_ref().is_none_or(|ns| *ns == b.namespace))
                .cloned()
                .collect(),
        )),
        Request::BindingRelease { namespace, name } => {
            propose(node, Command::ReleaseBinding { namespace, name }).await
        }
        Request::SubnetList => {
            let m = node.machine.read();
            let names: Vec<String> = m.state.subnets().map(|s| s.name().to_owned()).collect();
            Ok(Response::Subnets(
                names
                    .iter()
                    .filter_map(|n| m.state.subnet_info(n))
                    .collect(),
            ))
        }
        Request::SubnetShow { name } => node
            .machine
            .read()
            .state
            .subnet_info(&name)
            .map(Response::Subnet)
            .ok_or_else(|| ApiError::not_found(format!("no subnet named {name}"))),
        Request::SubnetDelete { name } => node
            .propose(Command::DeleteSubnet { name })
            .await
            .map(|_| Response::SubnetDeleted),
        Request::IpList(req) => Ok(ip_list(node, &req)),
        Request::StateDigest => {
            let machine = node.machine.read();
            let applied = machine.last_applied.map(|l| l.index);
            Ok(Response::Digest(machine.state.digest(applied)))
        }
    };
    outcome.unwrap_or_else(Response::Error)
}

/// Commits an admin command and turns its reply into the response.
async fn propose(node: &Node, command: Command) -> Result<Response, ApiError> {
    match node.propose(command).await? {
        Reply::Subnet(info) => Ok(Response::Subnet(info)),
        Reply::Pool(info) => Ok(Response::Pool(info)),
        Reply::Done => Ok(Response::Done),
        other => Err(unexpected(other)),
    }
}

fn unexpected(reply: Reply) -> ApiError {
    ApiError::internal(format!(
        "unexpected reply from the state machine: {reply:?}"
    ))
}

/// When the caller issued its request: its own stamp if plausible (it runs
/// on this node, with this clock), else now. Refuses a request whose caller
/// stopped waiting before this daemon could read it (it sat in the socket
/// while the daemon was paused or overloaded): starting it now could only
/// undo what the caller did since.
fn issued(timing: &Timing) -> Result<u64, ApiError> {
    let now = now_us();
    if timing.deadline_us != 0 && now > timing.deadline_us {
        return Err(ApiError::try_again(format!(
            "the caller stopped waiting {} ms before ipkeepd read its request",
            (now - timing.deadline_us) / 1000
        )));
    }
    // A stamp from the future (a broken clock) is not trusted.
    Ok(match timing.issued_us {
        0 => now,
        t if t > now + 1_000_000 => now,
        t => t,
    })
}

async fn add(node: &Node, request: AddRequest) -> Result<Response, ApiError> {
    fields::check_add(&request)?;
    let issued_us = issued(&request.timing)?;
    let command = Command::Add {
        request,
        node: node.name.clone(),
        at_ms: now_ms(),
        issued_us,
    };
    match node.propose(command).await? {
        Reply::Added(result) => Ok(Response::Added(result)),
        other => Err(unexpected(other)),
    }
}

async fn del(node: &Node, request: DelRequest) -> Result<Response, ApiError> {
    fields::check_key(&request.key)?;
    let command = Command::Del {
        key: request.key,
        at_ms: 0,
        issued_us: issued(&request.timing)?,
    };
    match node.propose(command).await? {
        Reply::Deleted(result) => Ok(Response::Deleted(result)),
        other => Err(unexpected(other)),
    }
}

fn check(node: &Node, request: CheckRequest) -> Result<Response, ApiError> {
    fields::check_key(&request.key)?;
    let held = node.machine.read().state.check(&request)?;
    Ok(Response::Checked(held))
}

async fn gc(node: &Node, request: GcRequest) -> Result<Response, ApiError> {
    fields::check_gc(&request)?;
    let command = Command::Gc {
        network: request.network,
        node: node.name.clone(),
        valid: request.valid,
        at_ms: 0,
        issued_us: issued(&request.timing)?,
    };
    match node.propose(command).await? {
        Reply::Collected(result) => Ok(Response::Collected(result)),
        other => Err(unexpected(other)),
    }
}

/// `ipkeepctl node forget`: a node gone for good gives back what it held.
/// While it still answers (as a member, over the peer network), that is
/// refused unless forced: a live node's pods still use their addresses.
async fn forget(
    node: &Node,
    name: String,
    member: Option<u64>,
    force: bool,
) -> Result<Response, ApiError> {
    if name.is_empty() {
        return Err(ApiError::invalid("node", "is empty"));
    }
    if name == node.name {
        return Err(ApiError::invalid(
            "node",
            format!("{name} is the node answering this request; forget it from another node"),
        ));
    }
    if !force {
        let cluster = node.cluster_status().await;
        let alive = cluster.members.iter().find(|m| {
            m.status
                .as_ref()
                .is_some_and(|s| s.node_name == name || Some(s.node_id) == member)
        });
        if let Some(m) = alive {
            return Err(ApiError::conflict(format!(
                "node {name} (member {} at {}) is alive and answering; stop it first, or use --force if its pods are gone too",
                m.id, m.addr
            )));
        }
    }
    let command = Command::ForgetNode {
        node: name.clone(),
        at_ms: 0,
        issued_us: now_us(),
    };
    let released = match node.propose(command).await? {
        Reply::Collected(result) => result.released,
        other => return Err(unexpected(other)),
    };
    for (key, addresses) in &released {
        tracing::info!(node = %name, attachment = %key, ?addresses, "released: node forgotten");
    }
    let removed_member = match member {
        Some(id) => {
            node.change_membership(MembershipChange::Remove { id })
                .await?;
            Some(id)
        }
        None => None,
    };
    Ok(Response::Forgotten(ForgetResult {
        released,
        removed_member,
    }))
}

/// CNI STATUS: the cluster can commit, and every subnet set of the network
/// has a subnet with a free address.
async fn ready(node: &Node, request: ReadyRequest) -> Result<Response, ApiError> {
    let not_available =
        |detail: String| ApiError::new(code::NOT_AVAILABLE, "ipkeep cannot serve ADD now", detail);
    node.ensure_writable()
        .await
        .map_err(|e| not_available(e.details))?;
    let machine = node.machine.read();
    for set in &request.subnets {
        let usable = set.iter().any(|name| {
            machine
                .state
                .subnet(name)
                .is_some_and(|s| s.usage().free > 0)
        });
        if !usable {
            return Err(not_available(format!(
                "no free address in subnet {} (or it does not exist)",
                set.join(", ")
            )));
        }
    }
    Ok(Response::Ready)
}

fn ip_list(node: &Node, request: &IpListRequest) -> Response {
    Response::Ips(node.machine.read().state.ip_page(request))
}
