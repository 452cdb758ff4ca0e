//! The gateway's own copies of its upstreams' lists and resource reads, kept as SEP-2549
//! allows: for the `ttlMs` the upstream gave, shared by every caller only when the upstream
//! said `public`, else per principal.

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use mcp_tower::Principal;
use mcp_tower_pool::{Listed, McpConnector, McpSession, Pool, UpstreamCallError};
use rmcp::{
    ErrorData, RoleServer,
    model::{CacheScope, ReadResourceResult, ServerCapabilities, ServerPeerInfo},
    service::RequestContext,
};
use tokio::time::Instant;

use super::forwarding::Forwarding;

/// Above this many copies of one kind, expired ones are dropped, then private ones.
const MAX_COPIES: usize = 4096;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Who a request is made for: a caller (its principal), or the gateway itself (its own
/// listing at start-up and after a change, for routing and policies).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Audience {
    /// A `public` answer: served to anyone.
    Everyone,
    /// A private answer, served only to this principal.
    Principal(Principal),
    /// A caller without a verified identity (with the stack's `anonymous = "bypass"`, the
    /// default): served public copies only; nothing private is ever held for it, since
    /// every anonymous caller would share it.
    Anonymous,
    /// A private answer to the gateway's own request: used for routing, never served.
    Gateway,
}

/// One kind of list the gateway merges (implemented next to the gateway's handler, for
/// tools, prompts, resources and resource templates).
pub(super) trait ListItem: Clone + Send + Sync + 'static {
    /// What the kind is called in logs.
    const KIND: &'static str;
    /// The list method (`tools/list`…), for its `[forward]` timeout.
    const METHOD: &'static str;
    /// Whether `capabilities` declare the kind.
    fn declared(capabilities: &ServerCapabilities) -> bool;
    /// Every page of the upstream's list, on behalf of `downstream`.
    fn fetch<'a>(
        session: &'a McpSession,
        downstream: Option<&'a RequestContext<RoleServer>>,
    ) -> impl Future<Output = Result<Listed<Self>, UpstreamCallError>> + Send + 'a;
}

/// An upstream's list as the gateway holds it.
#[derive(Debug)]
pub(super) struct Copy<T> {
    /// The list and its hint.
    pub(super) listed: Arc<Listed<T>>,
    /// When it was listed.
    pub(super) at: Instant,
    /// The change generation it was listed in.
    generation: u64,
}

impl<T> Clone for Copy<T> {
    fn clone(&self) -> Self {
        Self {
            listed: Arc::clone(&self.listed),
            at: self.at,
            generation: self.generation,
        }
    }
}

impl<T> Copy<T> {
    /// What is left of its `ttlMs` at `now`.
    pub(super) fn remaining(&self, now: Instant) -> Duration {
        self.listed
            .freshness()
            .saturating_sub(now.saturating_duration_since(self.at))
    }
}

/// What came of asking for one upstream's list.
#[derive(Debug)]
pub(super) enum Fetched<T> {
    /// The list, and whether it was listed just now (else a copy held).
    List(Copy<T>, bool),
    /// The upstream does not declare the kind.
    NotServed,
}

/// Copies by upstream and audience.
type HeldBy<T> = HashMap<(Arc<str>, Audience), Copy<T>>;

/// The copies of one kind of list, by upstream and audience.
#[derive(Debug)]
pub(super) struct Copies<T> {
    held: Mutex<HeldBy<T>>,
    /// One list request per upstream at a time: concurrent callers wait for it and share
    /// its answer (when public, or theirs).
    fetching: Mutex<HashMap<Arc<str>, Arc<tokio::sync::Mutex<()>>>>,
    /// Session keys whose last list failed, when, and in which change generation: not
    /// asked again before the minimum interval (unless something changed upstream since).
    failed: Mutex<HashMap<Arc<str>, (Instant, u64, String)>>,
    /// List requests sent upstream (every page counts once per list).
    relists: AtomicU64,
}

impl<T> Default for Copies<T> {
    fn default() -> Self {
        Self {
            held: Mutex::default(),
            fetching: Mutex::default(),
            failed: Mutex::default(),
            relists: AtomicU64::new(0),
        }
    }
}

/// How the copies are kept: the minimum interval between two lists of one upstream for
/// one audience (a `ttlMs` of 0, or none, does not make every call re-list), which is also
/// how long a failed list is remembered.
#[derive(Debug, Clone, Copy)]
pub(super) struct Keeping {
    pub(super) min_interval: Duration,
}

impl<T: ListItem> Copies<T> {
    /// How many lists were requested upstream so far.
    pub(super) fn relists(&self) -> u64 {
        self.relists.load(Ordering::Relaxed)
    }

