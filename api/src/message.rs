//! Requests and responses of the node API (`ipkeepd`'s unix socket).

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::mac::Mac;
use crate::model::{
    AttachmentKey, Binding, Dns, HistoryEntry, IpRange, PodRef, PodSelector, PoolInfo, Reservation,
    Route, Sticky, SubnetInfo, SubnetSpec, SubnetUpdate,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// CNI ADD: allocate (or return the existing) addresses of an attachment.
    Add(AddRequest),
    /// CNI DEL: release an attachment's addresses; succeeds when none are held.
    Del(DelRequest),
    /// CNI CHECK: is the attachment held, with these addresses? Answers
    /// what it holds.
    Check(CheckRequest),
    /// CNI GC: release this node's attachments of a network that are not listed.
    Gc(GcRequest),
    /// CNI STATUS: can the cluster commit an ADD for these subnets now?
    Ready(ReadyRequest),
    /// `ipkeepctl status`: this node's view alone.
    NodeStatus,
    /// `ipkeepctl status`: this node's view and every member's, asked
    /// over the peer network.
    ClusterStatus,
    SubnetCreate(SubnetSpec),
    SubnetList,
    SubnetShow {
        name: String,
    },
    SubnetDelete {
        name: String,
    },
    SubnetUpdate {
        name: String,
        update: SubnetUpdate,
    },
    IpList(IpListRequest),
    /// Past and present holders of one address.
    IpHistory {
        address: IpAddr,
    },
    IpReserve {
        range: IpRange,
        note: String,
    },
    IpUnreserve {
        range: IpRange,
    },
    IpReservations,
    PoolCreate(PoolRequest),
    PoolList,
    PoolShow {
        name: String,
    },
    PoolDelete {
        name: String,
    },
    /// Replace a pool's addresses (those taken away must not be in use).
    PoolResize {
        name: String,
        addresses: Vec<IpRange>,
    },
    BindingList {
        namespace: Option<String>,
    },
    /// Free a pod name's sticky addresses (refused while the pod runs).
    BindingRelease {
        namespace: String,
        name: String,
    },
    /// The members of the cluster, with replication progress when asked on the leader.
    MemberList,
    /// Add a node as a learner (it replicates, serves reads, forwards writes).
    MemberAdd {
        id: u64,
        addr: String,
    },
    /// Make a learner a voter.
    MemberPromote {
        id: u64,
    },
    /// Remove a voter or a learner from the cluster.
    MemberRemove {
        id: u64,
    },
    /// The attachments of this node whose network namespace is gone: what
    /// its reconciler will release, and when.
    IpLeaks,
    /// A node gone for good: release every attachment it held, and remove
    /// it from the members when `member` names its id. Refused while the
    /// node answers, unless forced.
    NodeForget {
        name: String,
        member: Option<u64>,
        force: bool,
    },
    /// A backup of the whole state, as this node has applied it (wrap it in
    /// Linearize for everything committed).
    SnapshotSave,
    /// Serve the inner (read) request only after this node has applied
    /// everything the leader had committed when the request arrived.
    Linearize(#[serde(deserialize_with = "crate::nesting::bounded")] Box<Request>),
    /// The digest of this node's state, with its applied index.
    StateDigest,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Added(AddResult),
    Deleted(DelResult),
    /// What the attachment holds, in the shape of an ADD's answer.
    Checked(AddResult),
    Collected(GcResult),
    Ready,
    NodeStatus(NodeStatus),
    ClusterStatus(ClusterStatus),
    Subnet(SubnetInfo),
    Subnets(Vec<SubnetInfo>),
    SubnetDeleted,
    Ips(IpPage),
    Members(Vec<MemberInfo>),
    History(AddressHistory),
    Reservations(Vec<Reservation>),
    Pool(PoolInfo),
    Pools(Vec<PoolInfo>),
    Bindings(Vec<Binding>),
    Leaks(LeakReport),
    Forgotten(ForgetResult),
    /// A backup file's bytes (the snapshot format: checksummed records).
    Backup(Vec<u8>),
    /// A change that answers nothing more than that it was made.
    Done,
    Error(ApiError),
    Digest(StateDigest),
}

impl Response {
    /// The name of the variant, for "unexpected response" messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Response::Added(_) => "Added",
            Response::Deleted(_) => "Deleted",
            Response::Checked(_) => "Checked",
            Response::Collected(_) => "Collected",
            Response::Ready => "Ready",
            Response::NodeStatus(_) => "NodeStatus",
            Response::ClusterStatus(_) => "ClusterStatus",
            Response::Subnet(_) => "Subnet",
            Response::Subnets(_) => "Subnets",
            Response::SubnetDeleted => "SubnetDeleted",
            Response::Ips(_) => "Ips",
            Response::Members(_) => "Members",
            Response::History(_) => "History",
            Response::Reservations(_) => "Reservations",
            Response::Pool(_) => "Pool",
            Response::Pools(_) => "Pools",
            Response::Bindings(_) => "Bindings",
            Response::Backup(_) => "Backup",
            Response::Leaks(_) => "Leaks",
            Response::Forgotten(_) => "Forgotten",
            Response::Done => "Done",
            Response::Error(_) => "Error",
            Response::Digest(_) => "Digest",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddRequest {
    pub key: AttachmentKey,
    /// CNI_NETNS.
    pub netns: String,
    /// The subnets the network's ipam lists (one address per IP family,
    /// from a pool that selects the pod or the first subnet it may use).
    pub subnets: Vec<Vec<String>>,
    pub pod: PodRef,
    /// Addresses asked for explicitly (runtimeConfig `ips`, `args.cni.ips`,
    /// CNI_ARGS `IP=`): granted exactly, or refused with the reason.
    pub requested: Vec<IpAddr>,
    /// Whether the attachment gets a MAC from ipkeep, and which.
    pub mac: MacWish,
    pub timing: Timing,
}

/// What an ADD asks about the pod's MAC.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MacWish {
    /// IPAM mode: another plugin makes the interface and its MAC.
    #[default]
    NotNeeded,
    /// The pod's sticky MAC if it has one, else the one derived from its
    /// first address.
    Any,
    /// Exactly this one (runtimeConfig `mac`, `MAC=`); kept with a sticky binding.
    Exactly(Mac),
}

/// When the caller issued a request and when it stops waiting for it, in
/// microseconds since the Unix epoch by the caller's clock (the plugin runs
/// on its daemon's node: one clock). An ADD issued before a DEL of the same
/// attachment is void, however late it reaches the log; a request read after
/// its deadline is not started. Zero: unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timing {
    pub issued_us: u64,
    pub deadline_us: u64,
}

