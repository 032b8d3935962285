//! The stored form of a session: its times as varints, its names behind lengths, and its
//! tokens compacted (JWS parts decoded, deflated against dictionaries of usual claims)
//! before they are sealed. Every tag and dictionary here is part of the stored format:
//! sessions written by earlier builds are read, so nothing is changed, only added.

use super::{Times, Tokens};

impl Times {
    /// `flags | created_at | expires_at | touched_at | auth_time? | access_expires_at? |
    /// refresh_at?` as LEB128 varints, every time after the first as its zigzag difference
    /// from `created_at`; a flag bit says which optional times follow. About 18 bytes, where
    /// six fixed u64 took 48.
    pub(super) fn write(&self, out: &mut Vec<u8>) {
        let optional = [self.auth_time, self.access_expires_at, self.refresh_at];
        let flags = optional
            .iter()
            .enumerate()
            .fold(0u8, |f, (i, t)| f | (u8::from(t.is_some()) << i));
        out.push(flags);
        put_varint(out, self.created_at);
        let since = |t: u64| {
            let d = t.wrapping_sub(self.created_at) as i64;
            ((d << 1) ^ (d >> 63)) as u64
        };
        put_varint(out, since(self.expires_at));
        put_varint(out, since(self.touched_at));
        for t in optional.into_iter().flatten() {
            put_varint(out, since(t));
        }
    }

    /// The times at the start of `packed`, and how many bytes they took.
    pub(super) fn read(packed: &[u8]) -> Option<(Times, usize)> {
        let (&flags, _) = packed.split_first()?;
        if flags > 0b111 {
            return None;
        }
        let mut at = 1;
        let created_at = take_varint(packed, &mut at)?;
        let mut since = || -> Option<u64> {
            let z = take_varint(packed, &mut at)?;
            let d = ((z >> 1) as i64) ^ -((z & 1) as i64);
            Some(created_at.wrapping_add(d as u64))
        };
        let expires_at = since()?;
        let touched_at = since()?;
        let mut optional = [None; 3];
        for (i, slot) in optional.iter_mut().enumerate() {
            if flags & (1 << i) != 0 {
                *slot = Some(since()?);
            }
        }
        let [auth_time, access_expires_at, refresh_at] = optional;
        let times = Times {
            created_at,
            expires_at,
            touched_at,
            auth_time,
            access_expires_at,
            refresh_at,
        };
        Some((times, at))
    }

    /// The fixed layout of stored format 2: six u64, little-endian, 0 for none.
    pub(super) fn read_format_2(packed: &[u8]) -> Option<Times> {
        let time = |i: usize| -> Option<u64> {
            Some(u64::from_le_bytes(
                packed.get(i * 8..i * 8 + 8)?.try_into().ok()?,
            ))
        };
        let optional = |i: usize| time(i).map(|t| (t != 0).then_some(t));
        Some(Times {
            created_at: time(0)?,
            expires_at: time(1)?,
            touched_at: time(2)?,
            auth_time: optional(3)?,
            access_expires_at: optional(4)?,
            refresh_at: optional(5)?,
        })
    }
}

/// The top bit of a packed session's first byte: its names include the issuer (every session
/// since stored format 4; those of format 3 and 2 were written without it).
pub(super) const NAMES_ISSUER: u8 = 0x80;

/// The times behind a byte of their length (and [`NAMES_ISSUER`]), so the names are found
/// without decoding them.
pub(super) fn put_times(out: &mut Vec<u8>, times: Times, names_issuer: bool) {
    let at = out.len();
    out.push(0);
    times.write(out);
    // Six varints and a flag byte: at most 61 bytes.
    out[at] = (out.len() - at - 1) as u8 | if names_issuer { NAMES_ISSUER } else { 0 };
}

/// Where a packed session's names start, and whether they include the issuer.
pub(super) fn names_start(packed: &[u8]) -> Option<(usize, bool)> {
    let first = *packed.first()?;
    let start = 1 + usize::from(first & !NAMES_ISSUER);
    (start <= packed.len()).then_some((start, first & NAMES_ISSUER != 0))
}