    /// The error of the upstream's last list when it failed less than the minimum interval
    /// ago, in the current change generation: the upstream is not asked again before.
    fn failed_recently(
        &self,
        upstream: &Arc<str>,
        generation: u64,
        keeping: Keeping,
    ) -> Option<String> {
        let failed = lock(&self.failed);
        let (at, failed_in, error) = failed.get(upstream)?;
        (*failed_in == generation && at.elapsed() < keeping.min_interval).then(|| error.clone())
    }

    fn fresh(
        &self,
        upstream: &Arc<str>,
        who: Audience,
        generation: u64,
        now: Instant,
        keeping: Keeping,
    ) -> Option<Copy<T>> {
        let held = lock(&self.held);
        [Audience::Everyone, who]
            .iter()
            .filter_map(|audience| held.get(&(Arc::clone(upstream), *audience)))
            .find(|copy| {
                copy.generation == generation
                    && now.saturating_duration_since(copy.at)
                        < copy.listed.freshness().max(keeping.min_interval)
            })
            .cloned()
    }

    fn store(
        &self,
        upstream: &Arc<str>,
        who: Audience,
        private: bool,
        copy: Copy<T>,
        keeping: Keeping,
    ) {
        let audience = if private || copy.listed.is_private() {
            who
        } else {
            Audience::Everyone
        };
        if audience == Audience::Anonymous {
            return;
        }
        let mut held = lock(&self.held);
        if held.len() >= MAX_COPIES {
            let now = Instant::now();
            held.retain(|_, c| {
                now.saturating_duration_since(c.at) < c.listed.freshness().max(keeping.min_interval)
            });
            if held.len() >= MAX_COPIES {
                held.retain(|(_, audience), _| *audience == Audience::Everyone);
            }
        }
        if audience == Audience::Everyone {
            // A public list supersedes the private copies of the same upstream.
            held.retain(|(u, _), _| u != upstream);
        }
        held.insert((Arc::clone(upstream), audience), copy);
    }

    /// The upstream's list for `who`: a copy still fresh (listed in the current change
    /// `generation`,
    /// younger than its `ttlMs` or the minimum interval), else listed now on behalf of
    /// `downstream` over the pool's `session` key (the upstream's, or the principal's own
    /// for a per-principal upstream) — one request at a time per session key, so a burst
    /// of callers makes one. A failed list is remembered per session key for the minimum
    /// interval. `private`: held for `who` alone whatever the upstream's hint says.
    /// `seen` learns the upstream's handshake (capabilities) whenever a session is used.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn get(
        &self,
        pool: &Pool<McpConnector>,
        upstream: &Arc<str>,
        session: &Arc<str>,
        private: bool,
        who: Audience,
        downstream: Option<&RequestContext<RoleServer>>,
        generation: impl Fn() -> u64,
        keeping: Keeping,
        forwarding: &Forwarding,
        seen: impl Fn(&Arc<str>, Option<Arc<ServerPeerInfo>>),
    ) -> Result<Fetched<T>, String> {
        if let Some(copy) = self.fresh(upstream, who, generation(), Instant::now(), keeping) {
            return Ok(Fetched::List(copy, false));
        }
        if let Some(error) = self.failed_recently(session, generation(), keeping) {
            return Err(error);
        }
        let gate = Arc::clone(lock(&self.fetching).entry(Arc::clone(session)).or_default());
        let _turn = gate.lock().await;
        // Whoever held the gate may have listed it, or failed to: both are shared.
        if let Some(copy) = self.fresh(upstream, who, generation(), Instant::now(), keeping) {
            return Ok(Fetched::List(copy, false));
        }
        if let Some(error) = self.failed_recently(session, generation(), keeping) {
            return Err(error);
        }
        let mut listed_in = generation();
        let mut at = Instant::now();
        // Under the forwarding limit and the list method's timeout.
        let listed = forwarding
            .run(T::METHOD, async {
                let session = pool
                    .get(session)
                    .await
                    .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
                // Opening a session counts as a change: the list is of the generation after
                // it (a change announced while it is listed makes it stale again).
                listed_in = generation();
                at = Instant::now();
                let info = session.server_info();
                let declared = info.as_ref().is_some_and(|i| T::declared(&i.capabilities));
                seen(upstream, info);
                if !declared {
                    return Ok(None);
                }
                self.relists.fetch_add(1, Ordering::Relaxed);
                T::fetch(&session, downstream)
                    .await
                    .map(Some)
                    .map_err(|e| ErrorData::internal_error(e.to_string(), None))
            })
            .await
            .map_err(|e| e.message.into_owned());
        match listed {
            Ok(Some(listed)) => {
                lock(&self.failed).remove(session);
                let copy = Copy {
                    listed: Arc::new(listed),
                    at,
                    generation: listed_in,
                };
                self.store(upstream, who, private, copy.clone(), keeping);
                Ok(Fetched::List(copy, true))
            }
            Ok(None) => Ok(Fetched::NotServed),
            Err(error) => {
                lock(&self.failed).insert(
                    Arc::clone(session),
                    (Instant::now(), listed_in, error.clone()),
                );
                Err(error)
            }
        }
    }
}

