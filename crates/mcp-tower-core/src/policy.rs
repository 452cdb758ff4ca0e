//! What each layer may do with a tool: [`ToolPolicy`], resolved once per tool into a
//! [`PolicyTable`] and read per call with one hash lookup.
//!
//! Defaults come from the tool's MCP annotations:
//!
//! | annotations | cache | dedup | retry |
//! |---|---|---|---|
//! | `readOnlyHint: true` | yes, default TTL | yes | yes |
//! | `idempotentHint: true` (not read-only) | no | yes | yes |
//! | anything else, or no annotations | no | no | no |
//!
//! A [`ToolOverride`] per tool name or glob ([`ToolPattern`]; from code, TOML or env
//! through the facade's `StackConfig`) changes any of it. A tool the table does not know
//! gets the most conservative policy: nothing cached, shared or retried.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use rmcp::model::{Tool, ToolAnnotations};
use serde::{Deserialize, Serialize};

use crate::{ToolPattern, ToolPatternError};

/// Whose calls may share a tool's results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheScope {
    /// Results are shared by every caller (weather, exchange rates).
    Public,
    /// Results are shared only among calls of the same principal. The default: a tool
    /// may read data its caller is allowed to see and another is not.
    #[default]
    Private,
}

/// Stack-wide defaults applied to every tool before its overrides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyDefaults {
    /// The cache TTL of a cacheable (read-only) tool without its own TTL. Default `60s`.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// The scope of a cacheable tool without its own. Default `private`.
    pub scope: CacheScope,
    /// The per-attempt timeout of a tool without its own. Default `30s`; unset for none.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

impl Default for PolicyDefaults {
    fn default() -> Self {
        Self {
            cache_ttl: Duration::from_secs(60),
            scope: CacheScope::Private,
            timeout: Some(Duration::from_secs(30)),
        }
    }
}

/// Per-tool changes to the policy its annotations give. Every field is optional; unset
/// fields keep the annotation default.
///
/// ```
/// use std::time::Duration;
/// use mcp_tower_core::{CacheScope, ToolOverride};
///
/// let weather = ToolOverride::default()
///     .with_cache_ttl(Duration::from_secs(300))
///     .with_scope(CacheScope::Public);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToolOverride {
    /// Turn caching on or off. Setting `cache_ttl` turns it on unless this is `false`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<bool>,
    /// The cache TTL (written like `30s`, `5m`).
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub cache_ttl: Option<Duration>,
    /// Public (shared by everyone) or private (per principal).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<CacheScope>,
    /// Let concurrent identical calls share one execution.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dedup: Option<bool>,
    /// Retry transient failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<bool>,
    /// Also retry `isError` results (only where `retry` is on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_on_tool_error: Option<bool>,
    /// At most this many calls of the tool at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<usize>,
    /// The per-attempt timeout.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

impl ToolOverride {
    /// Turns caching on or off.
    pub fn with_cache(mut self, cache: bool) -> Self {
        self.cache = Some(cache);
        self
    }
    /// Caches with this TTL.
    pub fn with_cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = Some(ttl);
        self
    }
    /// Sets the scope.
    pub fn with_scope(mut self, scope: CacheScope) -> Self {
        self.scope = Some(scope);
        self
    }
    /// Turns deduplication on or off.
    pub fn with_dedup(mut self, dedup: bool) -> Self {
        self.dedup = Some(dedup);
        self
    }
    /// Turns retries on or off.
    pub fn with_retry(mut self, retry: bool) -> Self {
        self.retry = Some(retry);
        self
    }
    /// Retries `isError` results too.
    pub fn with_retry_on_tool_error(mut self, on: bool) -> Self {
        self.retry_on_tool_error = Some(on);
        self
    }
    /// Limits the tool's concurrency.
    pub fn with_max_concurrency(mut self, max: usize) -> Self {
        self.max_concurrency = Some(max);
        self
    }
    /// Sets the per-attempt timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// This override with the fields it does not set taken from `fallback`, a less
    /// specific override of the same tool (how [`PolicyTable`] merges the overrides that
    /// match a tool, most specific first).
    ///
    /// Every field comes from the first of the two that sets it, except that `cache` and
    /// `cache_ttl` together decide *whether* the tool is cached: an override that sets
    /// `cache_ttl` without `cache` counts as `cache = true`. So a less specific
    /// `cache = false` does not turn off a more specific override's `cache_ttl`, while a
    /// more specific `cache = true` keeps a less specific override's `cache_ttl`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use mcp_tower_core::ToolOverride;
    ///
    /// let exact = ToolOverride::default().with_cache_ttl(Duration::from_secs(60));
    /// let glob = ToolOverride::default().with_cache(false).with_max_concurrency(4);
    /// let merged = exact.with_fallback(&glob);
    /// assert_eq!(merged.cache, Some(true), "the exact TTL turns caching on");
    /// assert_eq!(merged.cache_ttl, Some(Duration::from_secs(60)));
    /// assert_eq!(merged.max_concurrency, Some(4), "unset here, taken from the glob");
    /// ```
    pub fn with_fallback(self, fallback: &ToolOverride) -> Self {
        let decides = |o: &ToolOverride| o.cache.or(o.cache_ttl.map(|_| true));
        Self {
            cache: decides(&self).or_else(|| decides(fallback)),
            cache_ttl: self.cache_ttl.or(fallback.cache_ttl),
            scope: self.scope.or(fallback.scope),
            dedup: self.dedup.or(fallback.dedup),
            retry: self.retry.or(fallback.retry),
            retry_on_tool_error: self.retry_on_tool_error.or(fallback.retry_on_tool_error),
            max_concurrency: self.max_concurrency.or(fallback.max_concurrency),
            timeout: self.timeout.or(fallback.timeout),
        }
    }
}

