//! The network configuration on the plugin's stdin: JSON, the ipam section,
//! runtimeConfig (ips, mac), args, prevResult. Any input must give settings
//! or an error naming a field, never a panic.
#![no_main]

use ipkeep_plugin::config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let json = config::parse_json(text).ok();
    let _ = config::log_settings(json.as_ref());
    if let Some(version) = config::declared_version(json.as_ref()) {
        let _ = config::check_version(&version);
    }
    if let Some(json) = json {
        let _ = config::settle(json);
    }
});