/// Where a packed session's parts are.
#[derive(Clone, Copy)]
pub(super) struct Layout<'a> {
    pub(super) issuer: Option<&'a str>,
    pub(super) subject: &'a str,
    pub(super) sid: Option<&'a str>,
    pub(super) acr: Option<&'a str>,
    /// Where the sealed tokens start.
    pub(super) sealed: usize,
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take_varint(data: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *data.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f).checked_shl(shift)?;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Writes an optional field behind a u32 of its length + 1 (0: absent); the names of a
/// session and its bundled tokens are laid out this way.
pub(super) fn put_field(out: &mut Vec<u8>, field: Option<&[u8]>) {
    let len = field.map_or(0, |f| f.len() as u32 + 1);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(field.unwrap_or_default());
}

/// The field at `*at` (advancing past it); `None` inside for an absent one.
pub(super) fn take_field<'a>(data: &'a [u8], at: &mut usize) -> Option<Option<&'a [u8]>> {
    let len = u32::from_le_bytes(data.get(*at..*at + 4)?.try_into().ok()?) as usize;
    *at += 4;
    if len == 0 {
        return Some(None);
    }
    let field = data.get(*at..*at + len - 1)?;
    *at += len - 1;
    Some(Some(field))
}

pub(super) fn put_name(out: &mut Vec<u8>, name: Option<&str>) {
    put_field(out, name.map(str::as_bytes));
}

pub(super) fn take_name<'a>(packed: &'a [u8], at: &mut usize) -> Option<Option<&'a str>> {
    take_field(packed, at)?
        .map(std::str::from_utf8)
        .transpose()
        .ok()
}

/// The names of a packed session, and where its sealed tokens start.
pub(super) fn read_layout(packed: &[u8]) -> Option<Layout<'_>> {
    let (mut at, names_issuer) = names_start(packed)?;
    // The IdP's name, read on its own by `Session::idp`; it must be there.
    take_name(packed, &mut at)??;
    let issuer = match names_issuer {
        true => Some(take_name(packed, &mut at)??),
        false => None,
    };
    let subject = take_name(packed, &mut at)??;
    let sid = take_name(packed, &mut at)?;
    let acr = take_name(packed, &mut at)?;
    Some(Layout {
        issuer,
        subject,
        sid,
        acr,
        sealed: at,
    })
}

/// The version of [`Session::to_bytes`]: 4 since sessions name their issuer.
pub(super) const FORMAT: u8 = 4;

impl Tokens {
    /// ID, access and refresh token, in the order a bundle keeps them.
    fn each(&self) -> [&Option<String>; 3] {
        [&self.id_token, &self.access_token, &self.refresh_token]
    }

    pub(super) fn len(&self) -> usize {
        self.each()
            .iter()
            .map(|t| t.as_ref().map_or(0, String::len))
            .sum()
    }
}

pub(super) const ID_TOKEN: usize = 0;
pub(super) const ACCESS_TOKEN: usize = 1;

/// The three tokens, each compacted ([`compact_token`]), as [`put_field`]s.
pub(super) fn bundle(tokens: &Tokens, dictionary: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(tokens.len() + 12);
    for token in tokens.each() {
        let compact = token.as_deref().map(|t| compact_token(t, dictionary));
        put_field(&mut out, compact.as_deref());
    }
    out
}

/// Token `index` ([`Tokens::each`] order) of a bundle, still compact; `Some(None)` when the
/// session has none.
pub(super) fn bundle_entry(data: &[u8], index: usize) -> Option<Option<&[u8]>> {
    let mut at = 0;
    for _ in 0..index {
        take_field(data, &mut at)?;
    }
    take_field(data, &mut at)
}