/// What `ipkeepctl pool create` asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolRequest {
    pub name: String,
    pub subnet: String,
    pub addresses: Vec<IpRange>,
    pub selector: PodSelector,
    pub sticky: Option<Sticky>,
}

/// `ipkeepctl ip history`: who holds an address now and who held it before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressHistory {
    pub address: IpAddr,
    pub current: Option<IpEntry>,
    /// Newest first.
    pub past: Vec<HistoryEntry>,
}

/// One address of an ADD result, with what the plugin needs to print it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpAssignment {
    pub subnet: String,
    /// The address with the subnet's prefix length, e.g. 10.22.0.7/16.
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddResult {
    pub ips: Vec<IpAssignment>,
    pub routes: Vec<Route>,
    pub dns: Dns,
    /// The MAC the pod's interface gets (when the ADD asked for one).
    pub mac: Option<Mac>,
    /// The MTU of the first of the attachment's subnets that sets one.
    pub mtu: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelRequest {
    pub key: AttachmentKey,
    pub timing: Timing,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelResult {
    /// The addresses released; empty when the attachment held none (DEL is idempotent).
    pub released: Vec<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRequest {
    pub key: AttachmentKey,
    /// Addresses the runtime's prevResult lists; each must be held by the attachment.
    pub expect: Vec<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcRequest {
    pub network: String,
    /// (container id, ifname) of the attachments that are still valid.
    pub valid: Vec<(String, String)>,
    pub timing: Timing,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcResult {
    pub released: Vec<(AttachmentKey, Vec<IpAddr>)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyRequest {
    /// The subnet sets of the network's ipam config; each must have a subnet
    /// with a free address. Empty: only the cluster's health is checked.
    pub subnets: Vec<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpListRequest {
    pub subnet: Option<String>,
    pub namespace: Option<String>,
    pub node: Option<String>,
    /// Start after this address (paging); None starts at the lowest.
    pub after: Option<IpAddr>,
    /// At most this many entries (the daemon caps it).
    pub limit: u32,
}

/// One held address, as `ipkeepctl ip list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpEntry {
    pub address: IpAddr,
    pub subnet: String,
    pub key: AttachmentKey,
    pub pod: PodRef,
    pub node: String,
    pub since_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpPage {
    pub entries: Vec<IpEntry>,
    /// Pass as `after` to get the next page; None on the last page.
    pub next: Option<IpAddr>,
}

/// What `ipkeepctl status` shows about the node it asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node_id: u64,
    pub node_name: String,
    /// Leader, Follower, Candidate, Learner or Shutdown.
    pub role: String,
    pub leader: Option<u64>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    /// The last snapshot this node built, since it started.
    pub last_snapshot_built: Option<SnapshotTiming>,
    /// The last snapshot this node installed from its leader, since it started.
    pub last_snapshot_installed: Option<SnapshotTiming>,
    /// Free space in the data directory against the floor; None when it
    /// cannot be read.
    pub disk: Option<DiskStatus>,
}

/// A replica's state in digests, part by part (`ipkeepctl state digest`):
/// two replicas at the same applied index must show the same parts. Also
/// what the replica found inconsistent in itself (nothing, when sound).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateDigest {
    pub applied: Option<u64>,
    pub parts: Vec<(String, u64)>,
    pub inconsistencies: Vec<String>,
}

/// A node's data directory: free space, the floor under which it takes no
/// writes (`--min-free-space`; 0: none) and whether it is under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskStatus {
    pub free_bytes: u64,
    pub floor_bytes: u64,
    pub low: bool,
}

/// One snapshot build or install: the log index it covers, how long it took
/// and its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotTiming {
    pub index: u64,
    pub millis: u64,
    pub bytes: u64,
}

/// What a node's reconciler suspects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeakReport {
    pub node: String,
    /// "on" (releases after the grace period), "report" (only lists), "off".
    pub mode: String,
    pub grace_ms: u64,
    pub suspects: Vec<LeakSuspect>,
}

/// An attachment of this node whose namespace is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeakSuspect {
    pub key: AttachmentKey,
    pub addresses: Vec<IpAddr>,
    pub pod: PodRef,
    pub netns: String,
    pub reason: String,
    /// When the reconciler first found the namespace gone (ms since the epoch).
    pub missing_since_ms: u64,
    /// When it will be released; None when the reconciler only reports.
    pub release_at_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgetResult {
    pub released: Vec<(AttachmentKey, Vec<IpAddr>)>,
    /// The member removed from the cluster, if one was named.
    pub removed_member: Option<u64>,
}

/// The cluster as one node sees it, with every member asked directly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub this: NodeStatus,
    pub members: Vec<MemberHealth>,
}

/// One member's health: whether it answered, and how far behind it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberHealth {
    pub id: u64,
    pub addr: String,
    /// "voter" or "learner".
    pub role: String,
    /// Its own answer; None when it could not be reached.
    pub status: Option<NodeStatus>,
    /// Why it could not be reached.
    pub error: Option<String>,
    /// Entries it has yet to apply, against the longest log any member reported.
    pub lag: Option<u64>,
}

/// One member of the cluster, as `ipkeepctl member list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub id: u64,
    pub addr: String,
    /// "voter" or "learner".
    pub role: String,
    pub leader: bool,
    /// The last log index the leader knows this member holds (asked on the leader only).
    pub matched: Option<u64>,
    /// How many entries the member is behind the leader's log (asked on the leader only).
    pub lag: Option<u64>,
}
