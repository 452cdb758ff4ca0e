//! [`Limits`]: what every service of one [`ConcurrencyLayer`](crate::ConcurrencyLayer)
//! shares — the global [`Limiter`], one `Limiter` per tool, and the configuration — and
//! [`Permits`], the permits a running call holds.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{Arc, Mutex, MutexGuard, OnceLock},
};

use mcp_tower_core::ToolPolicy;

use crate::{
    ConcurrencyConfig,
    limiter::{Limiter, Permit, UNLIMITED},
};

/// The layer's state, behind one `Arc`.
///
/// Aligned to a cache line so that the `Arc`'s reference counts, which every call changes
/// (each clone of the service, each running call), do not share a line with the fields
/// every call reads.
#[repr(align(64))]
pub(crate) struct Limits {
    pub(crate) config: ConcurrencyConfig,
    pub(crate) global: Arc<Limiter>,
    /// Tool limiters by `ToolId`: the hot path's lookup (an index, no hashing, no lock,
    /// no reference count).
    by_id: ToolTable,
    /// Tool limiters by name: the source of truth, for the handle and for a tool's first
    /// call. Entries are never removed.
    by_name: Mutex<BTreeMap<Arc<str>, Arc<Limiter>>>,
}

impl fmt::Debug for Limits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limits")
            .field("config", &self.config)
            .field("global", &self.global)
            .field("tools", &self.lock_names().len())
            .finish()
    }
}

/// A call's tool limiter, as found by [`Limits::tool`].
pub(crate) enum ToolLimiter<'a> {
    /// Found in the table by the tool's id.
    Indexed(u32, &'a Arc<Limiter>),
    /// Found by name (the table's slot holds a tool of another policy table).
    Owned(Arc<Limiter>),
}

impl ToolLimiter<'_> {
    pub(crate) fn limiter(&self) -> &Arc<Limiter> {
        match self {
            ToolLimiter::Indexed(_, limiter) => limiter,
            ToolLimiter::Owned(limiter) => limiter,
        }
    }

    pub(crate) fn into_arc(self) -> Arc<Limiter> {
        match self {
            ToolLimiter::Indexed(_, limiter) => Arc::clone(limiter),
            ToolLimiter::Owned(limiter) => limiter,
        }
    }

    /// How a running call refers to it, to return its permit.
    fn into_ref(self) -> ToolRef {
        match self {
            ToolLimiter::Indexed(index, _) => ToolRef::Indexed(index),
            ToolLimiter::Owned(limiter) => ToolRef::Owned(limiter),
        }
    }
}

impl Limits {
    pub(crate) fn new(config: ConcurrencyConfig) -> Self {
        Self {
            global: Arc::new(Limiter::new(None, config.max_in_flight)),
            config,
            by_id: ToolTable::default(),
            by_name: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock_names(&self) -> MutexGuard<'_, BTreeMap<Arc<str>, Arc<Limiter>>> {
        self.by_name
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The limiter of the call's tool; `None` for a tool the policy table does not know
    /// (unknown tools share only the global limit, and a made-up name costs no state).
    ///
    /// A known tool always has a limiter, unlimited unless its policy or the handle set a
    /// limit, so its in-flight gauge and peak are tracked and its limit can be changed at
    /// run time.
    #[inline]
    pub(crate) fn tool(&self, policy: &ToolPolicy) -> Option<ToolLimiter<'_>> {
        let (id, name) = policy.tool.as_ref()?;
        let index = id.index();
        if let Some(limiter) = self.by_id.get(index)
            // Ids are only unique within one policy table: check it is the same tool.
            && limiter.name().is_some_and(|n| Arc::ptr_eq(n, name) || n == name)
            && let Ok(index) = u32::try_from(index)
        {
            return Some(ToolLimiter::Indexed(index, limiter));
        }
        Some(self.register(index, name, policy.max_concurrency))
    }

    /// A tool's first call: finds or creates its limiter by name and publishes it by id.
    #[cold]
    #[inline(never)]
    fn register(&self, index: usize, name: &Arc<str>, max: Option<usize>) -> ToolLimiter<'_> {
        let limiter = self.named(name, max.unwrap_or(UNLIMITED));
        match (self.by_id.insert(index, limiter), u32::try_from(index)) {
            (Ok(indexed), Ok(index)) => ToolLimiter::Indexed(index, indexed),
            (Err(limiter), _) => ToolLimiter::Owned(limiter),
            (Ok(indexed), Err(_)) => ToolLimiter::Owned(Arc::clone(indexed)),
        }
    }

    /// The limiter named `name`, created with `limit` if there is none yet.
    pub(crate) fn named(&self, name: &Arc<str>, limit: usize) -> Arc<Limiter> {
        let mut by_name = self.lock_names();
        match by_name.get(name) {
            Some(limiter) => Arc::clone(limiter),
            None => {
                let limiter = Arc::new(Limiter::new(Some(Arc::clone(name)), limit));
                by_name.insert(Arc::clone(name), Arc::clone(&limiter));
                limiter
            }
        }
    }

    /// The limiter named `name`, if any call or the handle created one.
    pub(crate) fn find(&self, name: &str) -> Option<Arc<Limiter>> {
        self.lock_names().get(name).cloned()
    }

