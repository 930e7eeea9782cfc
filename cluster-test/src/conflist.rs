//! A network configuration list run as libcni runs it: each plugin in order
//! for ADD (each gets the previous one's result as prevResult) and CHECK
//! (with the cached result), in reverse order for DEL; runtimeConfig built
//! from the capabilities each plugin declares.

use serde_json::{json, Map, Value};

use crate::cni::{CniCall, CniOutput};

/// One attachment of a pod to the network, as the runtime sees it.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub container_id: String,
    pub ifname: String,
    pub netns: String,
    pub cni_args: String,
    /// Capability arguments the runtime offers (portMappings, bandwidth, mac, ips, ...).
    pub capability_args: Map<String, Value>,
    /// The node's namespace the plugins run in.
    pub node_netns: String,
}

pub struct Conflist {
    list: Value,
}

/// A plugin of the list that failed, with its output.
#[derive(Debug)]
pub struct ChainFailure {
    pub plugin: String,
    pub output: CniOutput,
}

impl Conflist {
    pub fn new(list: Value) -> Conflist {
        assert!(list["plugins"].is_array(), "a conflist has plugins");
        Conflist { list }
    }

    fn plugins(&self) -> Vec<Value> {
        self.list["plugins"].as_array().cloned().unwrap_or_default()
    }

    fn config(&self, plugin: &Value, at: &Attachment, prev: Option<&Value>) -> Value {
        let mut conf = plugin.clone();
        conf["cniVersion"] = self.list["cniVersion"].clone();
        conf["name"] = self.list["name"].clone();
        if let Some(prev) = prev {
            conf["prevResult"] = prev.clone();
        }
        let mut runtime = Map::new();
        if let Some(caps) = plugin["capabilities"].as_object() {
            for (cap, on) in caps {
                if on == &json!(true) {
                    if let Some(v) = at.capability_args.get(cap) {
                        runtime.insert(cap.clone(), v.clone());
                    }
                }
            }
        }
        if !runtime.is_empty() {
            conf["runtimeConfig"] = Value::Object(runtime);
        }
        conf
    }

    fn call(
        &self,
        command: &str,
        plugin: &Value,
        at: &Attachment,
        prev: Option<&Value>,
    ) -> CniOutput {
        let name = plugin["type"].as_str().expect("plugin type");
        let call = if name == "ipkeep" {
            CniCall::ipkeep(command)
        } else {
            CniCall::reference(name, command)
        };
        call.attachment(&at.container_id, &at.ifname, &at.netns)
            .args(&at.cni_args)
            .stdin(&self.config(plugin, at, prev))
            .in_netns(&at.node_netns)
            .run()
    }

    /// ADD through the chain; the last plugin's result.
    pub fn add(&self, at: &Attachment) -> Result<Value, ChainFailure> {
        let mut prev: Option<Value> = None;
        for plugin in self.plugins() {
            let out = self.call("ADD", &plugin, at, prev.as_ref());
            if !out.ok() {
                return Err(ChainFailure {
                    plugin: plugin["type"].as_str().unwrap_or("?").to_owned(),
                    output: out,
                });
            }
            prev = Some(out.json());
        }
        Ok(prev.expect("a conflist has at least one plugin"))
    }

    /// CHECK through the chain with the result ADD gave, leaving out the
    /// plugin types in `skip` (a reference plugin with a known CHECK bug).
    pub fn check(
        &self,
        at: &Attachment,
        result: &Value,
        skip: &[&str],
    ) -> Result<(), ChainFailure> {
        for plugin in self.plugins() {
            if skip.contains(&plugin["type"].as_str().unwrap_or("")) {
                continue;
            }
            let out = self.call("CHECK", &plugin, at, Some(result));
            if !out.ok() {
                return Err(ChainFailure {
                    plugin: plugin["type"].as_str().unwrap_or("?").to_owned(),
                    output: out,
                });
            }
        }
        Ok(())
    }

    /// DEL through the chain, last plugin first.
    pub fn del(&self, at: &Attachment, result: Option<&Value>) -> Result<(), ChainFailure> {
        for plugin in self.plugins().iter().rev() {
            let out = self.call("DEL", plugin, at, result);
            if !out.ok() {
                return Err(ChainFailure {
                    plugin: plugin["type"].as_str().unwrap_or("?").to_owned(),
                    output: out,
                });
            }
        }
        Ok(())
    }
}
