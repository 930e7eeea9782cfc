//! ADD, DEL and GC: which addresses an attachment gets, and letting them go.
//!
//! The choice for each IP family the network's ipam lists, in this order:
//! 1. the pod's sticky binding, if it has one;
//! 2. an address asked for explicitly (runtimeConfig `ips`, `IP=`), granted
//!    exactly or refused with the reason;
//! 3. a pool, in one of the subnets the pod may use, that selects the pod
//!    (its addresses go to nobody else; when it is full, that is an error);
//! 4. the next free address after the cursor in the first subnet of the
//!    family that the pod's namespace may use, within the namespace's quota.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipkeep_api::code;
use ipkeep_api::message::{AddRequest, AddResult, DelResult, GcResult, MacWish};
use ipkeep_api::model::{
    AllocatedAddress, Allocation, AttachmentKey, Binding, PodRef, ReleaseReason,
};
use ipkeep_api::{ApiError, Mac};

use crate::records::Change;
use crate::state::{PodName, Source, State};

/// One address chosen for an ADD, and where it comes from.
struct Choice {
    subnet: String,
    address: IpAddr,
    source: Source,
    /// The pool it belongs to, if any.
    pool: Option<String>,
}

fn family(v4: bool) -> &'static str {
    if v4 {
        "IPv4"
    } else {
        "IPv6"
    }
}

fn pod_name(pod: &PodRef) -> Option<PodName> {
    Some((pod.namespace.clone()?, pod.name.clone()?))
}

fn show_pod(pod: &PodRef) -> String {
    pod.to_string()
}

fn unavailable(details: String) -> ApiError {
    ApiError::new(
        code::ADDRESS_UNAVAILABLE,
        "requested address unavailable",
        details,
    )
}

impl State {
    /// The subnets the ipam config lists, by family, in order. Every name
    /// must exist: a config naming an unknown subnet is an error, not a
    /// silent skip.
    fn candidates(&self, sets: &[Vec<String>]) -> Result<(Vec<String>, Vec<String>), ApiError> {
        let mut seen = BTreeSet::new();
        let (mut v4, mut v6, mut unknown) = (vec![], vec![], vec![]);
        for name in sets.iter().flatten() {
            if !seen.insert(name.clone()) {
                continue;
            }
            match self.subnet(name) {
                None => unknown.push(name.as_str()),
                Some(s) if s.subnet.cidr.addr().is_ipv4() => v4.push(name.clone()),
                Some(_) => v6.push(name.clone()),
            }
        }
        if !unknown.is_empty() {
            return Err(ApiError::new(
                code::UNKNOWN_SUBNET,
                "unknown subnet",
                format!(
                    "ipam.subnet: no subnet named {} exists; create it with `ipkeepctl subnet create`",
                    unknown.join(", ")
                ),
            ));
        }
        if v4.is_empty() && v6.is_empty() {
            return Err(ApiError::new(
                code::INVALID_CONFIG,
                "invalid network configuration",
                "ipam: no subnet to allocate from",
            ));
        }
        Ok((v4, v6))
    }

    fn check_quota(&self, subnet: &str, pod: &PodRef) -> Result<(), ApiError> {
        let Some(ns) = pod.namespace.as_deref() else {
            return Ok(());
        };
        let Some(limit) = self
            .subnet(subnet)
            .and_then(|s| s.subnet.tenancy.quotas.get(ns).copied())
        else {
            return Ok(());
        };
        let used = self.usage_of(subnet, ns);
        if used >= limit {
            return Err(ApiError::new(
                code::QUOTA_EXCEEDED,
                "quota exceeded",
                format!("namespace {ns} holds {used} addresses in subnet {subnet}, its quota is {limit}"),
            ));
        }
        Ok(())
    }

