//! One lazily opened, automatically reconnecting Redis connection, bounded by a timeout:
//! shared by the Redis-backed rate-limit and session stores.

use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::Mutex;

pub struct LazyRedis {
    client: redis::Client,
    connection: Mutex<Option<ConnectionManager>>,
    pub timeout: Duration,
}

impl LazyRedis {
    pub fn new(url: &str, timeout: Duration) -> Result<Self, String> {
        Ok(LazyRedis {
            client: redis::Client::open(url).map_err(|e| format!("redis_url: {e}"))?,
            connection: Mutex::new(None),
            timeout,
        })
    }

    /// The connection, opened on first use; a Redis that is down answers an error quickly.
    pub async fn connection(&self) -> Result<ConnectionManager, String> {
        let mut slot = self.connection.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout)
            .set_number_of_retries(0);
        let manager = tokio::time::timeout(
            self.timeout * 2,
            ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await
        .map_err(|_| "connecting to Redis timed out".to_string())?
        .map_err(|e| format!("connecting to Redis: {e}"))?;
        *slot = Some(manager.clone());
        Ok(manager)
    }

    /// Runs one command (or pipeline) within the timeout; after a dropped connection (Redis
    /// restarted) it is tried once more on the reconnected one.
    pub async fn run<T, F>(&self, f: impl Fn(ConnectionManager) -> F) -> Result<T, String>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let mut last = String::new();
        for _ in 0..2 {
            let conn = self.connection().await?;
            match tokio::time::timeout(self.timeout, f(conn)).await {
                Err(_) => return Err("Redis did not answer in time".to_string()),
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
}