/// A JWS whose base64url parts re-encode to exactly the same text is kept as its decoded
/// parts: `3 | len(header) u16 | len(deflated) u16 | deflate(header ++ payload) | signature`,
/// deflated against the session's [`token_dictionary`] (a token repeats its subject and IdP
/// session id), or `1 | len(header) u16 | header |
/// len(payload) u16 | payload | signature` when deflating does not help. Other base64url
/// text (many opaque refresh tokens) is kept decoded, `4 | bytes`, a quarter smaller;
/// anything else is `0 | text`. An ID token shrinks to about half its text. Tag 2 (claims alone deflated with
/// [`CLAIMS_DICTIONARY`]) was written by earlier builds and is still read.
pub(super) fn compact_token(token: &str, dictionary: &[u8]) -> Vec<u8> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() == 3 {
        let decoded: Vec<Vec<u8>> = parts
            .iter()
            .filter_map(|p| URL_SAFE_NO_PAD.decode(p).ok())
            .filter(|d| d.len() <= u16::MAX as usize)
            .collect();
        let exact = decoded.len() == 3
            && decoded
                .iter()
                .zip(&parts)
                .all(|(d, p)| URL_SAFE_NO_PAD.encode(d) == *p);
        if exact {
            let (header, payload, signature) = (&decoded[0], &decoded[1], &decoded[2]);
            let mut out = Vec::with_capacity(token.len() * 3 / 4 + 8);
            let joined = [header.as_slice(), payload].concat();
            match deflate(&joined, dictionary) {
                Some(smaller)
                    if smaller.len() < joined.len() && smaller.len() <= u16::MAX as usize =>
                {
                    out.push(3);
                    out.extend_from_slice(&(header.len() as u16).to_be_bytes());
                    out.extend_from_slice(&(smaller.len() as u16).to_be_bytes());
                    out.extend_from_slice(&smaller);
                }
                _ => {
                    out.push(1);
                    for d in [header, payload] {
                        out.extend_from_slice(&(d.len() as u16).to_be_bytes());
                        out.extend_from_slice(d);
                    }
                }
            }
            out.extend_from_slice(signature);
            return out;
        }
    }
    if let Some(decoded) = URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .filter(|d| !d.is_empty() && URL_SAFE_NO_PAD.encode(d) == token)
    {
        let mut out = Vec::with_capacity(decoded.len() + 1);
        out.push(4);
        out.extend_from_slice(&decoded);
        return out;
    }
    let mut out = Vec::with_capacity(token.len() + 1);
    out.push(0);
    out.extend_from_slice(token.as_bytes());
    out
}

/// What ID-token claims usually look like (Keycloak, Entra ID, Okta, Auth0, Google, Dex):
/// a preset dictionary lets the first occurrence of each name compress too, which is most
/// of a 600-byte payload. Part of the stored format (tag 2): never change it.
pub(super) const CLAIMS_DICTIONARY: &[u8] = br#"{"ver":"2.0","tid":"","oid":"","upn":"","unique_name":"","hd":"","picture":"https://","locale":"en","session_state":"","c_hash":"","s_hash":"","amr":["pwd","mfa","otp"],"realm_access":{"roles":["offline_access","uma_authorization","default-roles-"]},"resource_access":{"roles":[""]},"scope":"openid profile email","email_verified":false,"exp":17,"iat":17,"auth_time":17,"jti":"","iss":"https://","/realms/","aud":"","sub":"","typ":"ID","azp":"","nonce":"","sid":"","at_hash":"","acr":"1","email_verified":true,"name":"","preferred_username":"","given_name":"","family_name":"","email":"@","groups":[""#;

/// Words of JWS headers; tag 3 deflates against them, then [`CLAIMS_DICTIONARY`], then the
/// session's own names ([`token_dictionary`]). Part of the stored format: never change it,
/// add a tag.
const JWS_HEADER_WORDS: &[u8] = br#"{"typ":"at+jwt","x5t#S256":"","x5t":"","alg":"ES256","alg":"PS256","alg":"EdDSA","typ" : "JWT","kid" : "","alg":"RS256","typ":"JWT","kid":""#;

