//! One function per CNI command. Each asks the node daemon and shapes its
//! answer; the daemon makes every decision.

use std::net::IpAddr;

use ipkeep_api::message::{
    AddRequest, AddResult, CheckRequest, DelRequest, GcRequest, MacWish, ReadyRequest, Request,
    Response, Timing,
};
use ipkeep_api::{code, expect_response, Client, ClientError};
use ipnet::IpNet;
use serde_json::{json, Value};

use crate::config::{self, Settings};
use crate::env::{CniEnv, Command};
use crate::error::PluginError;
use crate::result::ipam_result;
use crate::{interface, version};

/// What a successful command prints on stdout.
pub enum Output {
    Json(Value),
    /// GC and STATUS print nothing on success.
    Nothing,
}

pub fn run(env: &CniEnv, json: Option<Value>) -> Result<Output, PluginError> {
    if env.command == Command::Version {
        return Ok(Output::Json(version_info(json.as_ref())));
    }
    let json = json.ok_or_else(|| {
        PluginError::decode("stdin is empty; a network configuration is required")
    })?;
    let settings = config::settle(json)?;
    let needs = |min: &str| {
        if version::at_least(&settings.cni_version, min) {
            Ok(())
        } else {
            Err(PluginError::version(format!(
                "{} needs cniVersion {min} or later; the configuration says {}",
                env.command.name(),
                settings.cni_version
            )))
        }
    };
    if let Some(link) = &settings.link {
        match env.command {
            Command::Add => return interface::add(env, &settings, link),
            Command::Del => return interface::del(env, &settings, link),
            Command::Check => {
                needs("0.4.0")?;
                return interface::check(env, &settings, link);
            }
            _ => {}
        }
    }
    match env.command {
        Command::Add => add(env, &settings),
        Command::Del => del(env, &settings),
        Command::Check => {
            needs("0.4.0")?;
            check(env, &settings)
        }
        Command::Gc => {
            needs("1.1.0")?;
            gc(&settings)
        }
        Command::Status => {
            needs("1.1.0")?;
            status(&settings)
        }
        Command::Version => unreachable!("handled above"),
    }
}

fn version_info(json: Option<&Value>) -> Value {
    let asked = config::declared_version(json).unwrap_or_else(|| version::CURRENT.to_owned());
    json!({"cniVersion": asked, "supportedVersions": version::SUPPORTED})
}

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

fn add(env: &CniEnv, settings: &Settings) -> Result<Output, PluginError> {
    let result = ask_add(env, settings, MacWish::NotNeeded)?;
    Ok(Output::Json(ipam_result(&settings.cni_version, &result)))
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

fn del(env: &CniEnv, settings: &Settings) -> Result<Output, PluginError> {
    ask_del(env, settings)?;
    // DEL prints nothing (its result is ignored by runtimes); an empty object
    // is not valid either, so print nothing.
    Ok(Output::Nothing)
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

fn check(env: &CniEnv, settings: &Settings) -> Result<Output, PluginError> {
    ask_check(env, settings)?;
    Ok(Output::Nothing)
}

fn gc(settings: &Settings) -> Result<Output, PluginError> {
    let request = Request::Gc(GcRequest {
        network: settings.network.clone(),
        valid: settings.gc_keep.clone(),
        timing: timing(settings),
    });
    let response = call(settings, &request).map_err(api)?;
    let result =
        expect_response!(response, Response::Collected(r) => r, "Collected").map_err(api)?;
    for (key, addresses) in &result.released {
        tracing::info!(attachment = %key, ?addresses, "released by GC");
    }
    Ok(Output::Nothing)
}

/// STATUS answers 50 whenever ADD could not be served: the spec gives STATUS
/// its own codes, so an unreachable daemon is 50 here, not 11.
fn status(settings: &Settings) -> Result<Output, PluginError> {
    let request = Request::Ready(ReadyRequest {
        subnets: settings.subnets.clone(),
    });
    let outcome =
        call(settings, &request).and_then(|r| expect_response!(r, Response::Ready => (), "Ready"));
    outcome.map(|_| Output::Nothing).map_err(|e| {
        let mut err = PluginError::from(e.to_api_error());
        err.code = code::NOT_AVAILABLE;
        err
    })
}
