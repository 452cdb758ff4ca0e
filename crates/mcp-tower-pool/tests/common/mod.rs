//! A scripted [`Connector`] for the pool's tests: counts connects, pings and closes, can
//! delay or fail connects and pings, and lets a test close a connection.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use mcp_tower_pool::Connector;
use tokio::sync::watch;

/// What the connector has done, observable (and awaitable) by the test.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub connects_started: usize,
    pub connects: usize,
    pub connect_failures: usize,
    pub pings: usize,
    pub closes: usize,
}

#[derive(Debug)]
pub struct Script {
    counts: watch::Sender<Counts>,
    delay: Mutex<Duration>,
    /// Outcomes of the next connects: `false` fails.
    next_connects: Mutex<VecDeque<bool>>,
    fail_pings: AtomicBool,
    hang_pings: AtomicBool,
    next_id: AtomicUsize,
    /// Requests each connection may carry at once (`Connector::capacity`).
    capacity: AtomicUsize,
}

/// A test connection: a flag the test can set to make the pool see it closed.
#[derive(Debug)]
pub struct TestConn {
    pub id: usize,
    pub key: String,
    pub closed: AtomicBool,
}

impl TestConn {
    pub fn close_now(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }
}

#[derive(Debug, Clone)]
pub struct TestConnector {
    pub script: Arc<Script>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TestError(pub String);

impl TestConnector {
    pub fn new() -> Self {
        Self {
            script: Arc::new(Script {
                counts: watch::channel(Counts::default()).0,
                delay: Mutex::new(Duration::ZERO),
                next_connects: Mutex::new(VecDeque::new()),
                fail_pings: AtomicBool::new(false),
                hang_pings: AtomicBool::new(false),
                next_id: AtomicUsize::new(1),
                capacity: AtomicUsize::new(usize::MAX),
            }),
        }
    }

    /// Every connect takes `delay` (on tokio's clock).
    pub fn with_delay(self, delay: Duration) -> Self {
        *self.script.delay.lock().unwrap() = delay;
        self
    }

    /// Each connection carries at most `capacity` requests at once.
    pub fn with_capacity(self, capacity: usize) -> Self {
        self.script.capacity.store(capacity, Ordering::SeqCst);
        self
    }

    /// The next connects fail (`false`) or succeed (`true`), in order.
    pub fn script_connects(&self, outcomes: impl IntoIterator<Item = bool>) {
        self.script.next_connects.lock().unwrap().extend(outcomes);
    }

    pub fn fail_pings(&self, fail: bool) {
        self.script.fail_pings.store(fail, Ordering::SeqCst);
    }

    pub fn hang_pings(&self, hang: bool) {
        self.script.hang_pings.store(hang, Ordering::SeqCst);
    }

    pub fn counts(&self) -> Counts {
        *self.script.counts.borrow()
    }

    /// Waits until `condition` holds for the counts.
    pub async fn wait_for(&self, condition: impl Fn(&Counts) -> bool) -> Counts {
        let mut rx = self.script.counts.subscribe();
        *rx.wait_for(|c| condition(c)).await.unwrap()
    }

    fn bump(&self, f: impl FnOnce(&mut Counts)) {
        self.script.counts.send_modify(f);
    }
}

impl Connector for TestConnector {
    type Key = String;
    type Connection = TestConn;
    type Error = TestError;

    async fn connect(&self, key: &String) -> Result<TestConn, TestError> {
        self.bump(|c| c.connects_started += 1);
        let delay = *self.script.delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let ok = self
            .script
            .next_connects
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(true);
        if !ok || key.starts_with("down") {
            self.bump(|c| c.connect_failures += 1);
            return Err(TestError(format!("{key} refused the connection")));
        }
        self.bump(|c| c.connects += 1);
        Ok(TestConn {
            id: self.script.next_id.fetch_add(1, Ordering::SeqCst),
            key: key.clone(),
            closed: AtomicBool::new(false),
        })
    }

    fn is_closed(&self, conn: &TestConn) -> bool {
        conn.closed.load(Ordering::SeqCst)
    }

    fn capacity(&self, _conn: &TestConn) -> usize {
        self.script.capacity.load(Ordering::SeqCst)
    }

    async fn ping(&self, _conn: &TestConn) -> Result<(), TestError> {
        self.bump(|c| c.pings += 1);
        if self.script.hang_pings.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if self.script.fail_pings.load(Ordering::SeqCst) {
            return Err(TestError("no pong".into()));
        }
        Ok(())
    }

    async fn close(&self, conn: &TestConn) {
        conn.close_now();
        self.bump(|c| c.closes += 1);
    }
}
