//! The benchmark's constant-rate load generator (wrk2's idea; wrk2 is not packaged in
//! Debian): CONNECTIONS keep-alive connections on one thread, request k of connection i due
//! at `start + (k * CONNECTIONS + i) / RATE`, whatever the answers before it did. A request
//! whose connection was still waiting for an earlier answer when it fell due counts its
//! latency from when it was due, so a stall shows in the percentiles instead of slowing the
//! load (no coordinated omission); one sent on an idle connection counts from its sending,
//! so the generator's own timer slack (tokio's timers tick in milliseconds) is not charged
//! to the server. Limits: the generator is one thread (it reports the rate it reached), and
//! requests are released in millisecond batches; a server that falls behind is given 2 s
//! after the last request was due, and the rate reached shows how far it got.
//!
//! `bench_rate URL RATE SECONDS CONNECTIONS [-H "Name: value"]... [--tokens FILE FROM | --rotate FILE]`
//! `--tokens`: request n carries `Authorization: Bearer` with line FROM+n of FILE (each token
//! once); `--rotate`: with the lines of FILE in turn.
//! Prints one line of `key=value`: rate reached, answers, non-2xx, errors, latency
//! percentiles in microseconds, and `used` (token lines consumed).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Plan {
    address: String,
    /// The request up to the blank line, without it.
    head: String,
    tokens: Vec<String>,
    /// Tokens are used in turn rather than once each.
    rotate: bool,
    rate: f64,
    connections: usize,
    start: Instant,
    end: Instant,
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    ok: u64,
    non_2xx: u64,
    errors: u64,
    /// Highest request number sent, plus one.
    sent_up_to: usize,
}

/// The status of one complete answer at the front of `buf`, and its length; `None` when more
/// bytes are needed. Content-Length and chunked bodies (enough for the bench's servers).
fn answer(buf: &[u8]) -> Result<Option<(u16, usize)>, &'static str> {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| "head not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or("no status")?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| "bad content-length")?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            chunked = true;
        }
    }
    let body = head_end + 4;
    if chunked {
        return Ok(buf[body..]
            .windows(5)
            .position(|w| w == b"0\r\n\r\n")
            .map(|at| (status, body + at + 5)));
    }
    let total = body + length.unwrap_or(0);
    Ok((buf.len() >= total).then_some((status, total)))
}

async fn exchange(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    request: &[u8],
) -> Result<u16, String> {
    stream.write_all(request).await.map_err(|e| e.to_string())?;
    loop {
        if let Some((status, length)) = answer(buf)? {
            buf.drain(..length);
            return Ok(status);
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn connect(address: &str) -> Option<TcpStream> {
    let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(address))
        .await
        .ok()?
        .ok()?;
    stream.set_nodelay(true).ok()?;
    Some(stream)
}

async fn connection(i: usize, plan: Arc<Plan>) -> Tally {
    let mut tally = Tally::default();
    let mut stream = connect(&plan.address).await;
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut request = String::with_capacity(plan.head.len() + 1200);
    for k in 0.. {
        let n = k * plan.connections + i;
        let due = plan.start + Duration::from_secs_f64(n as f64 / plan.rate);
        // A server that cannot keep up is given 2 s past the end, not the whole backlog.
        if due >= plan.end || Instant::now() >= plan.end + Duration::from_secs(2) {
            break;
        }
        let idle = Instant::now() <= due;
        tokio::time::sleep_until(due.into()).await;
        let sent = if idle { Instant::now() } else { due };
        request.clear();
        request.push_str(&plan.head);
        if !plan.tokens.is_empty() {
            let at = if plan.rotate {
                n % plan.tokens.len()
            } else {
                n
            };
            let token = plan.tokens.get(at).map_or("exhausted", String::as_str);
            request.push_str("Authorization: Bearer ");
            request.push_str(token);
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        tally.sent_up_to = n + 1;
        let result = match stream.as_mut() {
            Some(s) => tokio::time::timeout(
                Duration::from_secs(5),
                exchange(s, &mut buf, request.as_bytes()),
            )
            .await
            .unwrap_or_else(|_| Err("timeout".into())),
            None => Err("not connected".into()),
        };
        match result {
            Ok(status) => {
                let us = sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                tally.latencies_us.push(us);
                if (200..300).contains(&status) {
                    tally.ok += 1;
                } else {
                    tally.non_2xx += 1;
                }
            }
            Err(_) => {
                tally.errors += 1;
                buf.clear();
                stream = connect(&plan.address).await;
            }
        }
    }
    tally
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: bench_rate URL RATE SECONDS CONNECTIONS [-H \"Name: value\"]... [--tokens FILE FROM]");
        std::process::exit(2);
    }
    let url = url::Url::parse(&args[1]).expect("URL");
    let rate: f64 = args[2].parse().expect("RATE");
    let seconds: f64 = args[3].parse().expect("SECONDS");
    let connections: usize = args[4].parse().expect("CONNECTIONS");
    let host = url.host_str().expect("host");
    let port = url.port_or_known_default().expect("port");
    let mut head = format!(
        "GET {} HTTP/1.1\r\nHost: {host}:{port}\r\n",
        &url[url::Position::BeforePath..]
    );
    let mut tokens = Vec::new();
    let mut rotate = false;
    let mut rest = args[5..].iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "-H" => {
                head.push_str(rest.next().expect("-H VALUE"));
                head.push_str("\r\n");
            }
            "--tokens" => {
                let file = rest.next().expect("--tokens FILE FROM");
                let from: usize = rest
                    .next()
                    .and_then(|f| f.parse().ok())
                    .expect("--tokens FILE FROM");
                let needed = (rate * seconds) as usize + connections;
                let text = std::fs::read_to_string(file).expect("token file");
                tokens = text
                    .lines()
                    .skip(from)
                    .take(needed)
                    .map(str::to_string)
                    .collect();
            }
            "--rotate" => {
                let text = std::fs::read_to_string(rest.next().expect("--rotate FILE"))
                    .expect("token file");
                tokens = text.lines().map(str::to_string).collect();
                rotate = true;
            }
            other => panic!("unknown argument {other}"),
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let start = Instant::now() + Duration::from_millis(200);
    let plan = Arc::new(Plan {
        address: format!("{host}:{port}"),
        head,
        tokens,
        rotate,
        rate,
        connections,
        start,
        end: start + Duration::from_secs_f64(seconds),
    });
    let tallies: Vec<Tally> = runtime.block_on(async {
        let tasks: Vec<_> = (0..connections)
            .map(|i| tokio::spawn(connection(i, plan.clone())))
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("connection task"));
        }
        out
    });
    let mut all: Vec<u32> = tallies
        .iter()
        .flat_map(|t| t.latencies_us.iter().copied())
        .collect();
    all.sort_unstable();
    let pct = |p: f64| -> u32 {
        if all.is_empty() {
            return 0;
        }
        let rank = ((p * all.len() as f64).ceil() as usize).clamp(1, all.len());
        all[rank - 1]
    };
    let sum = |f: fn(&Tally) -> u64| tallies.iter().map(f).sum::<u64>();
    println!(
        "rate={:.0} answers={} ok={} non2xx={} errors={} p50_us={} p99_us={} p999_us={} max_us={} used={}",
        all.len() as f64 / seconds,
        all.len(),
        sum(|t| t.ok),
        sum(|t| t.non_2xx),
        sum(|t| t.errors),
        pct(0.50),
        pct(0.99),
        pct(0.999),
        all.last().copied().unwrap_or(0),
        tallies.iter().map(|t| t.sent_up_to).max().unwrap_or(0),
    );
}