    /// An address asked for explicitly, checked against everything that
    /// could make it someone else's.
    fn choose_requested(
        &self,
        wanted: IpAddr,
        candidates: &[String],
        permitted: &[String],
        pod: &PodRef,
        key: &AttachmentKey,
    ) -> Result<Choice, ApiError> {
        let Some(subnet) = candidates
            .iter()
            .find(|s| self.subnet(s).is_some_and(|s| s.contains(wanted)))
        else {
            return Err(unavailable(format!(
                "{wanted} is in none of this network's subnets ({})",
                candidates.join(", ")
            )));
        };
        if !permitted.contains(subnet) {
            return Err(ApiError::new(
                code::NOT_PERMITTED,
                "namespace not permitted",
                format!(
                    "namespace {} may not use subnet {subnet}",
                    pod.namespace.as_deref().unwrap_or("(none)")
                ),
            ));
        }
        let sub = self.subnet(subnet).expect("candidate exists");
        if !sub.is_assignable(wanted) {
            return Err(unavailable(format!(
                "{wanted} cannot be handed out in subnet {subnet}: it is its network, broadcast or gateway address, or excluded"
            )));
        }
        if let Some(holder) = self.holder(wanted).filter(|h| h != key) {
            let who = self
                .allocation(&holder)
                .map(|a| show_pod(&a.pod))
                .unwrap_or_default();
            return Err(unavailable(format!(
                "{wanted} is held by {holder} (pod {who})"
            )));
        }
        if let Some(r) = self.reservation_at(wanted) {
            return Err(unavailable(format!(
                "{wanted} is reserved ({}: {})",
                r.range, r.note
            )));
        }
        if let Some((ns, name)) = self.bound_to(wanted) {
            return Err(unavailable(format!(
                "{wanted} is kept for pod {ns}/{name} (sticky)"
            )));
        }
        let pool = self.pool_containing(subnet, wanted);
        if let Some(p) = pool {
            if !p.pool.selector.selects(pod) {
                return Err(unavailable(format!(
                    "{wanted} belongs to pool {}, which is for pods {}",
                    p.name(),
                    p.pool.selector
                )));
            }
        }
        self.check_quota(subnet, pod)?;
        Ok(Choice {
            subnet: subnet.clone(),
            address: wanted,
            source: Source::Exact,
            pool: pool.map(|p| p.name().to_owned()),
        })
    }

    /// The address of one family for an ADD.
    fn choose_family(
        &self,
        v4: bool,
        candidates: &[String],
        request: &AddRequest,
    ) -> Result<Option<Choice>, ApiError> {
        let pod = &request.pod;
        let wanted = request
            .requested
            .iter()
            .copied()
            .find(|a| a.is_ipv4() == v4);
        if candidates.is_empty() {
            return match wanted {
                Some(w) => Err(unavailable(format!(
                    "{w} is asked for, but this network lists no {} subnet",
                    family(v4)
                ))),
                None => Ok(None),
            };
        }
        let binding = pod_name(pod).and_then(|p| self.binding(&p));
        if let Some(bound) =
            binding.and_then(|b| b.addresses.iter().find(|a| a.address.is_ipv4() == v4))
        {
            if !candidates.contains(&bound.subnet) {
                return Err(unavailable(format!(
                    "pod {} keeps {} in subnet {}, which this network does not list; `ipkeepctl binding release` frees it",
                    show_pod(pod),
                    bound.address,
                    bound.subnet
                )));
            }
            if let Some(w) = wanted.filter(|w| *w != bound.address) {
                return Err(unavailable(format!(
                    "pod {} keeps {} (sticky); release the binding to get {w}",
                    show_pod(pod),
                    bound.address
                )));
            }
            return Ok(Some(Choice {
                subnet: bound.subnet.clone(),
                address: bound.address,
                source: Source::Binding,
                pool: binding.and_then(|b| b.pool.clone()),
            }));
        }
        let permitted: Vec<String> = candidates
            .iter()
            .filter(|s| {
                self.subnet(s)
                    .is_some_and(|s| s.subnet.tenancy.allows(pod.namespace.as_deref()))
            })
            .cloned()
            .collect();
        if permitted.is_empty() {
            return Err(ApiError::new(
                code::NOT_PERMITTED,
                "namespace not permitted",
                format!(
                    "namespace {} may not use subnet {}",
                    pod.namespace.as_deref().unwrap_or("(none)"),
                    candidates.join(", ")
                ),
            ));
        }
        if let Some(w) = wanted {
            return self
                .choose_requested(w, candidates, &permitted, pod, &request.key)
                .map(Some);
        }
        let pool = permitted
            .iter()
            .flat_map(|s| self.pools_of(s))
            .find(|p| p.pool.selector.selects(pod));
        if let Some(pool) = pool {
            self.check_quota(&pool.pool.subnet, pod)?;
            let Some(address) = pool.peek_next() else {
                return Err(ApiError::new(
                    code::POOL_EXHAUSTED,
                    "pool exhausted",
                    format!(
                        "pool {} (for pods {}) has no free address for pod {}",
                        pool.name(),
                        pool.pool.selector,
                        show_pod(pod)
                    ),
                ));
            };
            return Ok(Some(Choice {
                subnet: pool.pool.subnet.clone(),
                address,
                source: Source::Next,
                pool: Some(pool.name().to_owned()),
            }));
        }
        let subnet = &permitted[0];
        self.check_quota(subnet, pod)?;
        let Some(address) = self.subnet(subnet).and_then(|s| s.peek_next()) else {
            return Err(ApiError::new(
                code::EXHAUSTED,
                "subnet exhausted",
                format!("no free address left in subnet {subnet}"),
            ));
        };
        Ok(Some(Choice {
            subnet: subnet.clone(),
            address,
            source: Source::Next,
            pool: None,
        }))
    }

