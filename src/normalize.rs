//! Request-target normalization, done once before routing and policy.
//!
//! Proxies and the apps behind them disagree about what `/a/%2e%2e/b`, `/a;x/b` or `/a%2fb`
//! mean; every such disagreement is a way around a path-based rule. So the gateway decides
//! one meaning here, and the upstream receives exactly the path that was judged: unreserved
//! escapes are decoded, dot segments resolved and `//` merged; forms that different servers
//! read differently (encoded `/` or `\`, NUL, `;` parameters, double encoding, invalid
//! UTF-8) are refused unless a route opts out.

/// Per-route opt-outs of the strict checks (all false by default = strict).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NormalizeOptions {
    pub allow_encoded_slash: bool,
    pub allow_backslash: bool,
    pub allow_semicolon: bool,
    pub allow_double_encoding: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("request target is not an absolute path")]
    NotOriginForm,
    #[error("request target is too long")]
    TooLong,
    #[error("encoded slash in path")]
    EncodedSlash,
    #[error("backslash in path")]
    Backslash,
    #[error("NUL byte in request target")]
    Nul,
    #[error("semicolon path parameter")]
    Semicolon,
    #[error("path is not valid UTF-8")]
    InvalidUtf8,
    #[error("malformed percent-encoding")]
    BadPercentEncoding,
    #[error("double percent-encoding")]
    DoubleEncoding,
    #[error("fragment in request target")]
    Fragment,
    #[error("control character in request target")]
    ControlCharacter,
}

impl PathError {
    /// A snake_case label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            PathError::NotOriginForm => "not_origin_form",
            PathError::TooLong => "too_long",
            PathError::EncodedSlash => "encoded_slash",
            PathError::Backslash => "backslash",
            PathError::Nul => "nul",
            PathError::Semicolon => "semicolon",
            PathError::InvalidUtf8 => "invalid_utf8",
            PathError::BadPercentEncoding => "bad_percent_encoding",
            PathError::DoubleEncoding => "double_encoding",
            PathError::Fragment => "fragment",
            PathError::ControlCharacter => "control_character",
        }
    }
}

/// The normalized origin-form target: `path` starts with '/', `query` is the raw query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedTarget {
    pub path: String,
    pub query: Option<String>,
}

impl NormalizedTarget {
    pub fn to_request_target(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }
}

pub const MAX_TARGET_LEN: usize = 8192;

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Characters RFC 3986 allows raw in a path segment besides unreserved ones.
fn is_raw_path_char(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' | b':' | b'@'
    )
}