/// A dense number for each tool a [`PolicyTable`] knows, stable for the table's life, so a
/// layer can keep per-tool state in a `Vec` rather than a map keyed by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ToolId(u32);

impl ToolId {
    /// The id as an index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// What the layers may do with one tool.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ToolPolicy {
    /// The tool's name and id when the table knows it; `None` for an unknown tool.
    pub tool: Option<(ToolId, Arc<str>)>,
    /// `Some(ttl)` when results may be cached.
    pub cache_ttl: Option<Duration>,
    /// Who may share cached results.
    pub scope: CacheScope,
    /// Whether concurrent identical calls may share one execution.
    pub dedup: bool,
    /// Whether transient failures may be retried.
    pub retry: bool,
    /// Whether `isError` results may be retried too (only with `retry`).
    pub retry_on_tool_error: bool,
    /// The tool's own concurrency limit.
    pub max_concurrency: Option<usize>,
    /// The per-attempt timeout.
    pub timeout: Option<Duration>,
}

impl ToolPolicy {
    /// The policy of a tool nobody described: nothing cached, shared or retried.
    pub fn conservative(defaults: &PolicyDefaults) -> Self {
        Self {
            tool: None,
            cache_ttl: None,
            scope: CacheScope::Private,
            dedup: false,
            retry: false,
            retry_on_tool_error: false,
            max_concurrency: None,
            timeout: defaults.timeout,
        }
    }

    /// The policy DESIGN §2's table gives a tool with these annotations.
    pub fn from_annotations(
        annotations: Option<&ToolAnnotations>,
        defaults: &PolicyDefaults,
    ) -> Self {
        let read_only = annotations.and_then(|a| a.read_only_hint) == Some(true);
        let idempotent = annotations.and_then(|a| a.idempotent_hint) == Some(true);
        let mut policy = Self::conservative(defaults);
        policy.scope = defaults.scope;
        if read_only {
            policy.cache_ttl = Some(defaults.cache_ttl);
            policy.dedup = true;
            policy.retry = true;
        } else if idempotent {
            policy.dedup = true;
            policy.retry = true;
        }
        policy
    }

    /// Applies an override on top of this policy.
    pub fn with_override(mut self, o: &ToolOverride, defaults: &PolicyDefaults) -> Self {
        match (o.cache, o.cache_ttl) {
            (Some(false), _) => self.cache_ttl = None,
            (_, Some(ttl)) => self.cache_ttl = Some(ttl),
            (Some(true), None) => {
                self.cache_ttl = Some(self.cache_ttl.unwrap_or(defaults.cache_ttl));
            }
            (None, None) => {}
        }
        if let Some(scope) = o.scope {
            self.scope = scope;
        }
        if let Some(dedup) = o.dedup {
            self.dedup = dedup;
        }
        if let Some(retry) = o.retry {
            self.retry = retry;
        }
        if let Some(on) = o.retry_on_tool_error {
            self.retry_on_tool_error = on;
        }
        if let Some(max) = o.max_concurrency {
            self.max_concurrency = Some(max);
        }
        if let Some(timeout) = o.timeout {
            self.timeout = Some(timeout);
        }
        self
    }

    /// Whether results may be cached.
    pub fn cacheable(&self) -> bool {
        self.cache_ttl.is_some()
    }

    /// The tool's name when known, else `"unknown"`: a bounded label for metrics.
    pub fn label(&self) -> &str {
        match &self.tool {
            Some((_, name)) => name,
            None => "unknown",
        }
    }

    /// The tool's id when the table knows it.
    pub fn tool_id(&self) -> Option<ToolId> {
        self.tool.as_ref().map(|(id, _)| *id)
    }
}

type ToolLookup = dyn Fn(&str) -> Option<Tool> + Send + Sync;

#[derive(Default, Clone)]
struct TableState {
    by_name: HashMap<Arc<str>, Arc<ToolPolicy>>,
    /// Tool names by [`ToolId`]; ids are never reused.
    names: Vec<Arc<str>>,
    /// The annotations each known tool was last seen with, to notice changes.
    seen: HashMap<Arc<str>, Option<ToolAnnotations>>,
}

