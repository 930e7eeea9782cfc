//! The CNI environment (CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME,
//! CNI_ARGS, CNI_PATH) as a runtime sets it: input lines `KEY=VALUE`.
#![no_main]

use std::collections::HashMap;

use ipkeep_plugin::env;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let vars: HashMap<&str, &str> = text
        .lines()
        .filter_map(|line| line.split_once('='))
        .collect();
    let _ = env::read(|key| vars.get(key).map(|v| v.to_string()));
    let _ = env::parse_args(&text);
});
