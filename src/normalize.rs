//! Request-target normalization, done once before routing and policy.
//!
//! Proxies and the apps behind them disagree about what `/a/%2e%2e/b`, `/a;x/b` or `/a%2fb`
//! mean; every such disagreement is a way around a path-based rule. So the gateway decides
//! one meaning here, and the upstream receives exactly the path that was judged: unreserved
//! and sub-delimiter escapes are decoded (`%24` is `$`), dot segments resolved and `//`
//! merged; forms that different servers read differently (encoded `/` or `\`, NUL, `;`
//! parameters, escapes that a second decode would turn into something else, invalid UTF-8,
//! Unicode look-alikes of `.` `/` `\` `;` `%`) are refused unless a route opts out.
//!
//! The output is a fixed point (normalizing it again changes nothing), and every check runs
//! on what was decoded, not on the bytes as sent: `%25%32%65` is refused like `%252e`.
//! On a route that opts out, segments are matched and resolved without their `;params`
//! (as Tomcat, Jetty and Spring read them) and with encoded separators read as separators;
//! the upstream gets the same segments with their parameters and escapes as sent, and an
//! encoded delimiter never becomes a live one.

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
    #[error("a dot segment hidden behind an encoded separator or a look-alike character")]
    HiddenDotSegment,
    #[error("a Unicode look-alike of a path delimiter")]
    Confusable,
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
            PathError::HiddenDotSegment => "hidden_dot_segment",
            PathError::Confusable => "confusable",
        }
    }
}

/// The normalized origin-form target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedTarget {
    /// What routing and policies judge; starts with '/'.
    pub path: String,
    /// What goes upstream when it differs from `path`: only on a route that opts out, where
    /// segments keep their `;params` and encoded separators.
    pub upstream: Option<String>,
    /// The raw query.
    pub query: Option<String>,
}

impl NormalizedTarget {
    /// The path the upstream receives.
    pub fn upstream_path(&self) -> &str {
        self.upstream.as_deref().unwrap_or(&self.path)
    }

