//! [`UpstreamRouter`]: which upstream serves a tool (or prompt), and under which name.

use std::{collections::HashMap, sync::Arc};

use arc_swap::ArcSwap;

use super::config::NAMESPACE_SEPARATOR;

/// Maps the tool (and prompt) names a gateway exposes to (upstream, name on that
/// upstream).
///
/// Looked up in this order:
/// - the **catalog**: names the gateway exposes from the upstreams' lists
///   ([`learn`](Self::learn)) go to the upstream that listed them, whatever their shape
///   (a name's prefix is never re-parsed when the catalog knows the name);
/// - a **table** of explicit routes ([`with_route`](Self::with_route)): expose `search`
///   as `github`'s `search_code`, say;
/// - **namespaced** names `upstream__tool` (the default for every upstream):
///   `github__search` is tool `search` of upstream `github`. Upstream names never contain
///   `__`, so the first `__` splits;
/// - **unprefixed** upstreams ([`with_unprefixed`](Self::with_unprefixed)), whose names
///   are exposed as they are: a name learned from their lists
///   ([`learn_unprefixed`](Self::learn_unprefixed)) goes to the upstream that listed it;
///   with a single unprefixed upstream, every other name goes to it too (so it answers
///   for names it did not list, exactly as it would without the gateway).
///
/// A name of the shape `<namespaced upstream>__<rest>` belongs to that upstream: an
/// unprefixed upstream may not expose one ([`shadows`](Self::shadows) tells which upstream
/// it would shadow; the gateway leaves such a name out of its catalog).
///
/// Routing allocates nothing: it returns the upstream's shared name and a slice of the
/// name. Clones share the learned names.
///
/// ```
/// use mcp_tower_pool::UpstreamRouter;
///
/// let router = UpstreamRouter::namespaced(["github", "files"])
///     .with_route("search", "github", "search_code");
/// let (upstream, tool) = router.route("github__list_issues").unwrap();
/// assert_eq!((upstream.as_ref(), tool), ("github", "list_issues"));
/// let (upstream, tool) = router.route("search").unwrap();
/// assert_eq!((upstream.as_ref(), tool), ("github", "search_code"));
/// assert!(router.route("gitlab__search").is_none(), "unknown upstream");
/// assert_eq!(router.namespaced_name("files", "read"), "files__read");
///
/// // One upstream exposed without a prefix: the gateway is transparent for its names.
/// let router = UpstreamRouter::table().with_unprefixed("main");
/// let (upstream, tool) = router.route("echo").unwrap();
/// assert_eq!((upstream.as_ref(), tool), ("main", "echo"));
/// assert_eq!(router.exposed_name("main", "echo").as_deref(), Some("echo"));
/// ```
#[derive(Debug, Clone)]
pub struct UpstreamRouter {
    upstreams: HashMap<Arc<str>, Arc<str>>,
    table: HashMap<String, (Arc<str>, String)>,
    namespaced: bool,
    unprefixed: Vec<Arc<str>>,
    learned: Arc<ArcSwap<Learned>>,
}

/// The catalog's names: exposed name → (upstream, where its name upstream starts in the
/// exposed name).
type Learned = HashMap<String, (Arc<str>, usize)>;

impl UpstreamRouter {
    /// Routes `upstream__tool` names to these upstreams.
    pub fn namespaced<N: Into<Arc<str>>>(upstreams: impl IntoIterator<Item = N>) -> Self {
        let upstreams = upstreams
            .into_iter()
            .map(|n| {
                let n: Arc<str> = n.into();
                (Arc::clone(&n), n)
            })
            .collect();
        Self {
            upstreams,
            table: HashMap::new(),
            namespaced: true,
            unprefixed: Vec::new(),
            learned: Arc::default(),
        }
    }

    /// Routes only the table's names (no namespaced names); add routes with
    /// [`with_route`](Self::with_route) and unprefixed upstreams with
    /// [`with_unprefixed`](Self::with_unprefixed).
    pub fn table() -> Self {
        Self {
            upstreams: HashMap::new(),
            table: HashMap::new(),
            namespaced: false,
            unprefixed: Vec::new(),
            learned: Arc::default(),
        }
    }

    /// Exposes `upstream`'s tool `upstream_tool` as `tool` (looked up before namespaced
    /// names).
    pub fn with_route(
        mut self,
        tool: impl Into<String>,
        upstream: impl Into<Arc<str>>,
        upstream_tool: impl Into<String>,
    ) -> Self {
        let upstream: Arc<str> = upstream.into();
        let upstream = match self.upstreams.get(&upstream) {
            Some(known) => Arc::clone(known),
            None => upstream,
        };
        self.table
            .insert(tool.into(), (upstream, upstream_tool.into()));
        self
    }

    /// Exposes `upstream`'s names as they are, without a prefix (it is then no longer
    /// routed by `upstream__` names).
    pub fn with_unprefixed(mut self, upstream: impl Into<Arc<str>>) -> Self {
        let upstream: Arc<str> = upstream.into();
        self.upstreams.remove(&upstream);
        if !self.unprefixed.contains(&upstream) {
            self.unprefixed.push(upstream);
            self.unprefixed.sort_unstable();
        }
        self
    }

