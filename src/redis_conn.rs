//! One lazily opened, automatically reconnecting Redis connection, bounded by a timeout:
//! shared by the Redis-backed rate-limit and session stores.
//!
//! Every call waits at most `timeout` in all: for a connect another call has started, for
//! its own connect, and for the answer. A connect that fails or times out makes calls fail
//! at once for [`RECONNECT_AFTER`] instead of each waiting out the timeout again, so a
//! Redis that drops packets costs one timeout per second, not one per request.

use std::sync::Mutex;
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::time::{timeout_at, Instant};

/// How long calls fail at once after a failed connect, before one of them tries again.
pub const RECONNECT_AFTER: Duration = Duration::from_secs(1);

pub struct LazyRedis {
    client: redis::Client,
    state: Mutex<State>,
    /// One connect at a time; the others wait for it (within their own timeout).
    connecting: tokio::sync::Mutex<()>,
    pub timeout: Duration,
}

#[derive(Default)]
struct State {
    /// The open connection, with a number that tells it from the one opened after it.
    connection: Option<(u64, ConnectionManager)>,
    opened: u64,
    /// Until when calls fail without trying (set by a failed connect).
    retry_at: Option<Instant>,
}

impl LazyRedis {
    pub fn new(url: &str, timeout: Duration) -> Result<Self, String> {
        Ok(LazyRedis {
            client: redis::Client::open(url).map_err(|e| format!("redis_url: {e}"))?,
            state: Mutex::new(State::default()),
            connecting: tokio::sync::Mutex::new(()),
            timeout,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The open connection; an error while connects are held back; `None`: connect now.
    fn open_connection(&self) -> Result<Option<(u64, ConnectionManager)>, String> {
        let state = self.state();
        if let Some(open) = &state.connection {
            return Ok(Some(open.clone()));
        }
        match state.retry_at {
            Some(at) if Instant::now() < at => {
                Err("Redis unreachable (the last connect failed; retrying shortly)".to_string())
            }
            _ => Ok(None),
        }
    }

    /// The connection, opened on first use (and after one was dropped).
    async fn connection(&self) -> Result<(u64, ConnectionManager), String> {
        if let Some(open) = self.open_connection()? {
            return Ok(open);
        }
        let _one = self.connecting.lock().await;
        // Opened, or failed, while this call waited.
        if let Some(open) = self.open_connection()? {
            return Ok(open);
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout)
            .set_number_of_retries(0);
        match ConnectionManager::new_with_config(self.client.clone(), config).await {
            Ok(manager) => {
                let mut state = self.state();
                state.opened += 1;
                let open = (state.opened, manager);
                state.connection = Some(open.clone());
                state.retry_at = None;
                Ok(open)
            }
            Err(e) => {
                self.hold_back_connects();
                Err(format!("connecting to Redis: {e}"))
            }
        }
    }

    fn hold_back_connects(&self) {
        let mut state = self.state();
        if state.connection.is_none() {
            state.retry_at = Some(Instant::now() + RECONNECT_AFTER);
        }
    }

    /// Forgets a connection that did not answer in time (a dead peer may never say so): the
    /// next call connects afresh.
    fn drop_connection(&self, number: u64) {
        let mut state = self.state();
        if state.connection.as_ref().is_some_and(|(n, _)| *n == number) {
            state.connection = None;
        }
    }

    /// Runs one command (or pipeline) within the timeout, connect included; after a dropped
    /// connection (Redis restarted) it is tried once more on the reconnected one.
    pub async fn run<T, F>(&self, f: impl Fn(ConnectionManager) -> F) -> Result<T, String>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let deadline = Instant::now() + self.timeout;
        let mut last = String::new();
        for _ in 0..2 {
            let (number, conn) = match timeout_at(deadline, self.connection()).await {
                Ok(open) => open?,
                Err(_) => {
                    self.hold_back_connects();
                    return Err("connecting to Redis timed out".to_string());
                }
            };
            match timeout_at(deadline, f(conn)).await {
                Err(_) => {
                    self.drop_connection(number);
                    return Err("Redis did not answer in time".to_string());
                }
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e))
                    if e.is_io_error()
                        || e.is_connection_dropped()
                        || e.is_connection_refusal() =>
                {
                    last = format!("Redis: {e}");
                }
                Ok(Err(e)) => return Err(format!("Redis: {e}")),
            }
        }
        Err(last)
    }

    /// Runs several calls as one: all of them within one timeout.
    pub async fn within<T>(
        &self,
        calls: impl std::future::Future<Output = Result<T, String>>,
    ) -> Result<T, String> {
        tokio::time::timeout(self.timeout, calls)
            .await
            .unwrap_or_else(|_| Err("Redis did not answer in time".to_string()))
    }
}
