//! `ipkeep`, the CNI plugin. Exec'd by the container runtime once per pod and
//! command; asks the node daemon `ipkeepd` over its unix socket and prints
//! the CNI result (or error object) on stdout.

use std::io::{self, Read, Write};
use std::process::ExitCode;
use std::time::Instant;

use ipkeep_api::code;
use ipkeep_plugin::commands::{self, Output};
use ipkeep_plugin::error::{ErrorObject, PluginError};
use ipkeep_plugin::{config, env, logging, version};

fn print(value: &serde_json::Value) -> io::Result<()> {
    let mut out = io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    out.write_all(b"\n")?;
    out.flush()
}

fn fail(version: &str, err: &PluginError) -> ExitCode {
    let object = ErrorObject {
        cni_version: version,
        code: err.code,
        msg: &err.msg,
        details: &err.details,
    };
    if let Ok(value) = serde_json::to_value(&object) {
        let _ = print(&value);
    }
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let started = Instant::now();
    let mut stdin = String::new();
    let read = io::stdin().read_to_string(&mut stdin);
    // Parsed once: the log settings and the version of an error object come
    // from it before anything can fail, and the command takes it after.
    let parsed = (!stdin.trim().is_empty()).then(|| config::parse_json(&stdin));
    let json = parsed.as_ref().and_then(|p| p.as_ref().ok());
    let (log_file, log_level) = config::log_settings(json);
    logging::init(&log_file, &log_level);
    let error_version = config::declared_version(json)
        .filter(|v| version::is_supported(v))
        .unwrap_or_else(|| version::CURRENT.to_owned());

    let outcome = (|| {
        read.map_err(|e| PluginError::new(code::IO, "cannot read stdin", e.to_string()))?;
        let env = env::read(|k| std::env::var(k).ok())?;
        let json = parsed.transpose()?;
        let span = tracing::info_span!(
            "cni",
            command = env.command.name(),
            container = %env.container_id,
            ifname = %env.ifname,
        );
        let _enter = span.enter();
        commands::run(&env, json)
    })();

    let elapsed_us = started.elapsed().as_micros() as u64;
    match outcome {
        Ok(Output::Json(value)) => {
            tracing::debug!(elapsed_us, "done");
            match print(&value) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "cannot write the result to stdout");
                    ExitCode::FAILURE
                }
            }
        }
        Ok(Output::Nothing) => {
            tracing::debug!(elapsed_us, "done");
            ExitCode::SUCCESS
        }
        Err(err) => {
            tracing::warn!(code = err.code, error = %err, elapsed_us, "failed");
            fail(&error_version, &err)
        }
    }
}