/// The SEP-2549 hint of a list merged from several upstreams' copies: the smallest
/// remaining `ttlMs` of those that contributed, and `private` when any of them is private.
/// An upstream that could not be listed makes the whole immediately stale (the list is
/// incomplete).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct MergedHint {
    ttl: Option<Duration>,
    private: bool,
    incomplete: bool,
}

impl MergedHint {
    /// Adds one upstream's copy.
    pub(super) fn add<T>(&mut self, copy: &Copy<T>, now: Instant) {
        let remaining = copy.remaining(now);
        self.ttl = Some(self.ttl.map_or(remaining, |t| t.min(remaining)));
        self.private |= copy.listed.is_private();
    }

    /// An upstream that serves the kind could not be listed.
    pub(super) fn incomplete(&mut self) {
        self.incomplete = true;
    }

    /// `ttlMs` for the merged list (0 when nothing contributed, or something is missing).
    pub(super) fn ttl_ms(&self) -> u64 {
        match (self.incomplete, self.ttl) {
            (false, Some(ttl)) => u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            _ => 0,
        }
    }

    /// `cacheScope` for the merged list: private when any contribution is (or when nothing
    /// contributed: the conservative answer).
    pub(super) fn scope(&self) -> CacheScope {
        if self.private || self.ttl.is_none() {
            CacheScope::Private
        } else {
            CacheScope::Public
        }
    }
}

/// `resources/read` results held for their `ttlMs`, by upstream, URI and audience.
#[derive(Debug)]
pub(super) struct ReadCache {
    held: moka::sync::Cache<(Arc<str>, String, Audience), Arc<HeldRead>>,
    /// Reads that went upstream.
    pub(super) misses: AtomicU64,
    /// Reads answered from a copy.
    pub(super) hits: AtomicU64,
}

/// One held `resources/read` result.
#[derive(Debug)]
pub(super) struct HeldRead {
    result: ReadResourceResult,
    at: Instant,
    ttl: Duration,
}

struct ReadExpiry;