    pub(super) fn add(
        &mut self,
        request: &AddRequest,
        node: &str,
        at_ms: u64,
        issued_us: u64,
        journal: &mut Vec<Change>,
    ) -> Result<AddResult, ApiError> {
        // Invariant 3: a retried ADD of the same attachment gets the same answer.
        if let Some(existing) = self.allocation(&request.key) {
            return Ok(self.add_result(&existing));
        }
        // Invariant 6: an ADD its caller gave up on (it timed out, the caller
        // then sent DEL) must not come back to life when it reaches the log late.
        if let Some(deleted_us) = self.tombstone(&request.key) {
            if issued_us <= deleted_us {
                return Err(ApiError::try_again(format!(
                    "this ADD of {} was issued before a DEL of the same attachment and is void",
                    request.key
                )));
            }
        }
        let (v4, v6) = self.candidates(&request.subnets)?;
        for fam in [true, false] {
            if request
                .requested
                .iter()
                .filter(|a| a.is_ipv4() == fam)
                .count()
                > 1
            {
                return Err(unavailable(format!(
                    "more than one {} address is asked for; ask for one per family",
                    family(fam)
                )));
            }
        }
        let pod = &request.pod;
        if let Some(b) = pod_name(pod).and_then(|p| self.binding(&p)) {
            if let Some(holder) = b.holder.as_ref().filter(|h| **h != request.key) {
                return Err(ApiError::new(
                    code::POD_RUNNING,
                    "pod already running",
                    format!(
                        "pod {} still runs as {holder} with its sticky address; delete it (CNI DEL) before starting it again",
                        show_pod(pod)
                    ),
                ));
            }
        }
        // Choose every family before taking anything: dual stack is all or nothing.
        let mut choices = Vec::new();
        for (is_v4, candidates) in [(true, &v4), (false, &v6)] {
            if let Some(choice) = self.choose_family(is_v4, candidates, request)? {
                choices.push(choice);
            }
        }
        // The MAC follows the pod like its address does: kept with its
        // binding, or derived from the address (itself sticky).
        let mac = match request.mac {
            MacWish::NotNeeded => None,
            MacWish::Exactly(mac) => Some(mac),
            MacWish::Any => pod_name(pod)
                .and_then(|p| self.binding(&p))
                .and_then(|b| b.mac)
                .or_else(|| choices.first().map(|c| Mac::derived_from(c.address))),
        };
        let allocation = Allocation {
            key: request.key.clone(),
            addresses: choices
                .iter()
                .map(|c| AllocatedAddress {
                    subnet: c.subnet.clone(),
                    address: c.address,
                })
                .collect(),
            pod: pod.clone(),
            node: node.to_owned(),
            netns: request.netns.clone(),
            mac,
            since_ms: at_ms,
        };
        let sources: Vec<Source> = choices.iter().map(|c| c.source).collect();
        let result = self.add_result(&allocation);
        self.hold(allocation, &sources, journal);

        // New addresses from a sticky pool or subnet are bound to the pod's name.
        if let Some(name) = pod_name(pod) {
            let mut sticky = Vec::new();
            let (mut from_pool, mut ttl) = (None, None);
            for c in choices.iter().filter(|c| c.source != Source::Binding) {
                let rule = match &c.pool {
                    Some(p) => self.pool(p).and_then(|p| p.pool.sticky),
                    None => self.subnet(&c.subnet).and_then(|s| s.subnet.sticky),
                };
                if let Some(rule) = rule {
                    sticky.push(AllocatedAddress {
                        subnet: c.subnet.clone(),
                        address: c.address,
                    });
                    from_pool = from_pool.or(c.pool.clone());
                    ttl = ttl.or(rule.idle_ttl_ms);
                }
            }
            if !sticky.is_empty() {
                self.bind(
                    Binding {
                        namespace: name.0,
                        name: name.1,
                        addresses: sticky,
                        mac,
                        pool: from_pool,
                        holder: Some(request.key.clone()),
                        since_ms: at_ms,
                        last_used_ms: at_ms,
                        idle_ttl_ms: ttl,
                    },
                    journal,
                );
            }
        }
        if let (Some(name), Some(mac)) = (pod_name(pod), mac) {
            self.remember_mac(&name, mac, journal);
        }
        Ok(result)
    }

