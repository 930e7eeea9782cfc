//! IPAM mode: ipkeep as the `ipam` of another plugin (bridge, macvlan, ptp).
//! Each command asks the daemon and shapes its answer as the CNI result;
//! the interface is the calling plugin's.

use ipkeep_api::code;
use ipkeep_api::message::MacWish;

use crate::ask::{ask_add, ask_check, ask_del, ask_gc, ask_ready};
use crate::config::Settings;
use crate::env::CniEnv;
use crate::error::PluginError;
use crate::result::{ipam_result, Output};

pub fn add(env: &CniEnv, settings: &Settings) -> Result<Output, PluginError> {
    let result = ask_add(env, settings, MacWish::NotNeeded)?;
    Ok(Output::Json(ipam_result(&settings.cni_version, &result)))
}

pub fn del(env: &CniEnv, settings: &Settings) -> Result<Output, PluginError> {
    ask_del(env, settings)?;
    // DEL prints nothing (its result is ignored by runtimes); an empty object
    // is not valid either, so print nothing.
    Ok(Output::Nothing)
}

pub fn check(env: &CniEnv, settings: &Settings) -> Result<Output, PluginError> {
    ask_check(env, settings)?;
    Ok(Output::Nothing)
}

pub fn gc(settings: &Settings) -> Result<Output, PluginError> {
    let result = ask_gc(settings)?;
    for (key, addresses) in &result.released {
        tracing::info!(attachment = %key, ?addresses, "released by GC");
    }
    Ok(Output::Nothing)
}

/// STATUS answers 50 whenever ADD could not be served: the spec gives STATUS
/// its own codes, so an unreachable daemon is 50 here, not 11.
pub fn status(settings: &Settings) -> Result<Output, PluginError> {
    ask_ready(settings).map(|_| Output::Nothing).map_err(|e| {
        let mut err = PluginError::from(e.to_api_error());
        err.code = code::NOT_AVAILABLE;
        err
    })
}
