//! Where a finished login may send the browser (`rd`): a path on this site, or an absolute
//! http(s) URL on one of `server.allowed_hosts`. Anything else falls back to `/`, so the
//! login endpoint can never be used as an open redirect.

/// The return target for `rd`, or `/`.
pub fn safe_return_target(rd: Option<&str>, allowed_hosts: &[String]) -> String {
    let fallback = || "/".to_string();
    let Some(rd) = rd else { return fallback() };
    // Controls, spaces and backslashes have no place in a return target; browsers read
    // `/\evil.example` and `\t//evil.example` as other hosts.
    if rd.is_empty() || rd.len() > 2048 || rd.bytes().any(|b| b <= 0x20 || b == 0x7f || b == b'\\')
    {
        return fallback();
    }
    if let Some(rest) = rd.strip_prefix('/') {
        let lower = rest.to_ascii_lowercase();
        // `//host` is protocol-relative; an encoded slash or backslash may be decoded into one.
        if rest.starts_with('/') || lower.starts_with("%2f") || lower.starts_with("%5c") {
            return fallback();
        }
        return rd.to_string();
    }
    let lower = rd.to_ascii_lowercase();
    if !(lower.starts_with("https://") || lower.starts_with("http://")) {
        return fallback();
    }
    match url::Url::parse(rd) {
        Ok(u)
            if u.username().is_empty()
                && u.password().is_none()
                && u.host_str()
                    .is_some_and(|h| allowed_hosts.iter().any(|a| a.eq_ignore_ascii_case(h))) =>
        {
            u.to_string()
        }
        _ => fallback(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_and_allowed_hosts_only() {
        let hosts = vec!["app.example.com".to_string()];
        let ok = |rd: &str| safe_return_target(Some(rd), &hosts);
        assert_eq!(ok("/reports?x=1#top"), "/reports?x=1#top");
        assert_eq!(ok("https://app.example.com/a"), "https://app.example.com/a");
        for bad in [
            "//evil.example",
            "///evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "https://evil.example/",
            "http://evil.example",
            "https://app.example.com@evil.example/",
            "https://evil.example\\@app.example.com",
            "javascript:alert(1)",
            "data:text/html,hi",
            "/%2F%2Fevil.example",
            "/%5Cevil.example",
            "\t//evil.example",
            " /x",
            "https://app.example.com.evil.example/",
            "ftp://app.example.com/",
            "evil.example",
            "",
        ] {
            assert_eq!(ok(bad), "/", "{bad:?}");
        }
        assert_eq!(safe_return_target(None, &hosts), "/");
        assert_eq!(
            safe_return_target(Some("https://app.example.com/"), &[]),
            "/"
        );
    }
}
