//! What every clone of a cache service shares: the store, the counters, and the
//! invalidation state (per-tool and global epochs, the policy generation last seen).

use std::{
    collections::HashMap,
    fmt,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use mcp_tower_core::{CallKey, CallResolver, ToolCall, ToolPolicy, error};
use rmcp::{ErrorData, model::CallToolResponse};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{CacheConfig, CacheEntry, CacheStore, entry::Stamp, estimate_result_bytes};

/// A cached tool's invalidation counter. Entries hold their tool's slot, so checking
/// whether `invalidate(tool)` happened since an entry's call started is one load, with no
/// lookup.
#[derive(Debug)]
pub(crate) struct ToolSlot {
    pub(crate) name: Arc<str>,
    pub(crate) epoch: AtomicU64,
}

/// A counter on its own cache line, so the hit counter bumped by every hit does not share
/// a line with the others.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn add(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A counter bumped by every hit: striped over cache lines, each thread adding to its own
/// stripe, so hits on several cores do not fight over one line. Read by summing.
#[derive(Debug, Default)]
pub(crate) struct StripedCounter([Counter; STRIPES]);

const STRIPES: usize = 8;

impl StripedCounter {
    pub(crate) fn add(&self) {
        thread_local! {
            static STRIPE: usize = {
                static NEXT: AtomicUsize = AtomicUsize::new(0);
                NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES
            };
        }
        let stripe = STRIPE.with(|s| *s);
        self.0[stripe].add();
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.iter().map(Counter::get).sum()
    }
}

/// The layer's own counters (the store keeps the rest).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) hits: StripedCounter,
    pub(crate) misses: Counter,
    pub(crate) bypassed: Counter,
    pub(crate) bypassed_anonymous: Counter,
    pub(crate) inserts: Counter,
    pub(crate) skipped_too_large: Counter,
    pub(crate) stale_served: Counter,
}

/// The policies the cache last acted on, to tell which tools changed when the policy
/// table's generation moves.
#[derive(Default)]
struct PolicySnapshot {
    by_name: HashMap<Arc<str>, Arc<ToolPolicy>>,
}

pub(crate) struct CacheState {
    pub(crate) config: CacheConfig,
    pub(crate) store: Arc<dyn CacheStore>,
    pub(crate) counters: Counters,
    /// Bumped by `invalidate_all`; entries stamped with an older value are not served.
    all_epoch: AtomicU64,
    /// One slot per cached tool (tools the policy table knows: a bounded set).
    tools: RwLock<HashMap<Arc<str>, Arc<ToolSlot>>>,
    /// The policy table generation whose changes have been applied.
    seen_generation: AtomicU64,
    snapshot: Mutex<PolicySnapshot>,
}

impl fmt::Debug for CacheState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheState")
            .field("config", &self.config)
            .field("store", &self.store)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// What a cacheable call needs for its lookup.
pub(crate) struct Plan {
    pub(crate) key: CallKey,
    pub(crate) ttl: Duration,
    pub(crate) generation: u64,
}

/// The outcome of a lookup.
pub(crate) enum Decision {
    /// Served from the cache.
    Hit(CallToolResponse),
    /// Call the inner service, then maybe store its result.
    Miss(Fill),
}

/// What a miss needs to store the inner service's result when it comes back.
pub(crate) struct Fill {
    state: Arc<CacheState>,
    key: CallKey,
    slot: Arc<ToolSlot>,
    tool_epoch: u64,
    all_epoch: u64,
    generation: u64,
    resolver: Arc<CallResolver>,
    received_at: Instant,
    ttl: Duration,
    cancellation: Option<CancellationToken>,
    /// An expired entry that may stand in for a failed refresh (stale-if-error).
    stale: Option<Arc<CacheEntry>>,
}

impl fmt::Debug for Fill {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fill")
            .field("key", &self.key)
            .field("tool", &self.slot.name)
            .field("ttl", &self.ttl)
            .field("stale", &self.stale.is_some())
            .finish_non_exhaustive()
    }
}