impl moka::Expiry<(Arc<str>, String, Audience), Arc<HeldRead>> for ReadExpiry {
    fn expire_after_create(
        &self,
        _key: &(Arc<str>, String, Audience),
        value: &Arc<HeldRead>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// The most a resource read may weigh in the gateway's copies, in bytes in all.
const READ_CACHE_BYTES: u64 = 32 * 1024 * 1024;

impl Default for ReadCache {
    fn default() -> Self {
        Self {
            held: moka::sync::Cache::builder()
                .max_capacity(READ_CACHE_BYTES)
                .weigher(|_key, held: &Arc<HeldRead>| {
                    let size = serde_json::to_vec(&held.result)
                        .map_or(u32::MAX, |v| u32::try_from(v.len()).unwrap_or(u32::MAX));
                    size.saturating_add(64)
                })
                .expire_after(ReadExpiry)
                .build(),
            misses: AtomicU64::new(0),
            hits: AtomicU64::new(0),
        }
    }
}

impl ReadCache {
    /// A held result for `uri` that `who` may be served, with its `ttlMs` set to what is
    /// left of it.
    pub(super) fn get(
        &self,
        upstream: &Arc<str>,
        uri: &str,
        who: Audience,
    ) -> Option<ReadResourceResult> {
        let now = Instant::now();
        for audience in [Audience::Everyone, who] {
            if let Some(held) = self
                .held
                .get(&(Arc::clone(upstream), uri.to_owned(), audience))
            {
                let age = now.saturating_duration_since(held.at);
                if age < held.ttl {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    let mut result = held.result.clone();
                    result.ttl_ms = Some(
                        u64::try_from(held.ttl.saturating_sub(age).as_millis()).unwrap_or(u64::MAX),
                    );
                    return Some(result);
                }
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Holds `result` when its hints allow: a `ttlMs` above 0, shared when `public` (and not
    /// `private`: a per-principal upstream's), held for `principal` alone when `private`; a result without a `cacheScope` (a legacy
    /// upstream) counts as private with a `ttlMs` of 0, so it is not held.
    pub(super) fn put(
        &self,
        upstream: &Arc<str>,
        uri: &str,
        who: Audience,
        private: bool,
        result: &ReadResourceResult,
        at: Instant,
    ) {
        let (Some(ttl_ms), Some(scope)) = (result.ttl_ms, result.cache_scope) else {
            return;
        };
        if ttl_ms == 0 {
            return;
        }
        let audience = match scope {
            CacheScope::Public if !private => Audience::Everyone,
            _ if who == Audience::Anonymous => return,
            _ => who,
        };
        let held = HeldRead {
            result: result.clone(),
            at,
            ttl: Duration::from_millis(ttl_ms),
        };
        self.held.insert(
            (Arc::clone(upstream), uri.to_owned(), audience),
            Arc::new(held),
        );
    }

    /// Drops every held read.
    pub(super) fn clear(&self) {
        self.held.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(ttl_ms: Option<u64>, scope: Option<CacheScope>, at: Instant) -> Copy<u8> {
        Copy {
            listed: Arc::new(Listed::new(vec![1], ttl_ms, scope)),
            at,
            generation: 0,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_merged_hint_is_the_smallest_remaining_ttl_and_private_wins() {
        let now = Instant::now();
        let mut hint = MergedHint::default();
        hint.add(&copy(Some(60_000), Some(CacheScope::Public), now), now);
        hint.add(&copy(Some(5_000), Some(CacheScope::Public), now), now);
        assert_eq!(hint.ttl_ms(), 5_000);
        assert_eq!(hint.scope(), CacheScope::Public);

        tokio::time::advance(Duration::from_secs(2)).await;
        let later = Instant::now();
        let mut hint = MergedHint::default();
        hint.add(&copy(Some(5_000), Some(CacheScope::Public), now), later);
        assert_eq!(hint.ttl_ms(), 3_000, "what is left of it");
        hint.add(&copy(Some(60_000), Some(CacheScope::Private), later), later);
        assert_eq!(hint.scope(), CacheScope::Private);
        assert_eq!(hint.ttl_ms(), 3_000);
        hint.add(&copy(None, None, later), later);
        assert_eq!(hint.ttl_ms(), 0, "a legacy upstream: immediately stale");
        assert_eq!(hint.scope(), CacheScope::Private);

        let mut missing = MergedHint::default();
        missing.add(&copy(Some(5_000), Some(CacheScope::Public), later), later);
        missing.incomplete();
        assert_eq!(missing.ttl_ms(), 0);
        assert_eq!(MergedHint::default().scope(), CacheScope::Private);
    }

    #[test]
    fn reads_are_held_per_scope_and_never_without_hints() {
        let cache = ReadCache::default();
        let upstream: Arc<str> = Arc::from("a");
        let alice = Audience::Principal(Principal::from_u128(1));
        let bob = Audience::Principal(Principal::from_u128(2));
        let now = Instant::now();
        let result = |ttl: Option<u64>, scope: Option<CacheScope>| {
            let mut r = ReadResourceResult::new(vec![]);
            r.ttl_ms = ttl;
            r.cache_scope = scope;
            r
        };
        cache.put(
            &upstream,
            "private://x",
            alice,
            false,
            &result(Some(60_000), Some(CacheScope::Private)),
            now,
        );
        assert!(cache.get(&upstream, "private://x", alice).is_some());
        assert!(
            cache.get(&upstream, "private://x", bob).is_none(),
            "never another principal's"
        );
        cache.put(
            &upstream,
            "public://x",
            alice,
            false,
            &result(Some(60_000), Some(CacheScope::Public)),
            now,
        );
        assert!(cache.get(&upstream, "public://x", bob).is_some());
        cache.put(
            &upstream,
            "legacy://x",
            alice,
            false,
            &result(None, None),
            now,
        );
        assert!(
            cache.get(&upstream, "legacy://x", alice).is_none(),
            "no hint: not held"
        );
        cache.put(
            &upstream,
            "zero://x",
            alice,
            false,
            &result(Some(0), Some(CacheScope::Public)),
            now,
        );
        assert!(
            cache.get(&upstream, "zero://x", alice).is_none(),
            "ttl 0: not held"
        );
        // Nothing private is held for an anonymous caller (all of them would share it);
        // public results are served to them.
        cache.put(
            &upstream,
            "anon://x",
            Audience::Anonymous,
            false,
            &result(Some(60_000), Some(CacheScope::Private)),
            now,
        );
        assert!(
            cache
                .get(&upstream, "anon://x", Audience::Anonymous)
                .is_none()
        );
        assert!(
            cache
                .get(&upstream, "public://x", Audience::Anonymous)
                .is_some()
        );
    }
}
