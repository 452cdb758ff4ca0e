//! Routing upstream progress notifications back to the downstream caller of each request.
//!
//! rmcp gives every upstream request its own progress token (it overwrites any the caller
//! sets), so a session keeps a table from that token to the downstream caller's peer and
//! progress token. A notification can arrive between sending the request and registering
//! its route (rmcp dispatches notifications in tasks of their own); such early
//! notifications are held (a few per session) and delivered at registration.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
};

use tokio::sync::Notify;

use rmcp::{
    Peer, RoleServer,
    model::{ProgressNotificationParam, ProgressToken},
};

use crate::pool::lock;

/// Notifications held for tokens not (yet) registered, per session.
const EARLY_CAPACITY: usize = 32;

/// How many times a finished request yields to let dispatched notifications run.
const SETTLE_YIELDS: usize = 4;

/// One notification being delivered (see [`ProgressRoutes::settle`]).
struct Delivering<'a> {
    routes: &'a ProgressRoutes,
    token: ProgressToken,
}

impl Drop for Delivering<'_> {
    fn drop(&mut self) {
        let mut table = lock(&self.routes.table);
        if let Some(count) = table.delivering.get_mut(&self.token) {
            *count -= 1;
            if *count == 0 {
                table.delivering.remove(&self.token);
            }
        }
        drop(table);
        self.routes.delivered.notify_waiters();
    }
}

/// Where one upstream request's progress goes: the downstream peer, with the token the
/// downstream caller chose.
#[derive(Debug, Clone)]
pub(crate) struct ProgressRoute {
    pub(crate) peer: Peer<RoleServer>,
    pub(crate) token: ProgressToken,
}

impl ProgressRoute {
    pub(crate) async fn deliver(&self, upstream: ProgressNotificationParam) {
        let mut downstream = upstream;
        downstream.progress_token = self.token.clone();
        if let Err(error) = self.peer.notify_progress(downstream).await {
            tracing::debug!(%error, "could not forward upstream progress to the caller");
        }
    }
}

#[derive(Debug, Default)]
struct Table {
    /// `None`: the request is ours, but its caller asked for no progress.
    routes: HashMap<ProgressToken, Option<ProgressRoute>>,
    early: VecDeque<ProgressNotificationParam>,
    /// Notifications being delivered to their caller, by token.
    delivering: HashMap<ProgressToken, usize>,
}

/// A session's progress routes.
#[derive(Debug, Default)]
pub(crate) struct ProgressRoutes {
    table: Mutex<Table>,
    delivered: Notify,
}

impl ProgressRoutes {
    /// Registers the route of the request whose upstream token is `token`; returns the
    /// notifications that arrived for it before.
    pub(crate) fn register(
        &self,
        token: ProgressToken,
        route: Option<ProgressRoute>,
    ) -> Vec<ProgressNotificationParam> {
        let mut table = lock(&self.table);
        let mut early = Vec::new();
        table.early.retain(|p| {
            if p.progress_token == token {
                early.push(p.clone());
                false
            } else {
                true
            }
        });
        table.routes.insert(token, route);
        early
    }

    /// Forgets the route of `token` (the request ended).
    pub(crate) fn unregister(&self, token: &ProgressToken) {
        lock(&self.table).routes.remove(token);
    }

    /// Delivers an upstream notification to its caller, or holds it until its route is
    /// registered.
    pub(crate) async fn forward(&self, params: ProgressNotificationParam) {
        let token = params.progress_token.clone();
        let route = {
            let mut table = lock(&self.table);
            match table.routes.get(&token) {
                Some(Some(route)) => {
                    let route = route.clone();
                    *table.delivering.entry(token.clone()).or_insert(0) += 1;
                    route
                }
                Some(None) => return,
                None => {
                    if table.early.len() == EARLY_CAPACITY {
                        table.early.pop_front();
                    }
                    table.early.push_back(params);
                    return;
                }
            }
        };
        // Counted until delivered, even if this future is dropped half-way.
        let _delivering = Delivering {
            routes: self,
            token,
        };
        route.deliver(params).await;
    }

    /// Waits (at most `bound`) until the notifications of `token` that rmcp dispatched
    /// before the request's answer have reached the caller.
    ///
    /// rmcp hands each notification to a task of its own and the answer straight to the
    /// request, so the last progress notifications can still be on their way when the
    /// answer arrives; answering the caller first would lose them (a client ignores
    /// progress after the answer). Yielding lets the dispatched tasks run; those already
    /// delivering are waited for.
    pub(crate) async fn settle(&self, token: &ProgressToken, bound: std::time::Duration) {
        for _ in 0..SETTLE_YIELDS {
            tokio::task::yield_now().await;
        }
        let _ = tokio::time::timeout(bound, async {
            loop {
                let delivered = self.delivered.notified();
                if !lock(&self.table).delivering.contains_key(token) {
                    return;
                }
                delivered.await;
            }
        })
        .await;
    }

    #[cfg(test)]
    pub(crate) fn routes(&self) -> usize {
        lock(&self.table).routes.len()
    }

    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        lock(&self.table).early.len()
    }
}

#[cfg(test)]
mod tests {
    use rmcp::model::NumberOrString;

    use super::*;

    fn token(n: i64) -> ProgressToken {
        ProgressToken(NumberOrString::Number(n))
    }

    #[tokio::test]
    async fn early_notifications_are_held_until_their_route_registers() {
        let routes = ProgressRoutes::default();
        routes
            .forward(ProgressNotificationParam::new(token(1), 1.0))
            .await;
        routes
            .forward(ProgressNotificationParam::new(token(2), 1.0))
            .await;
        routes
            .forward(ProgressNotificationParam::new(token(1), 2.0))
            .await;
        assert_eq!(routes.held(), 3);
        let early = routes.register(token(1), None);
        assert_eq!(
            early.iter().map(|p| p.progress).collect::<Vec<_>>(),
            [1.0, 2.0],
            "in arrival order"
        );
        assert_eq!(routes.held(), 1);
        // A registered request without a downstream token: dropped, not held.
        routes
            .forward(ProgressNotificationParam::new(token(1), 3.0))
            .await;
        assert_eq!(routes.held(), 1);
        routes.unregister(&token(1));
        assert_eq!(routes.routes(), 0);
    }

    #[tokio::test]
    async fn the_early_buffer_is_bounded() {
        let routes = ProgressRoutes::default();
        for i in 0..(EARLY_CAPACITY as i64 * 3) {
            routes
                .forward(ProgressNotificationParam::new(token(i), 1.0))
                .await;
        }
        assert_eq!(routes.held(), EARLY_CAPACITY);
        assert!(
            routes.register(token(0), None).is_empty(),
            "the oldest went first"
        );
    }
}