    /// Every tool's limiter, by name.
    pub(crate) fn tools(&self) -> Vec<Arc<Limiter>> {
        self.lock_names().values().cloned().collect()
    }
}

/// How a running call refers to its tool's limiter.
#[derive(Debug)]
enum ToolRef {
    Indexed(u32),
    Owned(Arc<Limiter>),
}

/// The permits a running call holds (the global one and, for a known tool, its tool's);
/// returned when dropped. One reference count for both: the tool's limiter is found again
/// by its index when the call ends.
#[derive(Debug)]
pub(crate) struct Permits {
    limits: Arc<Limits>,
    tool: Option<ToolRef>,
}

impl Permits {
    /// Wraps permits just taken with `try_take` from `limits.global` and from `tool`.
    #[inline]
    pub(crate) fn assume(limits: &Arc<Limits>, tool: Option<ToolLimiter<'_>>) -> Self {
        Self {
            limits: Arc::clone(limits),
            tool: tool.map(ToolLimiter::into_ref),
        }
    }

    /// Takes over a global permit and a tool permit held as [`Permit`]s (the slow path).
    pub(crate) fn from_permits(limits: &Arc<Limits>, global: Permit, tool: Option<Permit>) -> Self {
        // The global permit is returned through `limits.global` from now on.
        let _global: Option<Arc<Limiter>> = global.into_limiter();
        Self {
            limits: Arc::clone(limits),
            tool: tool.and_then(Permit::into_limiter).map(ToolRef::Owned),
        }
    }
}

impl Drop for Permits {
    fn drop(&mut self) {
        match &self.tool {
            Some(ToolRef::Indexed(index)) => {
                if let Some(limiter) = self.limits.by_id.get(*index as usize) {
                    limiter.release();
                }
            }
            Some(ToolRef::Owned(limiter)) => limiter.release(),
            None => {}
        }
        self.limits.global.release();
    }
}

/// Segments in [`ToolTable`]: segment `k` holds `FIRST_SEGMENT << k` slots, so 28 of them
/// cover every `u32` id.
const SEGMENTS: usize = 28;
const FIRST_SEGMENT: usize = 32;

type Segment = Box<[OnceLock<Arc<Limiter>>]>;

/// An append-only table of tool limiters by id: reads are two `Acquire` loads, slots are
/// filled once and never move, so a reference into it lives as long as the table.
struct ToolTable {
    segments: [OnceLock<Segment>; SEGMENTS],
}

impl Default for ToolTable {
    fn default() -> Self {
        Self {
            segments: std::array::from_fn(|_| OnceLock::new()),
        }
    }
}

/// The segment and offset of slot `index`.
fn locate(index: usize) -> (usize, usize) {
    let n = index / FIRST_SEGMENT + 1;
    let segment = (usize::BITS - 1 - n.leading_zeros()) as usize;
    (segment, index - FIRST_SEGMENT * ((1 << segment) - 1))
}

impl ToolTable {
    #[inline]
    fn get(&self, index: usize) -> Option<&Arc<Limiter>> {
        let (segment, offset) = locate(index);
        self.segments.get(segment)?.get()?.get(offset)?.get()
    }

    /// Fills slot `index` with `limiter`, or gives it back if the slot is taken by
    /// another one (or out of range).
    fn insert(&self, index: usize, limiter: Arc<Limiter>) -> Result<&Arc<Limiter>, Arc<Limiter>> {
        let (segment, offset) = locate(index);
        let Some(cell) = self.segments.get(segment) else {
            return Err(limiter);
        };
        let slots = cell.get_or_init(|| {
            (0..FIRST_SEGMENT << segment)
                .map(|_| OnceLock::new())
                .collect()
        });
        let Some(slot) = slots.get(offset) else {
            return Err(limiter);
        };
        let stored = slot.get_or_init(|| Arc::clone(&limiter));
        if Arc::ptr_eq(stored, &limiter) {
            Ok(stored)
        } else {
            Err(limiter)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_laid_out_in_doubling_segments() {
        assert_eq!(locate(0), (0, 0));
        assert_eq!(locate(31), (0, 31));
        assert_eq!(locate(32), (1, 0));
        assert_eq!(locate(95), (1, 63));
        assert_eq!(locate(96), (2, 0));
        let (segment, offset) = locate(u32::MAX as usize);
        assert!(segment < SEGMENTS);
        assert!(offset < FIRST_SEGMENT << segment);
    }

    #[test]
    fn the_table_fills_each_slot_once() {
        let table = ToolTable::default();
        assert!(table.get(1000).is_none());
        let a = Arc::new(Limiter::new(Some("a".into()), 1));
        let b = Arc::new(Limiter::new(Some("b".into()), 1));
        assert!(Arc::ptr_eq(table.insert(1000, Arc::clone(&a)).unwrap(), &a));
        assert!(table.insert(1000, Arc::clone(&b)).is_err(), "taken");
        assert!(Arc::ptr_eq(table.get(1000).unwrap(), &a));
        assert!(table.get(999).is_none());
        assert!(table.insert(5, b).is_ok());
    }
}
