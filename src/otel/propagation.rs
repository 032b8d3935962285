//! W3C Trace Context (`traceparent`, `tracestate`): parsed strictly, written without
//! allocating more than the header value.

use std::fmt;

use http::{HeaderMap, HeaderName, HeaderValue};

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The longest `tracestate` passed on (the W3C limit is 32 members; 512 bytes is what the
/// spec says a vendor must at least propagate).
const MAX_TRACESTATE: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceId(pub [u8; 16]);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    pub fn random() -> TraceId {
        loop {
            let id: [u8; 16] = rand::random();
            if id != [0; 16] {
                return TraceId(id);
            }
        }
    }
}

impl SpanId {
    pub const ZERO: SpanId = SpanId([0; 8]);

    pub fn random() -> SpanId {
        loop {
            let id: [u8; 8] = rand::random();
            if id != [0; 8] {
                return SpanId(id);
            }
        }
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 8]
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// A `traceparent` header: version 00, or a later version read as 00 (W3C §3.2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traceparent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub flags: u8,
}

impl Traceparent {
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// Parses a header value; None for anything the spec says to ignore.
    pub fn parse(value: &[u8]) -> Option<Traceparent> {
        if value.len() < 55 {
            return None;
        }
        let version = hex_byte(&value[0..2])?;
        if version == 0xff {
            return None;
        }
        // Version 00 is exactly 55 bytes; a later one may append fields after a dash.
        if (version == 0 && value.len() != 55) || (value.len() > 55 && value[55] != b'-') {
            return None;
        }
        if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let mut trace_id = [0u8; 16];
        for (i, b) in trace_id.iter_mut().enumerate() {
            *b = hex_byte(&value[3 + 2 * i..5 + 2 * i])?;
        }
        let mut span_id = [0u8; 8];
        for (i, b) in span_id.iter_mut().enumerate() {
            *b = hex_byte(&value[36 + 2 * i..38 + 2 * i])?;
        }
        let flags = hex_byte(&value[53..55])?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Traceparent {
            trace_id: TraceId(trace_id),
            span_id: SpanId(span_id),
            flags,
        })
    }

    /// Version 00, with only the sampled flag kept.
    pub fn header_value(&self) -> HeaderValue {
        let mut out = [0u8; 55];
        out[..3].copy_from_slice(b"00-");
        write_hex(&mut out[3..35], &self.trace_id.0);
        out[35] = b'-';
        write_hex(&mut out[36..52], &self.span_id.0);
        out[52] = b'-';
        write_hex(&mut out[53..55], &[self.flags & 1]);
        // Hex digits and dashes are always a valid header value.
        HeaderValue::from_bytes(&out).unwrap_or(HeaderValue::from_static(""))
    }
}

/// The client's trace context: one valid `traceparent` (two are ambiguous: ignored), and its
/// `tracestate` when that is short and printable.
pub fn incoming(headers: &HeaderMap) -> Option<(Traceparent, Option<HeaderValue>)> {
    let mut values = headers.get_all(&TRACEPARENT).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let parent = Traceparent::parse(first.as_bytes())?;
    let mut states = headers.get_all(&TRACESTATE).iter();
    let state = match (states.next(), states.next()) {
        // Printable ASCII only (the W3C list syntax's characters): nothing else goes on.
        (Some(s), None)
            if s.len() <= MAX_TRACESTATE
                && !s.is_empty()
                && s.as_bytes().iter().all(|b| (0x20..0x7f).contains(b)) =>
        {
            Some(s.clone())
        }
        _ => None,
    };
    Some((parent, state))
}

/// One lower-case hex byte (the spec allows no upper case).
fn hex_byte(two: &[u8]) -> Option<u8> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    Some(digit(two[0])? << 4 | digit(two[1])?)
}

fn write_hex(out: &mut [u8], bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 15)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_and_writes_the_spec_example() {
        let tp = Traceparent::parse(GOOD.as_bytes()).unwrap();
        assert!(tp.sampled());
        assert_eq!(tp.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.span_id.to_string(), "00f067aa0ba902b7");
        assert_eq!(tp.header_value(), GOOD);
    }

    #[test]
    fn refuses_what_the_spec_says_to_ignore() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert_eq!(Traceparent::parse(bad.as_bytes()), None, "{bad:?}");
        }
        // A later version may carry more fields; the first four are read as version 00's.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more";
        assert!(Traceparent::parse(later.as_bytes()).is_some());
    }

    #[test]
    fn two_traceparents_are_none() {
        let mut h = HeaderMap::new();
        h.append(TRACEPARENT, HeaderValue::from_static(GOOD));
        assert!(incoming(&h).is_some());
        h.append(TRACEPARENT, HeaderValue::from_static(GOOD));
        assert!(incoming(&h).is_none());
    }
}