    /// The upstreams whose names are exposed without a prefix, sorted.
    pub fn unprefixed(&self) -> &[Arc<str>] {
        &self.unprefixed
    }

    /// Whether `upstream` is exposed without a prefix.
    pub fn is_unprefixed(&self, upstream: &str) -> bool {
        self.unprefixed.iter().any(|u| u.as_ref() == upstream)
    }

    /// Replaces the names learned from the unprefixed upstreams' lists: (name, upstream).
    /// A name listed by several upstreams goes to the first one given (the caller decides
    /// and reports the conflict); names of other upstreams are ignored. Replaces what
    /// [`learn`](Self::learn) learned too.
    pub fn learn_unprefixed<'a>(&self, names: impl IntoIterator<Item = (&'a str, &'a str)>) {
        self.learn(
            names
                .into_iter()
                .filter(|(_, upstream)| self.is_unprefixed(upstream))
                .map(|(name, upstream)| (name, upstream, name)),
        );
    }

    /// Replaces the catalog: (exposed name, upstream, its name upstream), as the gateway
    /// exposes the upstreams' lists. [`route`](Self::route) then sends each exposed name to
    /// the upstream that listed it, before any other rule. A name given twice goes to the
    /// first (the caller decides and reports the conflict); entries whose exposed name
    /// does not end with the upstream's name (table routes: the table knows them), or
    /// whose upstream the router does not know, are ignored.
    pub fn learn<'a>(&self, names: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>) {
        let mut learned = HashMap::new();
        for (exposed, upstream, original) in names {
            let Some(upstream) = self.known(upstream) else {
                continue;
            };
            let Some(start) = exposed.len().checked_sub(original.len()) else {
                continue;
            };
            if exposed.get(start..) != Some(original) {
                continue;
            }
            learned
                .entry(exposed.to_owned())
                .or_insert_with(|| (upstream, start));
        }
        self.learned.store(Arc::new(learned));
    }

    /// The router's own name of a namespaced or unprefixed upstream.
    fn known(&self, upstream: &str) -> Option<Arc<str>> {
        self.upstreams
            .get(upstream)
            .or_else(|| self.unprefixed.iter().find(|u| u.as_ref() == upstream))
            .cloned()
    }

    /// The namespaced upstream whose names `name` has the shape of (`beta` for
    /// `beta__drop_table`), when `name` is exposed by `upstream` without a prefix: such a
    /// name would shadow that upstream's tool of the same name, so it must not be exposed.
    /// `None` for a name of an upstream that is not unprefixed, or of no namespace.
    pub fn shadows(&self, upstream: &str, name: &str) -> Option<Arc<str>> {
        if !self.namespaced || !self.is_unprefixed(upstream) {
            return None;
        }
        let (prefix, _) = name.split_once(NAMESPACE_SEPARATOR)?;
        self.upstreams.get(prefix).cloned()
    }

    /// The upstream and upstream tool name of `tool`, or `None` if no upstream serves it.
    pub fn route<'a>(&'a self, tool: &'a str) -> Option<(Arc<str>, &'a str)> {
        if let Some((upstream, start)) = self.learned.load().get(tool)
            && let Some(upstream_tool) = tool.get(*start..)
        {
            return Some((Arc::clone(upstream), upstream_tool));
        }
        if let Some((upstream, upstream_tool)) = self.table.get(tool) {
            return Some((Arc::clone(upstream), upstream_tool));
        }
        if self.namespaced
            && let Some((prefix, rest)) = tool.split_once(NAMESPACE_SEPARATOR)
            && !rest.is_empty()
            && let Some(upstream) = self.upstreams.get(prefix)
        {
            return Some((Arc::clone(upstream), rest));
        }
        match self.unprefixed.as_slice() {
            [only] => Some((Arc::clone(only), tool)),
            _ => None,
        }
    }

    /// The name a gateway exposes `upstream`'s `tool` under, when namespaced.
    pub fn namespaced_name(&self, upstream: &str, tool: &str) -> String {
        format!("{upstream}{NAMESPACE_SEPARATOR}{tool}")
    }

    /// Whether `upstream__tool` names are routed.
    pub fn is_namespaced(&self) -> bool {
        self.namespaced
    }

    /// The table's routes: (exposed name, upstream, upstream tool).
    pub fn routes(&self) -> impl Iterator<Item = (&str, &Arc<str>, &str)> {
        self.table.iter().map(|(tool, (upstream, upstream_tool))| {
            (tool.as_str(), upstream, upstream_tool.as_str())
        })
    }

    /// The exposed name of `upstream`'s `tool`: its table name if it has one, else the
    /// name itself for an unprefixed upstream, else its namespaced name (if namespacing
    /// is on).
    pub fn exposed_name(&self, upstream: &str, tool: &str) -> Option<String> {
        if let Some((name, _, _)) = self
            .routes()
            .find(|(_, u, t)| u.as_ref() == upstream && *t == tool)
        {
            return Some(name.to_owned());
        }
        if self.is_unprefixed(upstream) {
            return Some(tool.to_owned());
        }
        (self.namespaced && self.upstreams.contains_key(upstream))
            .then(|| self.namespaced_name(upstream, tool))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_decides_before_the_prefix_is_parsed() {
        let r = UpstreamRouter::namespaced(["alpha", "beta", "x_"]).with_unprefixed("alpha");
        assert_eq!(r.route("beta__drop"), Some(("beta".into(), "drop")));
        // The catalog gives `beta__drop` to beta, `x___t` to `x_` (its first `__` would
        // say upstream `x`), and knows `plain` is alpha's.
        r.learn([
            ("beta__drop", "beta", "drop"),
            ("x___t", "x_", "t"),
            ("plain", "alpha", "plain"),
            ("renamed", "beta", "other"),
            ("ghost__t", "ghost", "t"),
        ]);
        assert_eq!(r.route("beta__drop"), Some(("beta".into(), "drop")));
        assert_eq!(r.route("x___t"), Some(("x_".into(), "t")));
        assert_eq!(r.route("plain"), Some(("alpha".into(), "plain")));
        assert_eq!(
            r.route("renamed"),
            Some(("alpha".into(), "renamed")),
            "not learned"
        );
        assert_eq!(
            r.route("ghost__t"),
            Some(("alpha".into(), "ghost__t")),
            "unknown upstream: not learned (the single unprefixed upstream takes the rest)"
        );
        // A catalog entry wins over the prefix: had alpha's `beta__drop` been admitted, it
        // would go to alpha, the upstream that listed it.
        r.learn([("beta__drop", "alpha", "beta__drop")]);
        assert_eq!(r.route("beta__drop"), Some(("alpha".into(), "beta__drop")));
    }

    #[test]
    fn namespaced_names_split_at_the_first_separator() {
        let r = UpstreamRouter::namespaced(["a", "b-2"]);
        assert_eq!(r.route("a__x"), Some(("a".into(), "x")));
        assert_eq!(
            r.route("a__x__y"),
            Some(("a".into(), "x__y")),
            "tools may contain the separator"
        );
        assert_eq!(r.route("b-2__t"), Some(("b-2".into(), "t")));
        for unroutable in ["a", "a__", "__x", "c__x", "", "ax"] {
            assert!(r.route(unroutable).is_none(), "{unroutable}");
        }
    }

    #[test]
    fn table_routes_win_and_table_only_routers_ignore_namespaces() {
        let r = UpstreamRouter::namespaced(["a"]).with_route("a__x", "a", "renamed");
        assert_eq!(r.route("a__x").map(|(_, t)| t), Some("renamed"));
        assert_eq!(r.exposed_name("a", "renamed").as_deref(), Some("a__x"));
        assert_eq!(r.exposed_name("a", "other").as_deref(), Some("a__other"));

        let t = UpstreamRouter::table().with_route("search", "github", "search_code");
        assert_eq!(t.route("search").map(|(u, _)| u), Some("github".into()));
        assert!(t.route("github__search_code").is_none());
        assert_eq!(t.exposed_name("github", "other"), None);
    }

    #[test]
    fn unprefixed_upstreams_route_learned_names_and_a_single_one_takes_the_rest() {
        let r = UpstreamRouter::namespaced(["a", "b", "c"])
            .with_unprefixed("b")
            .with_unprefixed("c");
        assert_eq!(r.unprefixed().len(), 2);
        assert!(
            r.route("b__x").is_none(),
            "unprefixed upstreams lose their prefix"
        );
        assert_eq!(r.route("a__x").map(|(u, _)| u), Some("a".into()));
        assert!(
            r.route("x").is_none(),
            "two unprefixed upstreams: only learned names"
        );
        r.learn_unprefixed([("x", "b"), ("x", "c"), ("y", "c"), ("z", "a")]);
        assert_eq!(r.clone().route("x"), Some(("b".into(), "x")), "first wins");
        assert_eq!(r.route("y").map(|(u, _)| u), Some("c".into()));
        assert!(
            r.route("z").is_none(),
            "a namespaced upstream's names are not learned"
        );
        assert_eq!(r.exposed_name("b", "x").as_deref(), Some("x"));
        assert_eq!(r.exposed_name("a", "x").as_deref(), Some("a__x"));
        assert_eq!(r.exposed_name("d", "x"), None, "unknown upstream");

        assert_eq!(r.shadows("b", "a__x"), Some("a".into()), "a's namespace");
        assert_eq!(
            r.shadows("b", "c__x"),
            None,
            "c is unprefixed: no namespace"
        );
        assert_eq!(
            r.shadows("a", "a__x"),
            None,
            "a namespaced upstream's own name"
        );
        assert_eq!(r.shadows("b", "x"), None);

        let single = UpstreamRouter::table().with_unprefixed("only");
        assert_eq!(single.route("anything"), Some(("only".into(), "anything")));
    }
}