    pub fn to_request_target(&self) -> String {
        let path = self.upstream_path();
        match &self.query {
            Some(q) => format!("{path}?{q}"),
            None => path.to_string(),
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

/// Characters RFC 3986 allows raw in a path segment besides unreserved ones and `;`; an
/// escaped one is decoded, so `/odata/%24batch` and `/odata/$batch` are one path.
fn is_raw_path_char(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'=' | b':' | b'@'
    )
}

/// Code points whose Unicode compatibility form (NFKC) or Windows best-fit mapping is a
/// path delimiter or a dot: a server that folds them would see `..`, `/`, `\`, `;` or `%`.
fn is_confusable(c: char) -> bool {
    matches!(
        c,
        '\u{2024}' // one dot leader -> .
            | '\u{2025}' // two dot leader -> ..
            | '\u{FE52}' // small full stop -> .
            | '\u{FF0E}' // fullwidth full stop -> .
            | '\u{FF0F}' // fullwidth solidus -> /
            | '\u{FF3C}' // fullwidth reverse solidus -> \
            | '\u{FE68}' // small reverse solidus -> \
            | '\u{FF1B}' // fullwidth semicolon -> ;
            | '\u{FE54}' // small semicolon -> ;
            | '\u{FF05}' // fullwidth percent -> %
            | '\u{FE6A}' // small percent -> %
            | '\u{2215}' // division slash -> / (best fit)
            | '\u{2216}' // set minus -> \ (best fit)
            | '\u{2044}' // fraction slash
            | '\u{29F8}' // big solidus
            | '\u{29F9}' // big reverse solidus
    )
}

/// Checks run on a segment's decoded bytes: valid UTF-8, no escape that a second decode
/// would act on, no look-alike delimiters.
fn check_decoded(decoded: &[u8], opts: NormalizeOptions) -> Result<(), PathError> {
    if !opts.allow_double_encoding {
        // A '%' in decoded bytes came from `%25`; followed by two hex digits (raw or
        // decoded), a second decode would act on it.
        let twice = decoded
            .windows(3)
            .any(|w| w[0] == b'%' && hex_value(w[1]).is_some() && hex_value(w[2]).is_some());
        if twice {
            return Err(PathError::DoubleEncoding);
        }
    }
    if decoded.is_ascii() {
        return Ok(());
    }
    let text = std::str::from_utf8(decoded).map_err(|_| PathError::InvalidUtf8)?;
    if text.chars().any(is_confusable) {
        return Err(PathError::Confusable);
    }
    Ok(())
}

/// One segment as parsed: its output form, where its name ends (the first live `;`), and
/// whether the name holds an encoded separator.
struct Segment {
    text: String,
    name_end: usize,
    encoded_separator: bool,
}

impl Segment {
    fn name(&self) -> &str {
        &self.text[..self.name_end]
    }

    /// A dot segment behind a delimiter some server reads and another does not: in the
    /// name between encoded separators or an encoded `;`, or among the `;params`. (A name
    /// that is itself `.` or `..` is resolved, as Tomcat resolves `..;x`.)
    fn hides_dot_segment(&self) -> bool {
        let is_dot = |p: &str| p == "." || p == "..";
        let pieces = |text: &str| -> bool {
            text.split(';')
                .flat_map(|p| p.split("%2F"))
                .flat_map(|p| p.split("%5C"))
                .flat_map(|p| p.split("%3B"))
                .any(is_dot)
        };
        let name = self.name();
        let params = &self.text[self.name_end..];
        // The usual segment has neither escapes nor parameters: nothing can hide in it.
        if params.is_empty() && !name.contains('%') {
            return false;
        }
        let delimited = name.contains("%2F") || name.contains("%5C") || name.contains("%3B");
        (delimited && pieces(name)) || pieces(params)
    }

    /// The name as judged: encoded separators read as separators, empty pieces merged.
    fn judged_pieces(&self) -> impl Iterator<Item = &str> {
        self.name()
            .split("%2F")
            .flat_map(|p| p.split("%5C"))
            .filter(|p| !p.is_empty())
    }
}

/// Parses one segment of `path` from `i` up to the next raw '/'; returns it, the index after
/// it, and whether it was the last one.
fn parse_segment(
    path: &[u8],
    mut i: usize,
    opts: NormalizeOptions,
    segment: &mut Segment,
    decoded: &mut Vec<u8>,
) -> Result<(usize, bool), PathError> {
    segment.text.clear();
    segment.name_end = usize::MAX;
    segment.encoded_separator = false;
    decoded.clear();
    let mut last = true;
    while i < path.len() {
        let b = path[i];
        match b {
            b'/' => {
                last = false;
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
                    v if v < 0x20 || v == 0x7f => return Err(PathError::ControlCharacter),
                    v if is_unreserved(v) || is_raw_path_char(v) => segment.text.push(v as char),
                    v => {
                        if matches!(v, b'/' | b'\\') && segment.name_end == usize::MAX {
                            segment.encoded_separator = true;
                        }
                        // `%3B` stays encoded: an escaped delimiter never turns live.
                        push_encoded(&mut segment.text, v);
                    }
                }
                decoded.push(value);
            }
            b'\\' => {
                if !opts.allow_backslash {
                    return Err(PathError::Backslash);
                }
                if segment.name_end == usize::MAX {
                    segment.encoded_separator = true;
                }
                segment.text.push_str("%5C");
                decoded.push(b);
                i += 1;
            }
            b';' => {
                if !opts.allow_semicolon {
                    return Err(PathError::Semicolon);
                }
                if segment.name_end == usize::MAX {
                    segment.name_end = segment.text.len();
                }
                segment.text.push(';');
                decoded.push(b);
                i += 1;
            }
            _ if b < 0x20 || b == 0x7f => return Err(PathError::ControlCharacter),
            _ if is_unreserved(b) || is_raw_path_char(b) => {
                segment.text.push(b as char);
                decoded.push(b);
                i += 1;
            }
            _ => {
                // Space, quotes, non-ASCII and the like travel percent-encoded.
                push_encoded(&mut segment.text, b);
                decoded.push(b);
                i += 1;
            }
        }
    }
    if segment.name_end == usize::MAX {
        segment.name_end = segment.text.len();
    }
    check_decoded(decoded, opts)?;
    Ok((i, last))
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

    // `out` is what goes upstream; `judged` exists only once it differs (a `;param` or an
    // encoded separator on a route that allows them). Each stacked segment records where
    // it starts in both, so `..` can remove it from both.
    let mut out = String::with_capacity(path.len() + 8);
    let mut judged: Option<String> = None;
    let mut segments: Vec<(usize, usize)> = Vec::with_capacity(8);
    let mut decoded: Vec<u8> = Vec::with_capacity(path.len());
    let mut segment = Segment {
        text: String::with_capacity(64),
        name_end: 0,
        encoded_separator: false,
    };
    let mut i = 1; // skip the leading '/'
    let mut trailing_slash = false;
    // The judged form ends with '/' where a decoding server would see one.
    let mut judged_trailing = false;
    loop {
        let (next, last) = parse_segment(path, i, opts, &mut segment, &mut decoded)?;
        i = next;
        if segment.hides_dot_segment() {
            // Whether `a%2F..%2Fb`, `a\..\b` or `..%3Bx` climbs depends on the server.
            return Err(PathError::HiddenDotSegment);
        }
        match segment.name() {
            // `//` merges, and so does a segment that is only parameters (`/;x/`).
            "" => trailing_slash |= last,
            "." => trailing_slash = last,
            ".." => {
                if let Some((start, judged_start)) = segments.pop() {
                    out.truncate(start);
                    if let Some(j) = judged.as_mut() {
                        j.truncate(judged_start);
                    }
                }
                trailing_slash = last;
            }
            name => {
                let differs = segment.text.len() != name.len() || segment.encoded_separator;
                if differs && judged.is_none() {
                    judged = Some(out.clone());
                }
                let start = out.len();
                let judged_start = judged.as_ref().map_or(start, String::len);
                out.push('/');
                out.push_str(&segment.text);
                if let Some(j) = judged.as_mut() {
                    for piece in segment.judged_pieces() {
                        j.push('/');
                        j.push_str(piece);
                    }
                }
                segments.push((start, judged_start));
                // `a%2F` at the end reads as `a/` to a server that decodes separators.
                trailing_slash = false;
                judged_trailing = last && (name.ends_with("%2F") || name.ends_with("%5C"));
            }
        }
        if last {
            break;
        }
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    if let Some(j) = judged.as_mut() {
        if j.is_empty() || ((trailing_slash || judged_trailing) && !j.ends_with('/')) {
            j.push('/');
        }
    }
    // Escaping can triple a target's length; what goes upstream must itself be acceptable
    // (found by the fuzzer: 3,000 `>` became 9,000 bytes that a second pass refused).
    let query_len = query.as_ref().map_or(0, |q| q.len() + 1);
    if out.len() + query_len > MAX_TARGET_LEN {
        return Err(PathError::TooLong);
    }
    let (path, upstream) = match judged.filter(|j| *j != out) {
        Some(j) => (j, Some(out)),
        None => (out, None),
    };
    Ok(NormalizedTarget {
        path,
        upstream,
        query,
    })
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
            ("/odata/%24batch", "/odata/$batch"),
            ("/%21%24%26%27%28%29%2A%2B%2C%3D%3A%40", "/!$&'()*+,=:@"),
            ("/100%25", "/100%25"),
            ("/a%25zz/%25", "/a%25zz/%25"),
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
            (
                "/public/%25%32%65%25%32%65/admin",
                PathError::DoubleEncoding,
            ),
            ("/public/%25%32e/admin", PathError::DoubleEncoding),
            ("/%25%46%46", PathError::DoubleEncoding),
            ("/%2525%32%65", PathError::DoubleEncoding),
            ("/%EF%BC%8E%EF%BC%8E/admin", PathError::Confusable),
            ("/a\u{ff0f}b", PathError::Confusable),
            ("/%E2%80%A5/admin", PathError::Confusable),
            ("/%u002e%u002e/admin", PathError::BadPercentEncoding),
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
        // Short enough as sent, too long once escaped (a fuzzer find).
        let grows = format!("/{}", ">".repeat(3_000));
        assert_eq!(strict(&grows), Err(PathError::TooLong));
        let query = format!("/{}?{}", ">".repeat(2_000), "q".repeat(2_200));
        assert_eq!(strict(&query), Err(PathError::TooLong));
    }

    #[test]
    fn opt_outs() {
        let all = NormalizeOptions {
            allow_encoded_slash: true,
            allow_backslash: true,
            allow_semicolon: true,
            allow_double_encoding: true,
        };
        // (judged path, what goes upstream)
        let lenient = |raw: &str| {
            normalize_target(raw.as_bytes(), all)
                .map(|t| (t.path.clone(), t.upstream_path().to_string()))
        };
        let both = |judged: &str, upstream: &str| Ok((judged.to_string(), upstream.to_string()));
        assert_eq!(lenient("/files/a%2fb"), both("/files/a/b", "/files/a%2Fb"));
        // an encoded slash never splits segments for `..`: this one removes `a%2Fb`
        assert_eq!(lenient("/files/a%2fb/.."), both("/files/", "/files/"));
        assert_eq!(lenient("/files/a%2F"), both("/files/a/", "/files/a%2F"));
        assert_eq!(lenient("/a\\b"), both("/a/b", "/a%5Cb"));
        assert_eq!(lenient("/a%5cb"), both("/a/b", "/a%5Cb"));
        // `;params` are not part of the name that is matched, and stay with their segment
        assert_eq!(lenient("/a;v=1/b"), both("/a/b", "/a;v=1/b"));
        assert_eq!(lenient("/a;/b"), both("/a/b", "/a;/b"));
        assert_eq!(lenient("/a/..;x/b"), both("/b", "/b"));
        assert_eq!(lenient("/a/.;x/b"), both("/a/b", "/a/b"));
        assert_eq!(lenient("/a/;x/b"), both("/a/b", "/a/b"));
        // an encoded `;` is never a live one
        assert_eq!(lenient("/a%3bb"), both("/a%3Bb", "/a%3Bb"));
        assert_eq!(lenient("/%252e"), both("/%252e", "/%252e"));
        for hidden in [
            "/a%2f..%2fb",
            "/a/..%2Fb",
            "/a\\..\\b",
            "/a/%2e%2e%5cb",
            "/a/..%3bx/b",
            "/a;../b",
            "/a;x/..%2F",
        ] {
            assert_eq!(
                normalize_target(hidden.as_bytes(), all),
                Err(PathError::HiddenDotSegment),
                "{hidden}"
            );
        }
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

    /// Decodes every `%HH` once (what a server that decodes again would do).
    fn decode_once(text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                if let (Some(h), Some(l)) = (
                    bytes.get(i + 1).copied().and_then(hex_value),
                    bytes.get(i + 2).copied().and_then(hex_value),
                ) {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Pieces of a path as the most liberal server splits it: on `/`, `\` and `;`.
    fn has_dot_piece(path: &str) -> bool {
        path.split(['/', '\\', ';']).any(|p| p == "." || p == "..")
    }

    /// Targets built from the pieces path tricks are made of.
    fn generated_targets(seed: u64, count: usize) -> Vec<String> {
        use rand::{Rng, SeedableRng};
        const PIECES: &[&str] = &[
            "/",
            "/",
            "//",
            ".",
            "..",
            "%2e",
            "%2E",
            "%25",
            "%32",
            "%65",
            "%45",
            "%2f",
            "%2F",
            "%5c",
            "\\",
            "%3b",
            "%3B",
            ";",
            "a",
            "b",
            "admin",
            "%41",
            "%24",
            "$",
            "%",
            "2",
            "e",
            "f",
            "5",
            "c",
            "%u",
            "?",
            "%00",
            "%c3%a9",
            "é",
            "%ef%bc%8e",
            "．",
            " ",
            "~",
            "%7e",
            "=",
            "%3d",
            "+",
            "%2b",
            "x=1",
            "%0a",
            "#",
            "%ff",
            "%c0%ae",
            ":",
            "@",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..count)
            .map(|_| {
                let n = rng.gen_range(1..14);
                let mut t = String::from("/");
                for _ in 0..n {
                    t.push_str(PIECES[rng.gen_range(0..PIECES.len())]);
                }
                t
            })
            .collect()
    }

    #[test]
    fn strict_output_is_a_fixed_point_that_no_further_decode_turns_into_a_trick() {
        let mut accepted = 0;
        for raw in generated_targets(0x9a7e, 40_000) {
            let Ok(t) = normalize_target(raw.as_bytes(), NormalizeOptions::default()) else {
                continue;
            };
            accepted += 1;
            assert_eq!(t.upstream, None, "{raw}: strict paths are judged as sent");
            let again = normalize_target(t.to_request_target().as_bytes(), Default::default());
            assert_eq!(again.as_ref(), Ok(&t), "{raw} -> {t:?}");
            let slashes = t.path.matches('/').count();
            let mut d = t.path.clone();
            for round in 0..=2 {
                assert!(
                    !has_dot_piece(&d),
                    "{raw} -> {} ({round} decodes: {d})",
                    t.path
                );
                assert!(!d.contains(';') && !d.contains('\\'), "{raw}: {d}");
                assert_eq!(d.matches('/').count(), slashes, "{raw}: {d}");
                if round < 2 {
                    let lower = d.to_ascii_lowercase();
                    assert!(
                        !lower.contains("%2f") && !lower.contains("%5c") && !lower.contains("%3b"),
                        "{raw}: encoded separator after {round} decodes: {d}"
                    );
                }
                d = decode_once(&d);
            }
            for bad in ["//", "/./", "/../"] {
                assert!(!t.path.contains(bad), "{raw} -> {}", t.path);
            }
        }
        assert!(accepted > 2_000, "too few accepted targets: {accepted}");
    }

    #[test]
    fn opted_out_output_is_a_fixed_point_and_never_makes_a_delimiter_live() {
        let opts = NormalizeOptions {
            allow_encoded_slash: true,
            allow_backslash: true,
            allow_semicolon: true,
            allow_double_encoding: false,
        };
        let mut accepted = 0;
        for raw in generated_targets(0x5e31, 40_000) {
            let Ok(t) = normalize_target(raw.as_bytes(), opts) else {
                continue;
            };
            accepted += 1;
            let again = normalize_target(t.to_request_target().as_bytes(), opts);
            assert_eq!(again.as_ref(), Ok(&t), "{raw} -> {t:?}");
            // The judged path has no parameters and no encoded separators left.
            let lower = t.path.to_ascii_lowercase();
            assert!(
                !t.path.contains(';') && !lower.contains("%2f") && !lower.contains("%5c"),
                "{raw} -> {}",
                t.path
            );
            // A live `;` upstream was a live `;` in the request.
            let path_part = raw.split('?').next().unwrap_or("");
            assert!(
                t.upstream_path().matches(';').count() <= path_part.matches(';').count(),
                "{raw} -> {}",
                t.upstream_path()
            );
            for form in [t.path.as_str(), t.upstream_path()] {
                let mut d = form.to_string();
                for round in 0..=2 {
                    assert!(!has_dot_piece(&d), "{raw} -> {form} ({round} decodes: {d})");
                    d = decode_once(&d);
                }
            }
        }
        assert!(accepted > 2_000, "too few accepted targets: {accepted}");
    }
}
