//! One entry point for every CNI command: VERSION is answered here, the
//! rest go to the mode the configuration asks for, main-plugin mode
//! ([`crate::interface`], when ipkeep makes the interface) or IPAM mode
//! ([`crate::ipam`]). Neither mode calls the other; both ask the daemon
//! through [`crate::ask`].

use serde_json::{json, Value};

use crate::config;
use crate::env::{CniEnv, Command};
use crate::error::PluginError;
pub use crate::result::Output;
use crate::{interface, ipam, version};

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
        Command::Add => ipam::add(env, &settings),
        Command::Del => ipam::del(env, &settings),
        Command::Check => {
            needs("0.4.0")?;
            ipam::check(env, &settings)
        }
        Command::Gc => {
            needs("1.1.0")?;
            ipam::gc(&settings)
        }
        Command::Status => {
            needs("1.1.0")?;
            ipam::status(&settings)
        }
        Command::Version => unreachable!("handled above"),
    }
}

fn version_info(json: Option<&Value>) -> Value {
    let asked = config::declared_version(json).unwrap_or_else(|| version::CURRENT.to_owned());
    json!({"cniVersion": asked, "supportedVersions": version::SUPPORTED})
}
