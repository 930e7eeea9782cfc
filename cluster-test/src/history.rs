//! What a chaos run did and saw: every plugin call with its start, end,
//! node and outcome; every fault; the windows in which nodes were on the
//! minority side of a partition. Times are microseconds since the run began.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpKind {
    Add,
    Del,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Success; for ADD, the addresses of the result.
    Ok(Vec<String>),
    /// A CNI error object with this code.
    Failed { code: u64, msg: String },
    /// No parsable answer (the plugin crashed or printed garbage).
    NoAnswer(String),
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok(_))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub node: u64,
    pub kind: OpKind,
    pub cid: String,
    /// The pod's namespace and name, as CNI_ARGS gave them.
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub pod: String,
    pub start: u64,
    pub end: u64,
    pub outcome: Outcome,
}

/// Nodes cut off from the majority between `from` and `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinorityWindow {
    pub nodes: Vec<u64>,
    pub from: u64,
    pub to: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRecord {
    pub kind: String,
    pub nodes: Vec<u64>,
    pub from: u64,
    pub to: u64,
}

/// A pod whose network namespace went away without a DEL (its runtime
/// "crashed"): the node's leak reconciler must release it, and only after
/// its grace period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vanish {
    pub cid: String,
    pub node: u64,
    pub at: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub ops: Vec<Op>,
    pub minority: Vec<MinorityWindow>,
    pub faults: Vec<FaultRecord>,
    #[serde(default)]
    pub vanished: Vec<Vanish>,
}

/// One node's state at the end of a run: container id -> address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalState {
    pub node: u64,
    pub held: BTreeMap<String, Vec<String>>,
}