/// What a session's tokens are deflated against (tag 3): header and claim words, then its
/// issuer (sessions since format 4: what it costs to store, it saves in the ID token's
/// `iss`), subject and IdP session id, nearest to the data as the likeliest words.
pub(super) fn token_dictionary(issuer: Option<&str>, subject: &str, sid: Option<&str>) -> Vec<u8> {
    [
        JWS_HEADER_WORDS,
        CLAIMS_DICTIONARY,
        issuer.unwrap_or_default().as_bytes(),
        subject.as_bytes(),
        sid.unwrap_or_default().as_bytes(),
    ]
    .concat()
}

fn deflate(data: &[u8], dictionary: &[u8]) -> Option<Vec<u8>> {
    let mut compress = flate2::Compress::new(flate2::Compression::best(), false);
    compress.set_dictionary(dictionary).ok()?;
    let mut out = Vec::with_capacity(data.len() + 64);
    match compress
        .compress_vec(data, &mut out, flate2::FlushCompress::Finish)
        .ok()?
    {
        flate2::Status::StreamEnd => Some(out),
        _ => None,
    }
}

/// Inflates at most 128 KiB (what two u16 lengths allowed before deflating). The inflater
/// (tens of kilobytes of state) is kept per thread and reset between uses.
pub(super) fn inflate(data: &[u8], dictionary: &[u8]) -> Option<Vec<u8>> {
    thread_local! {
        static INFLATER: std::cell::RefCell<flate2::Decompress> =
            std::cell::RefCell::new(flate2::Decompress::new(false));
    }
    INFLATER.with(|cell| {
        let mut decompress = cell.try_borrow_mut().ok()?;
        decompress.reset(false);
        inflate_with(&mut decompress, data, dictionary)
    })
}

fn inflate_with(
    decompress: &mut flate2::Decompress,
    data: &[u8],
    dictionary: &[u8],
) -> Option<Vec<u8>> {
    const LIMIT: usize = 2 * (u16::MAX as usize + 1);
    decompress.set_dictionary(dictionary).ok()?;
    let mut out = Vec::with_capacity((data.len() * 3).max(256));
    loop {
        let read = decompress.total_in() as usize;
        let status = decompress
            .decompress_vec(&data[read..], &mut out, flate2::FlushDecompress::Finish)
            .ok()?;
        if status == flate2::Status::StreamEnd {
            return Some(out);
        }
        if out.len() < out.capacity() || out.capacity() >= LIMIT {
            return None;
        }
        out.reserve((out.capacity() * 2).clamp(256, LIMIT) - out.len());
    }
}

/// A compact token read back ([`compact_token`]): its text, or its header and payload
/// (decoded) and signature.
enum Compact<'a> {
    Text(std::borrow::Cow<'a, [u8]>),
    Jws(
        std::borrow::Cow<'a, [u8]>,
        std::borrow::Cow<'a, [u8]>,
        &'a [u8],
    ),
}

