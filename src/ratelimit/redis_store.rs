//! The shared store: GCRA in a Lua script, so one atomic round trip decides and the TAT
//! lives in Redis for every instance. Redis's own clock is used, so instances with skewed
//! clocks still share one budget. Keys expire when they would be fresh again.

use std::time::Duration;

use super::gcra::{Decision, Rate};
use crate::redis_conn::{LazyRedis, RedisTarget};

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
    redis: LazyRedis,
    script: redis::Script,
}

impl RedisStore {
    pub fn new(target: &RedisTarget, timeout: Duration) -> Result<Self, String> {
        Ok(RedisStore {
            redis: LazyRedis::new(target, timeout)?,
            script: redis::Script::new(SCRIPT),
        })
    }

    /// Whether Redis answers a PING within the timeout.
    pub async fn ping(&self) -> bool {
        let pong = self
            .redis
            .run(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await })
            .await;
        matches!(pong, Ok(p) if p == "PONG")
    }

    /// True the first time `key` is seen within `ttl` by any instance (SET NX PX): DPoP
    /// proof ids, on a gateway whose only Redis is this one.
    pub async fn remember_once(&self, key: &str, ttl: Duration) -> Result<bool, String> {
        let key = format!("gatehouse:once:{key}");
        crate::otel::redis("SET", self.redis.set_once(&key, ttl)).await
    }

    /// One atomic check; an error means the store could not decide.
    pub async fn check(&self, key: &str, rate: Rate) -> Result<Decision, String> {
        let (interval, tolerance) = (
            (rate.interval / 1000).max(1),
            (rate.tolerance / 1000).max(1),
        );
        let check = self.redis.run(|mut c| {
            let mut invocation = self.script.key(key);
            invocation.arg(interval).arg(tolerance);
            async move { invocation.invoke_async(&mut c).await }
        });
        let v: Vec<i64> = crate::otel::redis("EVALSHA", check).await?;
        let micros = |i: usize| v.get(i).copied().unwrap_or(0).max(0) as u64 * 1000;
        Ok(Decision {
            allowed: v.first() == Some(&1),
            remaining: v.get(1).copied().unwrap_or(0).max(0) as u64,
            retry_after: micros(2),
            reset_after: micros(3),
        })
    }
}