fn lock_read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn lock_write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl CacheState {
    pub(crate) fn new(config: CacheConfig, store: Arc<dyn CacheStore>) -> Self {
        Self {
            config,
            store,
            counters: Counters::default(),
            all_epoch: AtomicU64::new(0),
            tools: RwLock::new(HashMap::new()),
            seen_generation: AtomicU64::new(u64::MAX),
            snapshot: Mutex::new(PolicySnapshot::default()),
        }
    }

    /// The lookup plan of `call`, or `None` when the call is not cached at all: the cache
    /// is off, the tool is unknown, its policy has no TTL (or a zero one), or the call
    /// continues a multi-round-trip exchange (its policy then has no TTL).
    pub(crate) fn plan(&self, call: &ToolCall) -> Option<Plan> {
        if !self.config.enabled {
            return None;
        }
        let policy = call.policy();
        let ttl = policy.cache_ttl.filter(|ttl| !ttl.is_zero())?;
        // Only tools the policy table knows are cached: their number is bounded, whatever
        // names clients make up.
        policy.tool.as_ref()?;
        let generation = self.watch_policies(call.resolver());
        Some(Plan {
            key: call.key(),
            ttl,
            generation,
        })
    }

    /// Decides between a hit and a miss for `call`, given what the store found.
    pub(crate) fn decide(
        self: &Arc<Self>,
        found: Option<Arc<CacheEntry>>,
        call: &ToolCall,
        plan: Plan,
    ) -> Decision {
        let now = call.received_at();
        let all_epoch = self.all_epoch.load(Ordering::Acquire);
        let mut stale = None;
        if let Some(entry) = found
            && entry.is_current(all_epoch)
        {
            if now < entry.expires_at() {
                self.counters.hits.add();
                return Decision::Hit(entry.response(now, self.config.mark_hits, false));
            }
            if now < entry.stale_until() {
                stale = Some(entry);
            }
        }
        self.counters.misses.add();
        let slot = self.slot(call);
        let tool_epoch = slot.epoch.load(Ordering::Acquire);
        Decision::Miss(Fill {
            state: Arc::clone(self),
            key: plan.key,
            slot,
            tool_epoch,
            all_epoch,
            generation: plan.generation,
            resolver: Arc::clone(call.resolver()),
            received_at: now,
            ttl: plan.ttl,
            cancellation: call.cancellation().cloned(),
            stale,
        })
    }

    /// The slot of `call`'s tool, made on the tool's first miss.
    fn slot(&self, call: &ToolCall) -> Arc<ToolSlot> {
        let name: &str = call.policy().tool.as_ref().map_or(call.name(), |(_, n)| n);
        if let Some(slot) = lock_read(&self.tools).get(name) {
            return Arc::clone(slot);
        }
        let name: Arc<str> = match &call.policy().tool {
            Some((_, n)) => Arc::clone(n),
            None => Arc::from(name),
        };
        Arc::clone(
            lock_write(&self.tools)
                .entry(Arc::clone(&name))
                .or_insert_with(|| {
                    Arc::new(ToolSlot {
                        name,
                        epoch: AtomicU64::new(0),
                    })
                }),
        )
    }

    /// Makes every cached result of `tool` unservable, then frees them.
    pub(crate) fn invalidate_tool(&self, tool: &str) {
        let slot = lock_read(&self.tools).get(tool).cloned();
        if let Some(slot) = slot {
            slot.epoch.fetch_add(1, Ordering::AcqRel);
            self.store.invalidate_tool(tool);
        }
    }

    /// Makes every cached result unservable, then frees them.
    pub(crate) fn invalidate_all(&self) {
        self.all_epoch.fetch_add(1, Ordering::AcqRel);
        self.store.invalidate_all();
    }

    /// The policy table's generation; when it moved since the last call, invalidates the
    /// tools whose policy changed (a tool list change re-derives them; added tools have
    /// nothing cached). One atomic compare per call otherwise.
    fn watch_policies(&self, resolver: &CallResolver) -> u64 {
        let generation = resolver.policies().generation();
        if generation != self.seen_generation.load(Ordering::Acquire) {
            self.policies_changed(resolver, generation);
        }
        generation
    }

    #[cold]
    fn policies_changed(&self, resolver: &CallResolver, generation: u64) {
        // Calls that see the new generation wait here until the invalidations it implies
        // are done, so none of them can be served an entry of a changed tool.
        let mut snapshot = self
            .snapshot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if self.seen_generation.load(Ordering::Acquire) == generation {
            return;
        }
        let current = resolver.policies().policies();
        let mut by_name = HashMap::with_capacity(current.len());
        for policy in current {
            let Some((_, name)) = &policy.tool else {
                continue;
            };
            if let Some(old) = snapshot.by_name.get(name)
                && !Arc::ptr_eq(old, &policy)
            {
                tracing::debug!(tool = %name, "tool policy changed; its cached results are invalidated");
                self.invalidate_tool(name);
            }
            by_name.insert(Arc::clone(name), policy);
        }
        snapshot.by_name = by_name;
        self.seen_generation.store(generation, Ordering::Release);
    }
}

