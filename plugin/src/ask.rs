//! The requests the plugin makes of its node's daemon, in either mode: the
//! daemon makes every decision, these only ask and hand the answer back.

use std::net::IpAddr;

use ipkeep_api::message::{
    AddRequest, AddResult, CheckRequest, DelRequest, GcRequest, GcResult, MacWish, ReadyRequest,
    Request, Response, Timing,
};
use ipkeep_api::{expect_response, Client, ClientError};
use ipnet::IpNet;
use serde_json::Value;

use crate::config::Settings;
use crate::env::CniEnv;
use crate::error::PluginError;

/// Now, and when the plugin stops waiting for the daemon.
fn timing(settings: &Settings) -> Timing {
    let now = ipkeep_api::clock::now_us();
    Timing {
        issued_us: now,
        deadline_us: now + settings.timeout.as_micros() as u64,
    }
}

fn call(settings: &Settings, request: &Request) -> Result<Response, ClientError> {
    Client::connect(&settings.socket, settings.timeout)?.call(request)
}

fn api(e: ClientError) -> PluginError {
    e.to_api_error().into()
}

/// Asks the daemon for the attachment's addresses (and MAC, when `mac` asks).
pub fn ask_add(env: &CniEnv, settings: &Settings, mac: MacWish) -> Result<AddResult, PluginError> {
    let request = Request::Add(AddRequest {
        key: env.key(&settings.network),
        netns: env.netns.clone(),
        subnets: settings.subnets.clone(),
        pod: env.args.pod.clone(),
        // CNI_ARGS IP= is the deprecated way: used only when the
        // configuration asks for nothing.
        requested: if settings.requested.is_empty() {
            env.args.ips.clone()
        } else {
            settings.requested.clone()
        },
        mac,
        timing: timing(settings),
    });
    let response = call(settings, &request).map_err(api)?;
    let result = expect_response!(response, Response::Added(r) => r, "Added").map_err(api)?;
    for ip in &result.ips {
        tracing::info!(address = %ip.address, subnet = %ip.subnet, "allocated");
    }
    Ok(result)
}

/// Asks the daemon to release the attachment's addresses.
pub fn ask_del(env: &CniEnv, settings: &Settings) -> Result<(), PluginError> {
    let request = Request::Del(DelRequest {
        key: env.key(&settings.network),
        timing: timing(settings),
    });
    let response = call(settings, &request).map_err(api)?;
    let result = expect_response!(response, Response::Deleted(r) => r, "Deleted").map_err(api)?;
    tracing::info!(released = ?result.released, "released");
    Ok(())
}

/// The addresses a prevResult lists, which the attachment must hold. A
/// prevResult that is not a result (not an object, `ips` not a list, an
/// entry without its address) is a bad configuration, not "nothing to
/// check".
fn prev_addresses(prev: Option<&Value>) -> Result<Vec<IpAddr>, PluginError> {
    let Some(prev) = prev else {
        return Ok(vec![]);
    };
    let Some(prev) = prev.as_object() else {
        return Err(PluginError::config("prevResult", "is not an object"));
    };
    let ips = match prev.get("ips") {
        None | Some(Value::Null) => return Ok(vec![]),
        Some(Value::Array(ips)) => ips,
        Some(_) => return Err(PluginError::config("prevResult.ips", "is not a list")),
    };
    ips.iter()
        .enumerate()
        .map(|(i, ip)| {
            let field = format!("prevResult.ips[{i}].address");
            let text = ip
                .get("address")
                .and_then(Value::as_str)
                .ok_or_else(|| PluginError::config(&field, "is missing or not a string"))?;
            text.parse::<IpNet>().map(|n| n.addr()).map_err(|_| {
                PluginError::config(
                    &field,
                    format!("{text:?} is not an address in CIDR notation"),
                )
            })
        })
        .collect()
}

/// Asks the daemon whether the attachment holds what prevResult lists, and
/// what it holds.
pub fn ask_check(env: &CniEnv, settings: &Settings) -> Result<AddResult, PluginError> {
    let expect = prev_addresses(settings.prev_result.as_ref())?;
    let request = Request::Check(CheckRequest {
        key: env.key(&settings.network),
        expect,
    });
    let response = call(settings, &request).map_err(api)?;
    expect_response!(response, Response::Checked(held) => held, "Checked").map_err(api)
}

/// Asks the daemon to release the network's attachments on this node that
/// the runtime no longer lists.
pub fn ask_gc(settings: &Settings) -> Result<GcResult, PluginError> {
    let request = Request::Gc(GcRequest {
        network: settings.network.clone(),
        valid: settings.gc_keep.clone(),
        timing: timing(settings),
    });
    let response = call(settings, &request).map_err(api)?;
    expect_response!(response, Response::Collected(r) => r, "Collected").map_err(api)
}

/// Asks the daemon whether it could serve an ADD on the subnets now.
pub fn ask_ready(settings: &Settings) -> Result<(), ClientError> {
    let request = Request::Ready(ReadyRequest {
        subnets: settings.subnets.clone(),
    });
    call(settings, &request).and_then(|r| expect_response!(r, Response::Ready => (), "Ready"))
}