/// Normalizes `raw` (path and query as received, origin form).
pub fn normalize_target(raw: &[u8], opts: NormalizeOptions) -> Result<NormalizedTarget, PathError> {
    if raw.len() > MAX_TARGET_LEN {
        return Err(PathError::TooLong);
    }
    if raw.first() != Some(&b'/') {
        return Err(PathError::NotOriginForm);
    }
    if raw.contains(&b'#') {
        return Err(PathError::Fragment);
    }
    let (path, query) = match raw.iter().position(|&b| b == b'?') {
        Some(i) => (&raw[..i], Some(&raw[i + 1..])),
        None => (raw, None),
    };
    let query = match query {
        Some(q) => {
            if q.iter().any(|&b| b < 0x20 || b == 0x7f) {
                return Err(PathError::ControlCharacter);
            }
            if contains_encoded_nul(q) {
                return Err(PathError::Nul);
            }
            // Non-ASCII bytes in the query are passed on, but must at least be UTF-8.
            Some(
                std::str::from_utf8(q)
                    .map_err(|_| PathError::InvalidUtf8)?
                    .to_string(),
            )
        }
        None => None,
    };

    // One segment at a time: decoded bytes (for UTF-8 validation) and the output form.
    let mut out = String::with_capacity(path.len() + 8);
    let mut segments: Vec<(usize, usize)> = Vec::with_capacity(8); // (start, end) in `out`
    let mut decoded: Vec<u8> = Vec::with_capacity(path.len());
    let mut segment = String::with_capacity(64);
    let mut i = 1; // skip the leading '/'
    let mut trailing_slash = false;
    loop {
        // Parse one segment up to the next raw '/' or the end.
        segment.clear();
        decoded.clear();
        let mut end_of_path = true;
        while i < path.len() {
            let b = path[i];
            match b {
                b'/' => {
                    end_of_path = false;
                    i += 1;
                    break;
                }
                b'%' => {
                    let (hi, lo) = match (path.get(i + 1), path.get(i + 2)) {
                        (Some(&h), Some(&l)) => (h, l),
                        _ => return Err(PathError::BadPercentEncoding),
                    };
                    let value = match (hex_value(hi), hex_value(lo)) {
                        (Some(h), Some(l)) => h << 4 | l,
                        _ => return Err(PathError::BadPercentEncoding),
                    };
                    i += 3;
                    match value {
                        0 => return Err(PathError::Nul),
                        b'/' if !opts.allow_encoded_slash => return Err(PathError::EncodedSlash),
                        b'\\' if !opts.allow_backslash => return Err(PathError::Backslash),
                        b';' if !opts.allow_semicolon => return Err(PathError::Semicolon),
                        b'%' if !opts.allow_double_encoding
                            && path.get(i).copied().and_then(hex_value).is_some()
                            && path.get(i + 1).copied().and_then(hex_value).is_some() =>
                        {
                            return Err(PathError::DoubleEncoding)
                        }
                        v if v < 0x20 || v == 0x7f => return Err(PathError::ControlCharacter),
                        v if is_unreserved(v) => segment.push(v as char),
                        b';' => segment.push(';'),
                        v => push_encoded(&mut segment, v),
                    }
                    decoded.push(value);
                }
                b'\\' => {
                    if !opts.allow_backslash {
                        return Err(PathError::Backslash);
                    }
                    segment.push_str("%5C");
                    decoded.push(b);
                    i += 1;
                }
                b';' => {
                    if !opts.allow_semicolon {
                        return Err(PathError::Semicolon);
                    }
                    segment.push(';');
                    decoded.push(b);
                    i += 1;
                }
                _ if b < 0x20 || b == 0x7f => return Err(PathError::ControlCharacter),
                _ if is_unreserved(b) || is_raw_path_char(b) => {
                    segment.push(b as char);
                    decoded.push(b);
                    i += 1;
                }
                _ => {
                    // Space, quotes, non-ASCII and the like travel percent-encoded.
                    push_encoded(&mut segment, b);
                    decoded.push(b);
                    i += 1;
                }
            }
        }
        if std::str::from_utf8(&decoded).is_err() {
            return Err(PathError::InvalidUtf8);
        }
        match segment.as_str() {
            "" => {
                // `//` merges; an empty last segment means the path ends with '/'.
                if end_of_path {
                    trailing_slash = true;
                }
            }
            "." => trailing_slash = end_of_path,
            ".." => {
                if let Some((start, _)) = segments.pop() {
                    out.truncate(start);
                }
                trailing_slash = end_of_path;
            }
            seg => {
                let start = out.len();
                out.push('/');
                out.push_str(seg);
                segments.push((start, out.len()));
                trailing_slash = false;
            }
        }
        if end_of_path {
            break;
        }
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(NormalizedTarget { path: out, query })
}

fn push_encoded(out: &mut String, b: u8) {
    out.push('%');
    out.push(HEX[(b >> 4) as usize] as char);
    out.push(HEX[(b & 0xf) as usize] as char);
}

fn contains_encoded_nul(q: &[u8]) -> bool {
    q.windows(3).any(|w| w == b"%00")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict(raw: &str) -> Result<String, PathError> {
        normalize_target(raw.as_bytes(), NormalizeOptions::default()).map(|t| t.to_request_target())
    }

    #[test]
    fn normalizes() {
        let cases = [
            ("/", "/"),
            ("/a", "/a"),
            ("/a/", "/a/"),
            ("/a/b/../c", "/a/c"),
            ("/a/../../b", "/b"),
            ("/..", "/"),
            ("/../../..", "/"),
            ("/.", "/"),
            ("/a/.", "/a/"),
            ("/a/b/..", "/a/"),
            ("/a/./b/./", "/a/b/"),
            ("//admin", "/admin"),
            ("/public//..//admin", "/admin"),
            ("/a///b//", "/a/b/"),
            ("/%2e%2e/admin", "/admin"),
            ("/x/%2E%2e/admin", "/admin"),
            ("/x/.%2E/admin", "/admin"),
            ("/x/%2E./admin", "/admin"),
            ("/x/%2e/admin", "/x/admin"),
            ("/%41%62c", "/Abc"),
            ("/%7euser", "/~user"),
            ("/%2d%5f", "/-_"),
            ("/a%20b", "/a%20b"),
            ("/a b", "/a%20b"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/café", "/caf%C3%A9"),
            ("/a%3fb", "/a%3Fb"),
            ("/a%23b", "/a%23b"),
            ("/a%25zz", "/a%25zz"),
            ("/a:b@c!$&'()*+,=", "/a:b@c!$&'()*+,="),
            ("/p?next=/../admin&x=%2f", "/p?next=/../admin&x=%2f"),
            ("/p?", "/p?"),
            ("/p/../q?a=1", "/q?a=1"),
            ("/a\"b", "/a%22b"),
        ];
        for (raw, want) in cases {
            assert_eq!(strict(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn refuses() {
        let cases = [
            ("", PathError::NotOriginForm),
            ("*", PathError::NotOriginForm),
            ("admin", PathError::NotOriginForm),
            ("http://h/x", PathError::NotOriginForm),
            ("/a%2fb", PathError::EncodedSlash),
            ("/a%2Fb", PathError::EncodedSlash),
            ("/public%2f..%2fadmin", PathError::EncodedSlash),
            ("/a;jsessionid=1", PathError::Semicolon),
            ("/a%3bb", PathError::Semicolon),
            ("/a\\b", PathError::Backslash),
            ("/a%5cb", PathError::Backslash),
            ("/a%00b", PathError::Nul),
            ("/a?b=%00", PathError::Nul),
            ("/%252e%252e/admin", PathError::DoubleEncoding),
            ("/%252f", PathError::DoubleEncoding),
            ("/%", PathError::BadPercentEncoding),
            ("/%4", PathError::BadPercentEncoding),
            ("/%zz", PathError::BadPercentEncoding),
            ("/%ff", PathError::InvalidUtf8),
            ("/%c0%ae%c0%ae/", PathError::InvalidUtf8),
            ("/%c3", PathError::InvalidUtf8),
            ("/a#frag", PathError::Fragment),
            ("/a?b#c", PathError::Fragment),
            ("/a\tb", PathError::ControlCharacter),
            ("/a%0ab", PathError::ControlCharacter),
            ("/a?b\rc", PathError::ControlCharacter),
            ("/a%7f", PathError::ControlCharacter),
        ];
        for (raw, want) in cases {
            assert_eq!(strict(raw), Err(want.clone()), "{raw}");
        }
        assert_eq!(
            normalize_target(&[b'/', 0xff], NormalizeOptions::default()),
            Err(PathError::InvalidUtf8)
        );
        let long = format!("/{}", "a".repeat(MAX_TARGET_LEN));
        assert_eq!(strict(&long), Err(PathError::TooLong));
    }

    #[test]
    fn opt_outs() {
        let all = NormalizeOptions {
            allow_encoded_slash: true,
            allow_backslash: true,
            allow_semicolon: true,
            allow_double_encoding: true,
        };
        let lenient = |raw: &str| normalize_target(raw.as_bytes(), all).map(|t| t.path);
        assert_eq!(lenient("/files/a%2fb").as_deref(), Ok("/files/a%2Fb"));
        // an encoded slash never splits segments: this `..` removes `a%2Fb`, not `b`
        assert_eq!(lenient("/files/a%2fb/..").as_deref(), Ok("/files/"));
        assert_eq!(lenient("/a\\b").as_deref(), Ok("/a%5Cb"));
        assert_eq!(lenient("/a%5cb").as_deref(), Ok("/a%5Cb"));
        assert_eq!(lenient("/a;v=1/b").as_deref(), Ok("/a;v=1/b"));
        assert_eq!(lenient("/a%3bb").as_deref(), Ok("/a;b"));
        assert_eq!(lenient("/%252e").as_deref(), Ok("/%252e"));
        assert_eq!(lenient("/a%00"), Err(PathError::Nul), "NUL has no opt-out");
        let only_slash = NormalizeOptions {
            allow_encoded_slash: true,
            ..Default::default()
        };
        assert_eq!(
            normalize_target(b"/a%2f;b", only_slash),
            Err(PathError::Semicolon)
        );
    }

    #[test]
    fn output_is_a_fixed_point() {
        let inputs = [
            "/",
            "/a/b/../c/",
            "//x//y",
            "/%2e%2e/%41",
            "/caf%c3%a9/./",
            "/a%20b?x=1",
            "/a:b@c",
            "/x/..",
            "/x/.",
            "/~u/%7e",
        ];
        for raw in inputs {
            let once = strict(raw).unwrap();
            assert_eq!(strict(&once).unwrap(), once, "{raw}");
            let path = once.split('?').next().unwrap();
            for bad in ["//", "/./", "/../"] {
                assert!(!path.contains(bad), "{raw} -> {once}");
            }
            assert!(
                !path.ends_with("/.") && !path.ends_with("/.."),
                "{raw} -> {once}"
            );
        }
    }
}
