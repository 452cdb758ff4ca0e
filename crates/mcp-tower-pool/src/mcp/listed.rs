//! [`Listed`]: every page of an upstream list, with the SEP-2549 cache hint that covers
//! them all.

use std::time::Duration;

use rmcp::model::CacheScope;

/// Every item of a paginated upstream list (`tools/list`, `prompts/list`,
/// `resources/list`, `resources/templates/list`), and the cache hint of the whole.
///
/// The hint merges the pages' as SEP-2549 asks of a client that follows a cursor: the
/// smallest `ttlMs`, and `private` when any page is private. A page that omits a hint
/// (a server on an older protocol version) leaves it absent: [`Listed::freshness`] and
/// [`Listed::is_private`] then take the conservative reading (immediately stale, private).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Listed<T> {
    /// The items, every page's in order.
    pub items: Vec<T>,
    /// The smallest `ttlMs` of the pages, `None` when a page had none.
    pub ttl_ms: Option<u64>,
    /// `Private` when a page was private, else `Public` when every page said so, else
    /// `None`.
    pub cache_scope: Option<CacheScope>,
}

impl<T> Listed<T> {
    /// A list from one page's items and hint.
    pub fn new(items: Vec<T>, ttl_ms: Option<u64>, cache_scope: Option<CacheScope>) -> Self {
        Self {
            items,
            ttl_ms,
            cache_scope,
        }
    }

    /// Adds the next page: its items after these, its hint merged in.
    pub fn extend(&mut self, page: Listed<T>) {
        self.items.extend(page.items);
        self.ttl_ms = match (self.ttl_ms, page.ttl_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            _ => None,
        };
        self.cache_scope = merge_scope(self.cache_scope, page.cache_scope);
    }

    /// How long the list may be considered fresh: its `ttlMs`, zero when absent.
    pub fn freshness(&self) -> Duration {
        Duration::from_millis(self.ttl_ms.unwrap_or(0))
    }

    /// Whether the list may be served only to the principal it was listed for: a private
    /// page, or no scope at all (a legacy server; the conservative reading).
    pub fn is_private(&self) -> bool {
        self.cache_scope != Some(CacheScope::Public)
    }
}

/// Two scopes merged: private wins, public only when both are.
pub fn merge_scope(a: Option<CacheScope>, b: Option<CacheScope>) -> Option<CacheScope> {
    match (a, b) {
        (Some(CacheScope::Private), _) | (_, Some(CacheScope::Private)) => {
            Some(CacheScope::Private)
        }
        (Some(CacheScope::Public), Some(CacheScope::Public)) => Some(CacheScope::Public),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_merge_to_the_smallest_ttl_and_private_wins() {
        let mut list = Listed::new(vec![1], Some(5_000), Some(CacheScope::Public));
        list.extend(Listed::new(vec![2], Some(1_000), Some(CacheScope::Public)));
        assert_eq!(list.items, vec![1, 2]);
        assert_eq!(list.ttl_ms, Some(1_000));
        assert!(!list.is_private());
        list.extend(Listed::new(vec![3], Some(9_000), Some(CacheScope::Private)));
        assert_eq!(list.ttl_ms, Some(1_000));
        assert!(list.is_private());
        list.extend(Listed::new(vec![], Some(9_000), Some(CacheScope::Public)));
        assert_eq!(list.cache_scope, Some(CacheScope::Private), "private stays");
    }

    #[test]
    fn a_page_without_hints_makes_the_list_stale_and_private() {
        let mut list = Listed::new(vec![1], Some(5_000), Some(CacheScope::Public));
        list.extend(Listed::new(vec![2], None, None));
        assert_eq!(list.ttl_ms, None);
        assert_eq!(list.freshness(), Duration::ZERO);
        assert_eq!(list.cache_scope, None);
        assert!(list.is_private());
        let legacy: Listed<u8> = Listed::new(vec![], None, None);
        assert!(legacy.is_private() && legacy.freshness().is_zero());
    }
}