/// Every tool's [`ToolPolicy`], resolved once per tool and read per call with one hash
/// lookup (lock-free: the table is swapped whole on the rare update).
///
/// Tools become known from a tool list ([`PolicyTable::with_tools`],
/// [`PolicyTable::observe_tools`] — `LayeredServer` feeds it every `tools/list` result),
/// from a lookup function (rmcp's `ServerHandler::get_tool`), or by being named exactly in
/// the overrides. Anything else resolves to the conservative policy without growing the
/// table, so made-up tool names cost nothing.
///
/// ```
/// use std::time::Duration;
/// use mcp_tower_core::{PolicyDefaults, PolicyTable, ToolOverride};
/// use rmcp::model::{Tool, ToolAnnotations};
///
/// let weather = Tool::new("weather", "Current weather", rmcp::object!({"type": "object"}))
///     .with_annotations(ToolAnnotations::new().read_only(true));
/// let table = PolicyTable::new(PolicyDefaults::default())
///     .with_override("weather", ToolOverride::default().with_cache_ttl(Duration::from_secs(300)))
///     .with_tools([weather]);
/// assert_eq!(table.resolve("weather").cache_ttl, Some(Duration::from_secs(300)));
/// assert!(!table.resolve("no_such_tool").cacheable());
/// ```
///
/// # Overrides by glob
///
/// An override's key may be a glob ([`ToolPattern`]: `*` matches any run of characters,
/// `?` one character), like `github__*`. A glob changes the policy of the known tools it
/// matches; it never makes a tool known, so a made-up name that matches it still gets the
/// conservative policy (nothing cached, whatever the glob says).
///
/// When several overrides match a tool, each field comes from the most specific one that
/// sets it ([`ToolOverride::with_fallback`]): the exact name first, then the globs in
/// [`ToolPattern::cmp_specificity`] order (more literal characters, then more `?`, then
/// fewer `*`, then the lexicographically smaller pattern). Globs are matched when a tool's
/// policy is derived (the tool becomes known, its annotations change, an override is
/// added), never per call: [`PolicyTable::resolve`] stays one hash lookup.
///
/// A glob sets each matching tool's own policy: `max_concurrency = 4` on `github__*` lets
/// every matching tool run 4 calls at once; it is not one limit shared by the group.
///
/// ```
/// use std::time::Duration;
/// use mcp_tower_core::{PolicyTable, ToolOverride};
/// use rmcp::model::{Tool, ToolAnnotations};
///
/// let read_only = |name: &'static str| {
///     Tool::new(name, "A GitHub tool", rmcp::object!({"type": "object"}))
///         .with_annotations(ToolAnnotations::new().read_only(true))
/// };
/// let five_minutes = Duration::from_secs(300);
/// let table = PolicyTable::default()
///     .with_override("github__*", ToolOverride::default()
///         .with_cache_ttl(five_minutes)
///         .with_max_concurrency(4))
///     .with_override("github__search", ToolOverride::default().with_cache_ttl(Duration::from_secs(10)))
///     .with_tools([read_only("github__search"), read_only("github__issues")]);
/// assert_eq!(table.resolve("github__issues").cache_ttl, Some(five_minutes));
/// let search = table.resolve("github__search");
/// assert_eq!(search.cache_ttl, Some(Duration::from_secs(10)), "the exact name wins");
/// assert_eq!(search.max_concurrency, Some(4), "a field it does not set comes from the glob");
/// assert!(!table.resolve("github__made_up").cacheable(), "globs make no tool known");
/// ```
pub struct PolicyTable {
    defaults: PolicyDefaults,
    /// Overrides by exact tool name.
    overrides: BTreeMap<String, ToolOverride>,
    /// Overrides by glob, most specific first ([`ToolPattern::cmp_specificity`]).
    globs: Vec<(ToolPattern, ToolOverride)>,
    state: ArcSwap<TableState>,
    update: Mutex<()>,
    unknown: Arc<ToolPolicy>,
    lookup: Option<Arc<ToolLookup>>,
    generation: AtomicU64,
}

impl fmt::Debug for PolicyTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.load();
        f.debug_struct("PolicyTable")
            .field("defaults", &self.defaults)
            .field("tools", &state.names)
            .field("overrides", &self.overrides.keys().collect::<Vec<_>>())
            .field(
                "glob_overrides",
                &self
                    .globs
                    .iter()
                    .map(|(p, _)| p.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("lookup", &self.lookup.is_some())
            .field("generation", &self.generation())
            .finish()
    }
}

impl Default for PolicyTable {
    fn default() -> Self {
        Self::new(PolicyDefaults::default())
    }
}

impl PolicyTable {
    /// An empty table with these defaults.
    pub fn new(defaults: PolicyDefaults) -> Self {
        let unknown = Arc::new(ToolPolicy::conservative(&defaults));
        Self {
            defaults,
            overrides: BTreeMap::new(),
            globs: Vec::new(),
            state: ArcSwap::from_pointee(TableState::default()),
            update: Mutex::new(()),
            unknown,
            lookup: None,
            generation: AtomicU64::new(0),
        }
    }

    /// Adds an override for `tool`, an exact tool name or a glob ([`ToolPattern`]); an
    /// override with the same key replaces the earlier one.
    ///
    /// A tool named exactly in an override is known to the table even before any tool list
    /// mentions it (its base policy is then the conservative one). A glob applies to the
    /// known tools it matches and makes none known.
    ///
    /// # Panics
    ///
    /// If `tool` is not a valid key ([`ToolPattern::parse`]: empty, with `**`, or with a
    /// reserved character). [`PolicyTable::try_with_override`] returns the error instead;
    /// the facade's `StackConfig` rejects such keys before building a table.
    pub fn with_override(self, tool: impl Into<String>, o: ToolOverride) -> Self {
        let tool: String = tool.into();
        match self.try_with_override(tool.as_str(), o) {
            Ok(table) => table,
            Err(error) => panic!("invalid tool override key {tool:?}: {error}"),
        }
    }