impl<'a> Compact<'a> {
    fn read(data: &'a [u8], dictionary: &[u8]) -> Option<Compact<'a>> {
        use std::borrow::Cow;
        let (&tag, rest) = data.split_first()?;
        let len = |rest: &'a [u8]| -> Option<(usize, &'a [u8])> {
            Some((
                u16::from_be_bytes([*rest.first()?, *rest.get(1)?]) as usize,
                rest.get(2..)?,
            ))
        };
        let part = |rest: &'a [u8]| -> Option<(&'a [u8], &'a [u8])> {
            let (n, rest) = len(rest)?;
            Some((rest.get(..n)?, rest.get(n..)?))
        };
        match tag {
            0 => Some(Compact::Text(Cow::Borrowed(rest))),
            4 => {
                use base64::engine::general_purpose::URL_SAFE_NO_PAD;
                use base64::Engine;
                Some(Compact::Text(Cow::Owned(
                    URL_SAFE_NO_PAD.encode(rest).into_bytes(),
                )))
            }
            1 => {
                let (header, rest) = part(rest)?;
                let (payload, signature) = part(rest)?;
                Some(Compact::Jws(
                    Cow::Borrowed(header),
                    Cow::Borrowed(payload),
                    signature,
                ))
            }
            2 => {
                let (header, rest) = part(rest)?;
                let (payload, signature) = part(rest)?;
                let payload = inflate(payload, CLAIMS_DICTIONARY)?;
                Some(Compact::Jws(
                    Cow::Borrowed(header),
                    Cow::Owned(payload),
                    signature,
                ))
            }
            3 => {
                let (header_len, rest) = len(rest)?;
                let (deflated, signature) = part(rest)?;
                let mut joined = inflate(deflated, dictionary)?;
                if header_len > joined.len() {
                    return None;
                }
                let payload = joined.split_off(header_len);
                Some(Compact::Jws(
                    Cow::Owned(joined),
                    Cow::Owned(payload),
                    signature,
                ))
            }
            _ => None,
        }
    }
}

/// The decoded payload of a compact token (a JWS's claims); `None` for anything else.
pub(super) fn token_payload(data: &[u8], dictionary: &[u8]) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    match Compact::read(data, dictionary)? {
        Compact::Text(text) => {
            let payload = std::str::from_utf8(&text).ok()?.split('.').nth(1)?;
            URL_SAFE_NO_PAD.decode(payload).ok()
        }
        Compact::Jws(_, payload, _) => Some(payload.into_owned()),
    }
}

pub(super) fn expand_token(data: &[u8], dictionary: &[u8]) -> Option<String> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    match Compact::read(data, dictionary)? {
        Compact::Text(text) => String::from_utf8(text.into_owned()).ok(),
        Compact::Jws(header, payload, signature) => Some(format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(signature)
        )),
    }
}

/// Where a bundle keeps the login's client ([`put_client`]), after the three tokens: builds
/// that read only the tokens pass over it.
pub(super) const CLIENT: usize = 3;
/// The claims a login fetched from the userinfo endpoint (JSON), after the client field.
pub(super) const USERINFO: usize = 4;

/// How much of a user agent a session keeps: enough to tell browsers and devices apart, and
/// a bound on what a client's header costs the store.
pub(super) const MAX_USER_AGENT: usize = 256;

/// Fragments of the user agents of the usual browsers, the commonest last: a preset dictionary
/// lets a 120-byte user agent deflate to about 30. Part of the stored format: never change it,
/// add a flag.
const USER_AGENT_DICTIONARY: &[u8] = b"curl/ python-requests/ Mozilla/5.0 (X11; Linux x86_64; rv:) Gecko/20100101 Firefox/ (X11; Linux x86_64) (Windows NT 10.0; Win64; x64; rv:) Gecko/20100101 Firefox/ (iPad; CPU OS 17_0 like Mac OS X) (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Safari/605.1.15 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/.0.0.0 Mobile Safari/537.36 Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/.0.0.0 Safari/537.36 Edg/.0.0.0 Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/.0.0.0 Safari/537.36";

/// `flags | ip (4 or 16 bytes) | user agent`: flag 1 an IPv4 address, 2 an IPv6 one, 4 a user
/// agent deflated against [`USER_AGENT_DICTIONARY`], 8 one kept as it is (when deflating does
/// not help). Empty when nothing is known, and then not bundled at all.
pub(super) fn put_client(client: &super::LoginClient) -> Vec<u8> {
    let mut out = vec![0u8];
    match client.ip {
        Some(std::net::IpAddr::V4(ip)) => {
            out[0] |= 1;
            out.extend_from_slice(&ip.octets());
        }
        Some(std::net::IpAddr::V6(ip)) => {
            out[0] |= 2;
            out.extend_from_slice(&ip.octets());
        }
        None => {}
    }
    if let Some(agent) = client.user_agent.as_deref() {
        let agent = agent.as_bytes();
        match deflate(agent, USER_AGENT_DICTIONARY).filter(|d| d.len() < agent.len()) {
            Some(smaller) => {
                out[0] |= 4;
                out.extend_from_slice(&smaller);
            }
            None => {
                out[0] |= 8;
                out.extend_from_slice(agent);
            }
        }
    }
    if out[0] == 0 {
        out.clear();
    }
    out
}

