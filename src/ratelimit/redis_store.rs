//! The shared store: GCRA in a Lua script, so one atomic round trip decides and the TAT
//! lives in Redis for every instance. Redis's own clock is used, so instances with skewed
//! clocks still share one budget. Keys expire when they would be fresh again.

use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::Mutex;

use super::gcra::{Decision, Rate};

const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
local ahead = new_tat - now
if ahead > tolerance then
  return {0, 0, ahead - tolerance, tat - now}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil(ahead / 1000) + 1)
return {1, math.floor((tolerance - ahead) / interval), 0, ahead}
"#;

pub struct RedisStore {
    client: redis::Client,
    connection: Mutex<Option<ConnectionManager>>,
    script: redis::Script,
    timeout: Duration,
}

impl RedisStore {
    pub fn new(url: &str, timeout: Duration) -> Result<Self, String> {
        Ok(RedisStore {
            client: redis::Client::open(url).map_err(|e| format!("redis_url: {e}"))?,
            connection: Mutex::new(None),
            script: redis::Script::new(SCRIPT),
            timeout,
        })
    }

    async fn connection(&self) -> Result<ConnectionManager, String> {
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

    /// Whether Redis answers a PING within the timeout.
    pub async fn ping(&self) -> bool {
        let Ok(mut conn) = self.connection().await else {
            return false;
        };
        let pong = tokio::time::timeout(
            self.timeout,
            redis::cmd("PING").query_async::<String>(&mut conn),
        )
        .await;
        matches!(pong, Ok(Ok(p)) if p == "PONG")
    }

    /// One atomic check; an error means the store could not decide.
    pub async fn check(&self, key: &str, rate: Rate) -> Result<Decision, String> {
        let mut conn = self.connection().await?;
        let mut invocation = self.script.key(key);
        invocation
            .arg((rate.interval / 1000).max(1))
            .arg((rate.tolerance / 1000).max(1));
        let result: Result<Vec<i64>, _> =
            tokio::time::timeout(self.timeout, invocation.invoke_async(&mut conn))
                .await
                .map_err(|_| "Redis did not answer in time".to_string())?;
        let v = result.map_err(|e| format!("Redis: {e}"))?;
        let micros = |i: usize| v.get(i).copied().unwrap_or(0).max(0) as u64 * 1000;
        Ok(Decision {
            allowed: v.first() == Some(&1),
            remaining: v.get(1).copied().unwrap_or(0).max(0) as u64,
            retry_after: micros(2),
            reset_after: micros(3),
        })
    }
}