    /// Adds an override for `tool` like [`PolicyTable::with_override`], or says why `tool`
    /// is not a valid key.
    pub fn try_with_override(
        mut self,
        tool: impl Into<String>,
        o: ToolOverride,
    ) -> Result<Self, ToolPatternError> {
        let name: String = tool.into();
        let pattern = ToolPattern::parse(&name)?;
        if pattern.is_glob() {
            self.globs.retain(|(p, _)| *p != pattern);
            self.globs.push((pattern, o));
            self.globs.sort_by(|(a, _), (b, _)| a.cmp_specificity(b));
            // Every known tool the glob matches changes; re-derive them all at once.
            self.rederive_all();
            return Ok(self);
        }
        self.overrides.insert(name.clone(), o);
        // Re-derive (keeping any annotations already seen), so overrides may be given
        // before or after the tools.
        self.upsert(&name, None, true);
        self.look_up_override(&name);
        Ok(self)
    }

    /// Adds every override of `overrides`.
    ///
    /// # Panics
    ///
    /// If a key is not valid, like [`PolicyTable::with_override`].
    pub fn with_overrides<'a>(
        mut self,
        overrides: impl IntoIterator<Item = (&'a String, &'a ToolOverride)>,
    ) -> Self {
        for (name, o) in overrides {
            self = self.with_override(name.clone(), o.clone());
        }
        self
    }

    /// Adds these tools (with their annotations).
    pub fn with_tools(self, tools: impl IntoIterator<Item = Tool>) -> Self {
        for tool in tools {
            self.upsert(&tool.name, tool.annotations.as_ref(), false);
        }
        self
    }

    /// Resolves names the table does not know through `lookup` (typically the handler's
    /// `get_tool`). Found tools are added; names it does not find are not remembered.
    ///
    /// Tools named only in an override are looked up here, once, so their annotations
    /// count from the first call (an override changes the policy the annotations give; it
    /// does not replace it).
    pub fn with_lookup(
        mut self,
        lookup: impl Fn(&str) -> Option<Tool> + Send + Sync + 'static,
    ) -> Self {
        self.lookup = Some(Arc::new(lookup));
        let names: Vec<String> = self.overrides.keys().cloned().collect();
        for name in names {
            self.look_up_override(&name);
        }
        self
    }

    /// Gives an overridden tool whose annotations have not been seen the annotations the
    /// lookup knows for it.
    fn look_up_override(&self, name: &str) {
        if self.state.load().seen.contains_key(name) {
            return;
        }
        if let Some(found) = self.lookup.as_ref().and_then(|lookup| lookup(name))
            && found.name == name
        {
            self.upsert(name, found.annotations.as_ref(), false);
        }
    }

    /// The stack-wide defaults.
    pub fn defaults(&self) -> &PolicyDefaults {
        &self.defaults
    }

    /// The override a tool named `tool` gets: its exact-name override merged with every
    /// glob that matches it, most specific first ([`ToolOverride::with_fallback`]); `None`
    /// when none applies.
    ///
    /// This computes the merge (it matches every glob), for diagnostics and tests; the hot
    /// path reads the policy derived from it once per tool ([`PolicyTable::resolve`]). A
    /// name the table does not know gets the conservative policy whatever this returns.
    pub fn effective_override(&self, tool: &str) -> Option<ToolOverride> {
        let mut merged = self.overrides.get(tool).cloned();
        for (pattern, o) in &self.globs {
            if pattern.matches(tool) {
                merged = Some(match merged {
                    Some(more_specific) => more_specific.with_fallback(o),
                    None => o.clone(),
                });
            }
        }
        merged
    }

    /// The policy of `tool`: its own when known, else the conservative one.
    pub fn resolve(&self, tool: &str) -> Arc<ToolPolicy> {
        if let Some(policy) = self.state.load().by_name.get(tool) {
            return Arc::clone(policy);
        }
        if let Some(found) = self.lookup.as_ref().and_then(|lookup| lookup(tool))
            && found.name == tool
        {
            return self.upsert(tool, found.annotations.as_ref(), false);
        }
        Arc::clone(&self.unknown)
    }

    /// The policy of `tool` if the table knows it (no lookup, no fallback).
    pub fn get(&self, tool: &str) -> Option<Arc<ToolPolicy>> {
        self.state.load().by_name.get(tool).cloned()
    }

    /// The policy given to unknown tools.
    pub fn unknown(&self) -> Arc<ToolPolicy> {
        Arc::clone(&self.unknown)
    }

    /// The names of every known tool, by [`ToolId`].
    pub fn tool_names(&self) -> Vec<Arc<str>> {
        self.state.load().names.clone()
    }

    /// Every known tool's policy, by [`ToolId`].
    pub fn policies(&self) -> Vec<Arc<ToolPolicy>> {
        let state = self.state.load();
        state
            .names
            .iter()
            .filter_map(|name| state.by_name.get(name).cloned())
            .collect()
    }

    /// Incremented whenever a known tool's policy changes or a tool is added, so a layer
    /// holding derived state (the cache) can tell the tool list changed.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Learns from a tool list (a `tools/list` result, or an upstream's). New tools are
    /// added, tools whose annotations changed are re-derived; tools absent from `tools`
    /// are kept (a list may be one page). Returns whether anything changed.
    pub fn observe_tools<'a>(&self, tools: impl IntoIterator<Item = &'a Tool>) -> bool {
        let mut changed = false;
        for tool in tools {
            let state = self.state.load();
            let same = match state.seen.get(tool.name.as_ref()) {
                Some(seen) => seen.as_ref() == tool.annotations.as_ref(),
                None => false,
            };
            if !same {
                drop(state);
                self.upsert(&tool.name, tool.annotations.as_ref(), false);
                changed = true;
            }
        }
        changed
    }

    fn upsert(
        &self,
        name: &str,
        annotations: Option<&ToolAnnotations>,
        from_override: bool,
    ) -> Arc<ToolPolicy> {
        // Writers are rare (start-up, tool list changes); serialize them and swap the
        // table whole so readers never lock.
        let _guard = self
            .update
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut next = TableState::clone(&self.state.load());
        let policy = self.derive(&mut next, name, annotations, from_override);
        self.state.store(Arc::new(next));
        self.generation.fetch_add(1, Ordering::AcqRel);
        policy
    }

    /// Re-derives every known tool's policy (after a glob override was added), keeping
    /// their ids and the annotations seen.
    fn rederive_all(&self) {
        let _guard = self
            .update
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut next = TableState::clone(&self.state.load());
        if next.names.is_empty() {
            return;
        }
        for name in next.names.clone() {
            self.derive(&mut next, &name, None, true);
        }
        self.state.store(Arc::new(next));
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Derives `name`'s policy into `state` (adding the tool if new): its annotations
    /// (these, unless `from_override`, else the ones last seen), then its overrides.
    fn derive(
        &self,
        state: &mut TableState,
        name: &str,
        annotations: Option<&ToolAnnotations>,
        from_override: bool,
    ) -> Arc<ToolPolicy> {
        let (id, key) = match state.by_name.get(name).and_then(|p| p.tool.clone()) {
            Some(known) => known,
            None => {
                let key: Arc<str> = Arc::from(name);
                state.names.push(Arc::clone(&key));
                (ToolId(state.names.len() as u32 - 1), key)
            }
        };
        if !from_override {
            state.seen.insert(Arc::clone(&key), annotations.cloned());
        }
        let annotations = state.seen.get(&key).cloned().flatten();
        let mut policy = ToolPolicy::from_annotations(annotations.as_ref(), &self.defaults);
        if let Some(o) = self.effective_override(name) {
            policy = policy.with_override(&o, &self.defaults);
        }
        policy.tool = Some((id, Arc::clone(&key)));
        let policy = Arc::new(policy);
        state.by_name.insert(key, Arc::clone(&policy));
        policy
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::object;

    fn tool(name: &'static str, annotations: Option<ToolAnnotations>) -> Tool {
        let t = Tool::new(name, "test tool", object!({"type": "object"}));
        match annotations {
            Some(a) => t.with_annotations(a),
            None => t,
        }
    }

    fn policies() -> PolicyTable {
        PolicyTable::new(PolicyDefaults::default()).with_tools([
            tool("read", Some(ToolAnnotations::new().read_only(true))),
            tool(
                "idem",
                Some(ToolAnnotations::new().read_only(false).idempotent(true)),
            ),
            tool(
                "destroy",
                Some(ToolAnnotations::new().read_only(false).destructive(true)),
            ),
            tool("plain", None),
            tool("open", Some(ToolAnnotations::new().open_world(true))),
        ])
    }

    #[test]
    fn an_override_only_tool_keeps_the_annotations_the_lookup_knows() {
        let lookup = |name: &str| {
            (name == "fx_rate")
                .then(|| tool("fx_rate", Some(ToolAnnotations::new().read_only(true))))
        };
        let timeout = ToolOverride::default().with_timeout(Duration::from_millis(10));
        // Override before the lookup (StackConfig then `serve`) and after it.
        let before = PolicyTable::new(PolicyDefaults::default())
            .with_override("fx_rate", timeout.clone())
            .with_override("absent", timeout.clone())
            .with_lookup(lookup);
        let after = PolicyTable::new(PolicyDefaults::default())
            .with_lookup(lookup)
            .with_override("fx_rate", timeout.clone());
        for table in [before, after] {
            let fx = table.resolve("fx_rate");
            assert!(fx.retry && fx.dedup && fx.cacheable(), "{fx:?}");
            assert_eq!(fx.timeout, Some(Duration::from_millis(10)));
        }
        // A name the lookup does not know keeps the conservative base plus its override.
        let table = PolicyTable::new(PolicyDefaults::default())
            .with_override("absent", timeout)
            .with_lookup(lookup);
        let absent = table.resolve("absent");
        assert!(!absent.retry && !absent.cacheable());
        assert_eq!(absent.timeout, Some(Duration::from_millis(10)));
    }

    #[test]
    fn annotation_defaults_follow_the_design_table() {
        let t = policies();
        let d = PolicyDefaults::default();
        let read = t.resolve("read");
        assert_eq!(read.cache_ttl, Some(d.cache_ttl));
        assert!(read.dedup && read.retry);
        assert_eq!(read.scope, CacheScope::Private);

        let idem = t.resolve("idem");
        assert_eq!(idem.cache_ttl, None);
        assert!(idem.dedup && idem.retry);

        for name in ["destroy", "plain", "open"] {
            let p = t.resolve(name);
            assert!(!p.cacheable() && !p.dedup && !p.retry, "{name}: {p:?}");
            assert!(p.tool.is_some(), "{name} is known");
        }
    }

    #[test]
    fn read_only_and_destructive_hints_conflict_resolves_to_read_only() {
        // `destructiveHint` is meaningful only when `readOnlyHint == false` (MCP spec).
        let t = PolicyTable::default().with_tools([tool(
            "odd",
            Some(ToolAnnotations::new().read_only(true).destructive(true)),
        )]);
        assert!(t.resolve("odd").cacheable());
    }

    #[test]
    fn unknown_tools_are_conservative_and_not_remembered() {
        let t = policies();
        let before = t.tool_names().len();
        for i in 0..1000 {
            let p = t.resolve(&format!("made_up_{i}"));
            assert!(p.tool.is_none());
            assert!(!p.cacheable() && !p.dedup && !p.retry);
            assert_eq!(p.label(), "unknown");
        }
        assert_eq!(t.tool_names().len(), before);
    }

    #[test]
    fn overrides_change_only_what_they_set() {
        let t = policies()
            .with_override(
                "read",
                ToolOverride::default()
                    .with_cache_ttl(Duration::from_secs(5))
                    .with_scope(CacheScope::Public),
            )
            .with_override("idem", ToolOverride::default().with_retry(false))
            .with_override("destroy", ToolOverride::default().with_max_concurrency(2))
            .with_override("configured_only", ToolOverride::default().with_cache(true));
        let read = t.resolve("read");
        assert_eq!(read.cache_ttl, Some(Duration::from_secs(5)));
        assert_eq!(read.scope, CacheScope::Public);
        assert!(read.dedup);
        let idem = t.resolve("idem");
        assert!(!idem.retry && idem.dedup);
        let destroy = t.resolve("destroy");
        assert_eq!(destroy.max_concurrency, Some(2));
        assert!(!destroy.cacheable());
        // A tool named only in configuration is known, with the override on top of the
        // conservative base.
        let configured = t.resolve("configured_only");
        assert_eq!(
            configured.cache_ttl,
            Some(PolicyDefaults::default().cache_ttl)
        );
        assert!(!configured.dedup);
        assert_eq!(configured.label(), "configured_only");
    }

    #[test]
    fn overrides_apply_whichever_comes_first() {
        let o = ToolOverride::default().with_cache(false);
        let a = PolicyTable::default()
            .with_override("read", o.clone())
            .with_tools([tool("read", Some(ToolAnnotations::new().read_only(true)))]);
        let b = PolicyTable::default()
            .with_tools([tool("read", Some(ToolAnnotations::new().read_only(true)))])
            .with_override("read", o);
        for t in [a, b] {
            let p = t.resolve("read");
            assert!(!p.cacheable());
            assert!(p.dedup, "the annotations still apply: {p:?}");
        }
    }

    #[test]
    fn lookup_resolves_unknown_names_once() {
        use std::sync::atomic::AtomicUsize;
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let t = PolicyTable::default().with_lookup(move |name| {
            counter.fetch_add(1, Ordering::SeqCst);
            (name == "late").then(|| tool("late", Some(ToolAnnotations::new().read_only(true))))
        });
        assert!(t.resolve("late").cacheable());
        assert!(t.resolve("late").cacheable());
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "found tools are remembered"
        );
        assert!(!t.resolve("nope").cacheable());
        assert!(!t.resolve("nope").cacheable());
        assert_eq!(
            calls.load(Ordering::SeqCst),
            3,
            "missing names are not remembered"
        );
    }

    #[test]
    fn observing_a_changed_list_updates_policies_and_generation() {
        let t = policies();
        let g0 = t.generation();
        assert!(!t.observe_tools(&[tool("read", Some(ToolAnnotations::new().read_only(true)))]));
        assert_eq!(t.generation(), g0);
        let id = t.resolve("read").tool_id();
        assert!(t.observe_tools(&[tool("read", Some(ToolAnnotations::new().read_only(false)))]));
        assert!(t.generation() > g0);
        let read = t.resolve("read");
        assert!(!read.cacheable());
        assert_eq!(read.tool_id(), id, "ids are stable");
        assert!(t.observe_tools(&[tool("new_tool", None)]));
        assert!(t.get("new_tool").is_some());
    }

    #[test]
    fn tool_ids_are_dense() {
        let t = policies();
        for (i, p) in t.policies().iter().enumerate() {
            assert_eq!(p.tool_id().map(ToolId::index), Some(i));
        }
    }

    fn read_only(name: &'static str) -> Tool {
        tool(name, Some(ToolAnnotations::new().read_only(true)))
    }

    const SECS: fn(u64) -> Duration = Duration::from_secs;

    /// `*`, `github__*` and `github__search`, given in `order`, with three read-only tools.
    fn layered(order: &[usize], tools_first: bool) -> PolicyTable {
        let overrides = [
            (
                "*",
                ToolOverride::default()
                    .with_scope(CacheScope::Public)
                    .with_retry(false)
                    .with_timeout(SECS(1)),
            ),
            (
                "github__*",
                ToolOverride::default()
                    .with_cache_ttl(SECS(300))
                    .with_scope(CacheScope::Private)
                    .with_max_concurrency(4),
            ),
            (
                "github__search",
                ToolOverride::default().with_cache_ttl(SECS(10)),
            ),
        ];
        let tools = [
            read_only("github__search"),
            read_only("github__issues"),
            read_only("slack__post"),
        ];
        let mut table = PolicyTable::default();
        if tools_first {
            table = table.with_tools(tools.clone());
        }
        for &i in order {
            let (key, o) = &overrides[i];
            table = table.with_override(*key, o.clone());
        }
        if !tools_first {
            table = table.with_tools(tools);
        }
        table
    }

    #[test]
    fn the_most_specific_override_wins_field_by_field() {
        let t = layered(&[0, 1, 2], false);
        let search = t.resolve("github__search");
        assert_eq!(search.cache_ttl, Some(SECS(10)), "exact beats github__*");
        assert_eq!(
            search.max_concurrency,
            Some(4),
            "unset by the exact: github__*"
        );
        assert_eq!(search.scope, CacheScope::Private, "github__* beats *");
        assert_eq!(search.timeout, Some(SECS(1)), "set only by *");
        assert!(
            !search.retry && search.dedup,
            "* turns retry off, dedup untouched"
        );
        assert_eq!(search.label(), "github__search");

        let issues = t.resolve("github__issues");
        assert_eq!(issues.cache_ttl, Some(SECS(300)));
        assert_eq!(issues.max_concurrency, Some(4));
        assert_eq!(issues.scope, CacheScope::Private);
        assert_eq!(issues.timeout, Some(SECS(1)));

        let slack = t.resolve("slack__post");
        assert_eq!(slack.cache_ttl, Some(PolicyDefaults::default().cache_ttl));
        assert_eq!(slack.scope, CacheScope::Public);
        assert_eq!(slack.max_concurrency, None);
        assert!(!slack.retry);

        // Neither the order of the overrides nor whether tools came first changes a thing.
        let reference: Vec<_> = t.policies();
        for (order, tools_first) in [
            (&[2, 1, 0][..], false),
            (&[1, 2, 0], true),
            (&[0, 2, 1], true),
        ] {
            assert_eq!(
                layered(order, tools_first).policies(),
                reference,
                "{order:?} {tools_first}"
            );
        }
    }

    #[test]
    fn cache_and_cache_ttl_decide_together() {
        let t = |glob: ToolOverride, exact: ToolOverride| {
            PolicyTable::default()
                .with_override("gh_*", glob)
                .with_override("gh_write", exact)
                .with_tools([tool("gh_write", None)])
                .resolve("gh_write")
                .cache_ttl
        };
        let on = ToolOverride::default().with_cache(true);
        let off = ToolOverride::default().with_cache(false);
        let ttl = |s| ToolOverride::default().with_cache_ttl(SECS(s));
        // A more specific TTL turns caching on over a less specific `cache = false`.
        assert_eq!(t(off.clone(), ttl(7)), Some(SECS(7)));
        // A more specific `cache = true` keeps a less specific TTL.
        assert_eq!(t(ttl(300), on), Some(SECS(300)));
        // A more specific `cache = false` wins over a less specific TTL.
        assert_eq!(t(ttl(300), off.clone()), None);
        // Both in one override: `false` wins, as without globs.
        assert_eq!(t(ttl(300), off.clone().with_cache_ttl(SECS(5))), None);
        // Between globs too: the more specific decides.
        let globs = PolicyTable::default()
            .with_override("*", ttl(300))
            .with_override("gh_*", off)
            .with_override("x*", ToolOverride::default().with_dedup(true))
            .with_tools([read_only("gh_read"), read_only("x_read")]);
        assert!(!globs.resolve("gh_read").cacheable());
        assert_eq!(globs.resolve("x_read").cache_ttl, Some(SECS(300)));
    }

    #[test]
    fn equally_specific_globs_are_ordered_by_text_not_declaration() {
        for flip in [false, true] {
            let mut overrides = vec![
                ("github__*", ToolOverride::default().with_cache_ttl(SECS(1))),
                ("*__search", ToolOverride::default().with_cache_ttl(SECS(2))),
                ("gith?b__*", ToolOverride::default().with_cache_ttl(SECS(3))),
            ];
            if flip {
                overrides.reverse();
            }
            let mut t = PolicyTable::default().with_tools([read_only("github__search")]);
            for (key, o) in overrides {
                t = t.with_override(key, o);
            }
            // `gith?b__*` has 7 literals, the others 8: it loses first. Between
            // `*__search` and `github__*`, `*` sorts before `g`.
            assert_eq!(t.resolve("github__search").cache_ttl, Some(SECS(2)));
        }
        // A later override with the same key replaces the earlier one.
        let t = PolicyTable::default()
            .with_override("a*", ToolOverride::default().with_cache_ttl(SECS(1)))
            .with_override("a*", ToolOverride::default().with_max_concurrency(2))
            .with_tools([tool("abc", None)]);
        let abc = t.resolve("abc");
        assert!(!abc.cacheable());
        assert_eq!(abc.max_concurrency, Some(2));
    }

    #[test]
    fn globs_make_no_tool_known() {
        let everything = ToolOverride::default()
            .with_cache(true)
            .with_scope(CacheScope::Public)
            .with_dedup(true)
            .with_retry(true)
            .with_max_concurrency(1);
        let t = policies()
            .with_override("*", everything.clone())
            .with_override("github__*", everything);
        assert!(t.resolve("read").cacheable(), "known tools get the glob");
        let (names, generation) = (t.tool_names().len(), t.generation());
        for i in 0..1000 {
            for name in [format!("github__made_up_{i}"), format!("made_up_{i}")] {
                let p = t.resolve(&name);
                assert!(p.tool.is_none(), "{name}");
                assert!(!p.cacheable() && !p.dedup && !p.retry, "{name}: {p:?}");
                assert_eq!(p.max_concurrency, None);
                assert_eq!(p.label(), "unknown");
            }
        }
        assert_eq!(t.tool_names().len(), names);
        assert_eq!(t.generation(), generation);
        assert!(t.effective_override("made_up").is_some(), "it would match");
    }

    #[test]
    fn globs_are_matched_when_a_policy_is_derived_not_per_call() {
        use crate::pattern::tests::matches_so_far;
        let t = layered(&[0, 1, 2], false)
            .with_lookup(|name| (name == "github__late").then(|| read_only("github__late")));
        let before = matches_so_far();
        let first = t.resolve("github__search");
        for _ in 0..1000 {
            assert!(Arc::ptr_eq(&t.resolve("github__search"), &first));
            assert!(!t.resolve("github__made_up").cacheable());
        }
        assert_eq!(
            matches_so_far(),
            before,
            "known and unknown names match no glob"
        );
        // A tool the lookup finds is derived once, with every glob tried once.
        let late = t.resolve("github__late");
        assert_eq!(late.cache_ttl, Some(SECS(300)));
        let derived = matches_so_far();
        assert_eq!(derived - before, 2, "`*` and `github__*`, once each");
        for _ in 0..1000 {
            assert!(Arc::ptr_eq(&t.resolve("github__late"), &late));
        }
        assert_eq!(matches_so_far(), derived);
    }

    #[test]
    fn observed_tools_get_globs_and_a_late_glob_keeps_ids() {
        let t = PolicyTable::default()
            .with_tools([read_only("github__search"), tool("other", None)])
            .with_override(
                "github__*",
                ToolOverride::default().with_cache_ttl(SECS(300)),
            );
        let id = t.resolve("github__search").tool_id();
        assert_eq!(t.resolve("github__search").cache_ttl, Some(SECS(300)));
        let g = t.generation();
        assert!(t.observe_tools(&[read_only("github__new")]));
        assert!(t.generation() > g);
        assert_eq!(t.resolve("github__new").cache_ttl, Some(SECS(300)));
        // The annotations change; the glob still applies on top.
        assert!(t.observe_tools(&[tool("github__search", None)]));
        assert_eq!(t.resolve("github__search").cache_ttl, Some(SECS(300)));
        assert!(!t.resolve("github__search").dedup, "annotations re-derived");
        assert_eq!(t.resolve("github__search").tool_id(), id);
        let t = t.with_override("oth*", ToolOverride::default().with_max_concurrency(3));
        assert_eq!(t.resolve("github__search").tool_id(), id, "ids are stable");
        assert_eq!(t.resolve("other").max_concurrency, Some(3));
        assert_eq!(t.tool_names().len(), 3);
    }

    #[test]
    fn invalid_override_keys_are_errors() {
        for (key, error) in [
            ("", ToolPatternError::Empty),
            ("github__**", ToolPatternError::DoubleStar),
            ("tool[0-9]", ToolPatternError::Reserved('[')),
        ] {
            let result = PolicyTable::default().try_with_override(key, ToolOverride::default());
            assert_eq!(result.err(), Some(error), "{key:?}");
        }
    }

    #[test]
    #[should_panic(expected = "invalid tool override key \"github__**\"")]
    fn with_override_panics_on_an_invalid_key() {
        let _ = PolicyTable::default().with_override("github__**", ToolOverride::default());
    }

    #[test]
    fn overrides_parse_from_toml() {
        let o: ToolOverride = toml::from_str(
            r#"
            cache_ttl = "5m"
            scope = "public"
            max_concurrency = 4
            timeout = "1500ms"
            "#,
        )
        .unwrap();
        assert_eq!(o.cache_ttl, Some(Duration::from_secs(300)));
        assert_eq!(o.scope, Some(CacheScope::Public));
        assert_eq!(o.timeout, Some(Duration::from_millis(1500)));
        let bad = toml::from_str::<ToolOverride>("cache_tll = \"5m\"");
        assert!(bad.is_err(), "a misspelt key is an error, not ignored");
    }
}
