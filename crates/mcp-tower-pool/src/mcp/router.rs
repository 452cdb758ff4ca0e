//! [`UpstreamRouter`]: which upstream serves a tool, and under which name.

use std::{collections::HashMap, sync::Arc};

use super::config::NAMESPACE_SEPARATOR;

/// Maps the tool names a gateway exposes to (upstream, tool on that upstream).
///
/// Two ways, combined:
/// - **namespaced** names `upstream__tool` (the default): `github__search` is tool `search`
///   of upstream `github`. Upstream names never contain `__`, so the first `__` splits.
/// - a **table** of explicit routes ([`with_route`](Self::with_route)), looked up first:
///   expose `search` as `github`'s `search_code`, say.
///
/// Routing allocates nothing: it returns the upstream's shared name and a slice of the
/// tool name.
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
/// ```
#[derive(Debug, Clone)]
pub struct UpstreamRouter {
    upstreams: HashMap<Arc<str>, Arc<str>>,
    table: HashMap<String, (Arc<str>, String)>,
    namespaced: bool,
}

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
        }
    }

    /// Routes only the table's names (no namespaced names); add routes with
    /// [`with_route`](Self::with_route).
    pub fn table() -> Self {
        Self {
            upstreams: HashMap::new(),
            table: HashMap::new(),
            namespaced: false,
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

    /// The upstream and upstream tool name of `tool`, or `None` if no upstream serves it.
    pub fn route<'a>(&'a self, tool: &'a str) -> Option<(&'a Arc<str>, &'a str)> {
        if let Some((upstream, upstream_tool)) = self.table.get(tool) {
            return Some((upstream, upstream_tool));
        }
        if !self.namespaced {
            return None;
        }
        let (prefix, rest) = tool.split_once(NAMESPACE_SEPARATOR)?;
        if rest.is_empty() {
            return None;
        }
        let upstream = self.upstreams.get(prefix)?;
        Some((upstream, rest))
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

    /// The exposed name of `upstream`'s `tool`: its table name if it has one, else its
    /// namespaced name (if namespacing is on).
    pub fn exposed_name(&self, upstream: &str, tool: &str) -> Option<String> {
        if let Some((name, _, _)) = self
            .routes()
            .find(|(_, u, t)| u.as_ref() == upstream && *t == tool)
        {
            return Some(name.to_owned());
        }
        self.namespaced
            .then(|| self.namespaced_name(upstream, tool))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaced_names_split_at_the_first_separator() {
        let r = UpstreamRouter::namespaced(["a", "b-2"]);
        assert_eq!(
            r.route("a__x").map(|(u, t)| (u.as_ref(), t)),
            Some(("a", "x"))
        );
        assert_eq!(
            r.route("a__x__y").map(|(u, t)| (u.as_ref(), t)),
            Some(("a", "x__y")),
            "tools may contain the separator"
        );
        assert_eq!(
            r.route("b-2__t").map(|(u, t)| (u.as_ref(), t)),
            Some(("b-2", "t"))
        );
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
        assert_eq!(t.route("search").map(|(u, _)| u.as_ref()), Some("github"));
        assert!(t.route("github__search_code").is_none());
        assert_eq!(t.exposed_name("github", "other"), None);
    }
}