    pub(super) fn del(
        &mut self,
        key: &AttachmentKey,
        at_ms: u64,
        issued_us: u64,
        journal: &mut Vec<Change>,
    ) -> DelResult {
        self.bury(key.clone(), issued_us, at_ms, journal);
        // Invariant 3: DEL of something already gone succeeds and does nothing.
        let released = self
            .release(key, ReleaseReason::Del, at_ms, journal)
            .map(|a| a.addresses.iter().map(|h| h.address).collect())
            .unwrap_or_default();
        DelResult { released }
    }

    /// GC releases attachments only: sticky bindings and pools stay, they
    /// are decisions an operator made.
    pub(super) fn gc(
        &mut self,
        network: &str,
        node: &str,
        valid: &[(String, String)],
        at_ms: u64,
        issued_us: u64,
        journal: &mut Vec<Change>,
    ) -> GcResult {
        let valid: BTreeSet<(&str, &str)> = valid
            .iter()
            .map(|(c, i)| (c.as_str(), i.as_str()))
            .collect();
        let stale: Vec<AttachmentKey> = self
            .allocations_of_network(network)
            .filter(|a| a.node() == node)
            .filter(|a| !valid.contains(&(a.container_id(), a.ifname())))
            .map(|a| a.key())
            .collect();
        self.release_all(stale, ReleaseReason::Gc, at_ms, issued_us, journal)
    }

    /// Releases attachments (each fenced against stale ADDs like a DEL) and
    /// says which addresses went.
    fn release_all(
        &mut self,
        keys: Vec<AttachmentKey>,
        reason: ReleaseReason,
        at_ms: u64,
        issued_us: u64,
        journal: &mut Vec<Change>,
    ) -> GcResult {
        let mut released = Vec::new();
        for key in keys {
            self.bury(key.clone(), issued_us, at_ms, journal);
            if let Some(a) = self.release(&key, reason, at_ms, journal) {
                released.push((key, a.addresses.iter().map(|h| h.address).collect()));
            }
        }
        GcResult { released }
    }

    /// Releases what a node's reconciler found leaked. An attachment that
    /// changed since the reconciler looked (deleted and added again) is left
    /// alone: only the one it saw goes.
    pub(super) fn reclaim(
        &mut self,
        attachments: &[(AttachmentKey, u64)],
        at_ms: u64,
        issued_us: u64,
        journal: &mut Vec<Change>,
    ) -> GcResult {
        let same: Vec<AttachmentKey> = attachments
            .iter()
            .filter(|(key, since_ms)| self.allocation(key).map(|a| a.since_ms) == Some(*since_ms))
            .map(|(key, _)| key.clone())
            .collect();
        self.release_all(same, ReleaseReason::Reconciler, at_ms, issued_us, journal)
    }

    /// Releases every attachment a node held; bindings and pools stay.
    pub(super) fn forget_node(
        &mut self,
        node: &str,
        at_ms: u64,
        issued_us: u64,
        journal: &mut Vec<Change>,
    ) -> GcResult {
        let keys: Vec<AttachmentKey> = self
            .allocations()
            .filter(|a| a.node() == node)
            .map(|a| a.key())
            .collect();
        self.release_all(
            keys,
            ReleaseReason::NodeForgotten,
            at_ms,
            issued_us,
            journal,
        )
    }
}