/// What [`put_client`] wrote; `None` for anything else.
pub(super) fn read_client(data: &[u8]) -> Option<super::LoginClient> {
    let (&flags, rest) = data.split_first()?;
    if flags > 0b1111 || flags & 3 == 3 || flags & 12 == 12 {
        return None;
    }
    let (ip, rest) = match flags & 3 {
        1 => {
            let octets: [u8; 4] = rest.get(..4)?.try_into().ok()?;
            (Some(std::net::IpAddr::from(octets)), rest.get(4..)?)
        }
        2 => {
            let octets: [u8; 16] = rest.get(..16)?.try_into().ok()?;
            (Some(std::net::IpAddr::from(octets)), rest.get(16..)?)
        }
        _ => (None, rest),
    };
    let agent = match flags & 12 {
        4 => Some(inflate(rest, USER_AGENT_DICTIONARY)?),
        8 => Some(rest.to_vec()),
        _ if rest.is_empty() => None,
        _ => return None,
    };
    let user_agent = agent.map(String::from_utf8).transpose().ok()?;
    Some(super::LoginClient { ip, user_agent })
}

/// The codec behind the seal, for the fuzz targets: reads every entry of a bundle as the
/// session would, and checks that any token text compacts and comes back exactly.
#[cfg(feature = "fuzzing")]
pub fn fuzz_token_codec(data: &[u8], issuer: &str, subject: &str, sid: Option<&str>) {
    let dictionary = token_dictionary(Some(issuer), subject, sid);
    for index in 0..3 {
        if let Some(Some(entry)) = bundle_entry(data, index) {
            let _ = expand_token(entry, &dictionary);
            let _ = token_payload(entry, &dictionary);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let compact = compact_token(text, &dictionary);
        assert_eq!(
            expand_token(&compact, &dictionary).as_deref(),
            Some(text),
            "a token must come back exactly"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::tests::names;
    use crate::session::{Session, TokenCipher};

    #[test]
    fn tokens_are_stored_compactly_and_come_back_exactly() {
        use base64::Engine;
        let b64 = |text: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
        let claims = r#"{"iss":"https://login.example.com/realms/corp","aud":"gatehouse","sub":"4b0c3bd4-8f2a-4c7e-9d61-2f4b8f0a1c55","email":"alice@example.com","preferred_username":"alice","groups":["staff","sales"],"nonce":"q8Zr1o2VQ7mZp3xYc1bK0sT9uW4aE6hJ"}"#;
        let jws = format!(
            "{}.{}.{}",
            b64(r#"{"alg":"RS256","kid":"k1"}"#),
            b64(claims),
            b64(&"s".repeat(256))
        );
        let dictionary = token_dictionary(
            Some("https://login.example.com/realms/corp"),
            "4b0c3bd4-8f2a-4c7e-9d61-2f4b8f0a1c55",
            None,
        );
        let compact = compact_token(&jws, &dictionary);
        assert_eq!(
            expand_token(&compact, &dictionary).as_deref(),
            Some(jws.as_str())
        );
        assert_eq!(compact[0], 3, "header and claims are deflated");
        assert!(
            compact.len() < jws.len() * 2 / 3,
            "{} of {}",
            compact.len(),
            jws.len()
        );
        assert!(
            compact.len() < compact_token(&jws, &token_dictionary(None, "", None)).len(),
            "the subject of the session compresses the token"
        );
        assert_ne!(
            expand_token(&compact, &token_dictionary(None, "another-subject", None)).as_deref(),
            Some(jws.as_str()),
            "read only beside its own names"
        );
        // Tag 2, as earlier builds wrote it: the claims alone deflated.
        let (header, payload) = (br#"{"alg":"RS256","kid":"k1"}"#, claims.as_bytes());
        let mut legacy = vec![2];
        let deflated = deflate(payload, CLAIMS_DICTIONARY).expect("deflates");
        for d in [&header[..], &deflated] {
            legacy.extend_from_slice(&(d.len() as u16).to_be_bytes());
            legacy.extend_from_slice(d);
        }
        legacy.extend_from_slice("s".repeat(256).as_bytes());
        assert_eq!(
            expand_token(&legacy, &dictionary).as_deref(),
            Some(jws.as_str())
        );
        assert_eq!(token_payload(&legacy, b"").as_deref(), Some(payload));
        let opaque = "0f3c9a7be41d5c2e8a6b9d0c1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f";
        assert_eq!(
            compact_token(opaque, b"")[0],
            4,
            "base64url text is kept decoded"
        );
        assert_eq!(compact_token(opaque, b"").len(), 1 + 48);
        for other in [
            opaque,
            "YQ",
            "YR",
            "opaque-refresh-token",
            "a.b",
            "e30.e30.e30=",
            "not base64!.x.y",
            "",
            "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSIsIm5vbmNlIjoieCJ9.c2lnbmF0dXJlLWJ5dGVz",
        ] {
            let compact = compact_token(other, &dictionary);
            assert_eq!(expand_token(&compact, &dictionary).as_deref(), Some(other));
        }
        let c = TokenCipher::new(b"a long enough shared secret for tests");
        let tokens = Tokens {
            id_token: Some(jws.clone()),
            access_token: None,
            refresh_token: Some("opaque-refresh-token".into()),
        };
        let s = Session::new(names(), &tokens, &c, Times::starting(1, 2));
        assert_eq!(s.tokens(&c), Some(tokens.clone()));
        assert_eq!(s.id_token_claims(&c).as_deref(), Some(claims.as_bytes()));
        assert_eq!(s.access_token(&c), None);
        let fresh = Tokens {
            access_token: Some("new-access".into()),
            ..tokens
        };
        let refreshed = s.with_tokens(&fresh, &c);
        assert_eq!(refreshed.tokens(&c), Some(fresh));
        assert_eq!(refreshed.access_token(&c).as_deref(), Some("new-access"));
        assert_ne!(refreshed.version(), s.version(), "new tokens, new version");
        assert_eq!(
            (
                refreshed.idp(),
                refreshed.subject(),
                refreshed.sid(),
                refreshed.acr()
            ),
            ("corp", "alice", Some("idp-session"), None)
        );
    }

    #[test]
    fn times_round_trip_compactly_whatever_their_values() {
        for times in [
            Times::starting(1_700_000_000, 1_700_028_800),
            Times {
                auth_time: Some(1),
                access_expires_at: Some(u64::MAX),
                refresh_at: Some(0),
                ..Times::starting(u64::MAX - 5, 3)
            },
            Times {
                refresh_at: Some(1_700_000_240),
                ..Times::starting(0, 0)
            },
        ] {
            let mut out = Vec::new();
            times.write(&mut out);
            assert_eq!(Times::read(&out), Some((times, out.len())));
        }
        let mut out = Vec::new();
        Times {
            auth_time: Some(1_699_990_000),
            access_expires_at: Some(1_700_000_300),
            refresh_at: Some(1_700_000_240),
            ..Times::starting(1_700_000_000, 1_700_028_800)
        }
        .write(&mut out);
        assert!(out.len() <= 18, "{} bytes", out.len());
        assert_eq!(Times::read(&[0b1000, 0]), None, "unknown flags");
        assert_eq!(Times::read(&[0, 0x80]), None, "a cut varint");
    }
}