/// Whether an expired result may answer a refresh that failed with `error`: only a
/// transient failure (the upstream was unavailable, the call timed out, the connection
/// closed), directly or as the last error of exhausted retries. Never a caller's mistake,
/// an authorization error, a rejection by a limit, or a cancellation.
pub(crate) fn may_stand_in_for(error: &ErrorData) -> bool {
    if error::is_transient(error) {
        return true;
    }
    error.code == error::codes::RETRIES_EXHAUSTED
        && error
            .data
            .as_ref()
            .and_then(|data| data.get("lastError"))
            .and_then(|last| serde_json::from_value::<ErrorData>(last.clone()).ok())
            .is_some_and(|last| error::is_transient(&last))
}

impl Fill {
    /// Takes the inner service's answer: stores a cacheable result, or, with
    /// stale-if-error, answers a refresh that failed transiently with the expired entry.
    pub(crate) fn complete(
        self,
        outcome: Result<CallToolResponse, ErrorData>,
    ) -> Result<CallToolResponse, ErrorData> {
        match outcome {
            Ok(CallToolResponse::Complete(result)) if result.is_error != Some(true) => {
                self.store(&result);
                Ok(CallToolResponse::Complete(result))
            }
            // An `isError` result is the tool's answer (it may be "access denied" for a
            // caller whose rights were just revoked): never papered over.
            Ok(CallToolResponse::Complete(failed)) => Ok(CallToolResponse::Complete(failed)),
            Err(error) if !may_stand_in_for(&error) => Err(error),
            Err(error) => match self.stale_stand_in() {
                Some(stale) => Ok(stale),
                None => Err(error),
            },
            // InputRequired, Task, and whatever rmcp adds: never cached.
            Ok(other) => Ok(other),
        }
    }

    fn is_cancelled(&self) -> bool {
        self.cancellation
            .as_ref()
            .is_some_and(CancellationToken::is_cancelled)
    }

    /// The stale entry's response, when there is one and the caller is still there.
    fn stale_stand_in(&self) -> Option<CallToolResponse> {
        let stale = self.stale.as_ref()?;
        if self.is_cancelled() {
            return None;
        }
        let state = &self.state;
        // The refresh may have taken a while: the stale answer's age is read now, not at
        // the call's arrival. This path only runs when a refresh failed.
        let now = Instant::now();
        if !stale.is_current(state.all_epoch.load(Ordering::Acquire)) {
            return None;
        }
        state.counters.stale_served.add();
        Some(stale.response(now, true, true))
    }

    fn store(&self, result: &rmcp::model::CallToolResult) {
        let state = &self.state;
        if self.is_cancelled() {
            return;
        }
        let weight = estimate_result_bytes(result);
        let weight = match u32::try_from(weight) {
            Ok(w) if u64::from(w) <= state.config.max_entry_bytes => w,
            _ => {
                state.counters.skipped_too_large.add();
                return;
            }
        };
        // Invalidated while the call ran: the result may predate the invalidation.
        if self.resolver.policies().generation() != self.generation
            || state.all_epoch.load(Ordering::Acquire) != self.all_epoch
            || self.slot.epoch.load(Ordering::Acquire) != self.tool_epoch
        {
            return;
        }
        let entry = CacheEntry::new(
            result.clone(),
            self.received_at,
            self.ttl,
            state.config.stale_if_error.unwrap_or(Duration::ZERO),
            weight,
            Stamp {
                tool: Arc::clone(&self.slot),
                tool_epoch: self.tool_epoch,
                all_epoch: self.all_epoch,
            },
        );
        state.store.insert(self.key, Arc::new(entry));
        state.counters.inserts.add();
    }
}
