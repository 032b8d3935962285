//! Rate-limit decisions: the in-memory GCRA store, and one Redis round trip (against a
//! `redis-server` this bench starts on a free loopback port, when one is installed).

use std::hint::black_box;
use std::process::{Command, Stdio};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use gatehouse::config::{LimitKey, RateLimitConfig, RateLimitStoreConfig, StoreKind};
use gatehouse::ratelimit::gcra::Rate;
use gatehouse::ratelimit::memory::MemoryStore;
use gatehouse::ratelimit::{Outcome, RateLimiter};

fn limit() -> RateLimitConfig {
    RateLimitConfig {
        name: "per-ip".into(),
        key: LimitKey::ClientIp,
        count: u64::MAX / 4,
        period: Duration::from_secs(1),
        burst: 1_000_000,
        ipv6_prefix: 128,
    }
}

fn bench(c: &mut Criterion) {
    let store = MemoryStore::new(1_000_000);
    let rate = Rate::new(1_000_000_000, Duration::from_secs(1), 1_000_000);
    let keys: Vec<String> = (0..1024)
        .map(|i| format!("per-ip\0198.51.{}.{}", i / 256, i % 256))
        .collect();
    let mut i = 0usize;
    c.bench_function("ratelimit/memory_decision", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            store.check(black_box(keys[i].as_bytes()), rate)
        })
    });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let limiter = RateLimiter::new(&RateLimitStoreConfig {
        kind: StoreKind::Memory,
        fail_open: true,
        timeout: Duration::from_millis(100),
        response_headers: false,
        max_keys: 1_000_000,
    })
    .unwrap();
    let l = limit();
    c.bench_function("ratelimit/limiter_memory", |b| {
        b.iter(|| runtime.block_on(limiter.check(&l, black_box("198.51.100.7"))))
    });

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let redis = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut redis) = redis else {
        eprintln!("redis-server not installed: skipping the Redis decision bench");
        return;
    };
    std::thread::sleep(Duration::from_millis(300));
    let shared = RateLimiter::new(&RateLimitStoreConfig {
        kind: StoreKind::Redis(Box::new(
            gatehouse::redis_conn::RedisTarget::from_url(&format!("redis://127.0.0.1:{port}/0"))
                .unwrap(),
        )),
        fail_open: false,
        timeout: Duration::from_millis(500),
        response_headers: false,
        max_keys: 1_000_000,
    })
    .unwrap();
    assert!(matches!(
        runtime.block_on(shared.check(&l, "warm-up")),
        Outcome::Decided(_)
    ));
    c.bench_function("ratelimit/redis_decision", |b| {
        b.iter(|| runtime.block_on(shared.check(&l, black_box("198.51.100.7"))))
    });
    let _ = redis.kill();
    let _ = redis.wait();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
