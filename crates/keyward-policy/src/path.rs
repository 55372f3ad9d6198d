//! Path normalization before prefix matching, so that a public prefix cannot be used to
//! reach a protected one (`/public/../admin` is matched as `/admin`).
//!
//! Only what changes which prefix a path falls under is normalized: percent-encoded
//! *unreserved* characters (`A-Z a-z 0-9 - . _ ~`, which RFC 3986 6.2.2.2 makes
//! equivalent to their decoded form) are decoded, so `/%61dmin` is matched as `/admin`;
//! repeated slashes are collapsed and `.` / `..` segments are resolved (RFC 3986
//! `remove_dot_segments`). Reserved escapes stay: `%2f` stays `%2f`, so
//! `/public/..%2fadmin` is one segment `..%2fadmin` under `/public/`, as RFC 3986 and
//! most upstream servers see it.
//!
//! Some upstreams read a path another way: servlet containers drop `;parameters`, IIS
//! takes `\` for `/`, nginx and WSGI servers decode `%2F` before routing. A path where
//! that makes a difference has [`other_readings`]; the policy decides on every reading
//! and keeps the stricter answer.

use std::borrow::Cow;

/// Normalizes a request path (without its query string) for prefix matching.
///
/// - repeated `/` collapse to one;
/// - `.` segments are dropped, `..` segments remove the segment before them (never
///   climbing above the root); `%2e` / `%2E` count as `.` in such segments;
/// - a path that ends in a dot segment keeps a trailing `/` (`/a/b/..` gives `/a/`);
/// - an empty path becomes `/`; a path that does not start with `/` gets one;
/// - every other byte is kept as it is (no other percent-decoding, case unchanged).
///
/// Returns `Cow::Borrowed` when the path is already normal, without allocating.
pub fn normalize_path(raw: &str) -> Cow<'_, str> {
    let decoded = decode_unreserved(raw);
    if is_normal(&decoded) {
        decoded
    } else {
        Cow::Owned(normalize_slow(&decoded))
    }
}

/// How Java servlet containers (Tomcat, Jetty, Undertow, and Spring on them) and
/// servers that take `\` for `/` (IIS, some frameworks) read a path: each segment's
/// `;parameters` dropped (`/admin;jsessionid=1` is `/admin`, and `/public/..;/admin` is
/// `/admin`), and `\` as `/`. `None` when the path has neither `;` nor `\`, which
/// is every path on most sites: then all upstreams read it alike. Servers with only one
/// of the two habits are [`habit_reading`].
pub fn lenient_reading(raw: &str) -> Option<String> {
    habit_reading(raw, true, true)
}

/// `raw` as read by a server that drops each segment's `;parameters` (`parameters`:
/// servlet containers) and/or takes `\` for `/` (`backslashes`: IIS, which keeps `;`;
/// Jetty drops parameters but keeps `\`). `None` when that changes nothing.
pub fn habit_reading(raw: &str, parameters: bool, backslashes: bool) -> Option<String> {
    let has = |c: u8| raw.bytes().any(|b| b == c);
    let changes = (parameters && has(b';')) || (backslashes && has(b'\\'));
    if !changes {
        return None;
    }
    let mut out = String::with_capacity(raw.len());
    let mut in_parameters = false;
    for c in raw.chars() {
        match c {
            '/' => {
                out.push('/');
                in_parameters = false;
            }
            '\\' if backslashes => {
                out.push('/');
                in_parameters = false;
            }
            ';' if parameters => in_parameters = true,
            _ if in_parameters => {}
            _ => out.push(c),
        }
    }
    Some(out)
}

/// What a server that decodes escaped slashes before routing reads (nginx, and the
/// `PATH_INFO` of WSGI and CGI): `%2F` as `/` and `%5C` as `\`. `None` when the path
/// has neither escape. Other escapes are kept whole, so `%252F` stays `%252F`.
pub fn decoded_slashes(raw: &str) -> Option<String> {
    let b = raw.as_bytes();
    let slash_at = |i: usize| escaped_slash(&b[i..]).is_some();
    if !(0..b.len()).any(slash_at) {
        return None;
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if let Some(v) = escaped_slash(&b[i..]) {
            out.push(v);
            i += 3;
        } else if b[i] == b'%' && !bare_percent(&b[i..]) {
            // Another escape, kept whole: its hex digits are not read again.
            out.extend_from_slice(&b[i..i + 3]);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    // Only ASCII triplets were replaced by ASCII bytes: still valid UTF-8.
    Some(String::from_utf8(out).unwrap_or_else(|_| raw.to_owned()))
}

/// The byte a `%2F` or `%5C` (any case) at the start of `b` encodes.
fn escaped_slash(b: &[u8]) -> Option<u8> {
    match b {
        [b'%', b'2', l, ..] if l.eq_ignore_ascii_case(&b'f') => Some(b'/'),
        [b'%', b'5', l, ..] if l.eq_ignore_ascii_case(&b'c') => Some(b'\\'),
        _ => None,
    }
}

/// Every normalized path, other than `normalize_path(raw)` itself, that some upstream
/// routes `raw` on. The habits are: `;parameters` dropped, `\` taken for `/` (each
/// alone or both, see [`habit_reading`]), and escaped slashes decoded
/// ([`decoded_slashes`]). A reading applies the decoding alone, the habits alone, or
/// both in either order (IIS decodes before it reads `\`; Tomcat, when allowed to
/// decode `%2F` at all, drops parameters first). Distinct, and empty without
/// allocating for a path with no `;`, `\`, `%2F` or `%5C`, which is every path on most
/// sites.
pub fn other_readings(raw: &str) -> Vec<String> {
    let mut readings: Vec<String> = Vec::new();
    if !raw.bytes().any(|b| matches!(b, b';' | b'\\' | b'%')) {
        return readings;
    }
    let decoded = decoded_slashes(raw);
    if decoded.is_none() && !raw.bytes().any(|b| matches!(b, b';' | b'\\')) {
        return readings;
    }
    let literal = normalize_path(raw);
    let mut candidates = vec![decoded.clone()];
    for (parameters, backslashes) in [(true, true), (true, false), (false, true)] {
        let habits = habit_reading(raw, parameters, backslashes);
        candidates.push(
            decoded
                .as_deref()
                .and_then(|d| habit_reading(d, parameters, backslashes)),
        );
        candidates.push(habits.as_deref().and_then(decoded_slashes));
        candidates.push(habits);
    }
    for reading in candidates.into_iter().flatten() {
        let normal = normalize_path(&reading).into_owned();
        if normal != *literal && !readings.contains(&normal) {
            readings.push(normal);
        }
    }
    readings
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The byte a `%XX` at the start of `b` encodes, when it is an unreserved character.
fn escaped_unreserved(b: &[u8]) -> Option<u8> {
    match b {
        [b'%', h, l, ..] => {
            let v = hex(*h)? << 4 | hex(*l)?;
            unreserved(v).then_some(v)
        }
        _ => None,
    }
}

/// Whether `b` starts with a `%` that is not followed by two hex digits.
fn bare_percent(b: &[u8]) -> bool {
    match b {
        [b'%', h, l, ..] => hex(*h).is_none() || hex(*l).is_none(),
        [b'%', ..] => true,
        _ => false,
    }
}

/// Decodes `%XX` escapes of unreserved characters and writes a bare `%` (one not
/// followed by two hex digits, which is malformed) as `%25`; every other byte is kept.
/// Because no bare `%` is left, a decoded character can never complete a new escape:
/// `%%34a` becomes `%254a`, not `%4a` (which a second pass would decode again).
fn decode_unreserved(raw: &str) -> Cow<'_, str> {
    let b = raw.as_bytes();
    if !(0..b.len()).any(|i| escaped_unreserved(&b[i..]).is_some() || bare_percent(&b[i..])) {
        return Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(b.len() + 8);
    let mut i = 0;
    while i < b.len() {
        if let Some(v) = escaped_unreserved(&b[i..]) {
            out.push(v);
            i += 3;
        } else if bare_percent(&b[i..]) {
            out.extend_from_slice(b"%25");
            i += 1;
        } else if b[i] == b'%' {
            // A reserved escape: kept whole, so its hex digits are not read again.
            out.extend_from_slice(&b[i..i + 3]);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    // Only ASCII triplets were replaced by ASCII bytes: still valid UTF-8.
    Cow::Owned(String::from_utf8(out).unwrap_or_else(|_| raw.to_owned()))
}

/// True when `normalize_path(path) == path`: starts with `/`, no empty segment except a
/// trailing one, no dot segment.
fn is_normal(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if (segment.is_empty() && !last) || dot_segment(segment).is_some() {
            return false;
        }
    }
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dot {
    /// `.`
    Current,
    /// `..`
    Parent,
}

/// Whether `segment` is `.` or `..`, with `%2e` / `%2E` accepted for each dot.
fn dot_segment(segment: &str) -> Option<Dot> {
    let b = segment.as_bytes();
    let is_pct_dot = |s: &[u8]| s.eq_ignore_ascii_case(b"%2e");
    let first = if b.first() == Some(&b'.') {
        1
    } else if b.len() >= 3 && is_pct_dot(&b[..3]) {
        3
    } else {
        return None;
    };
    let rest = &b[first..];
    if rest.is_empty() {
        Some(Dot::Current)
    } else if rest == b"." || is_pct_dot(rest) {
        Some(Dot::Parent)
    } else {
        None
    }
}

fn normalize_slow(raw: &str) -> String {
    // Segments of the output, in order; empty segments (from `//`) are dropped.
    let mut out: Vec<&str> = Vec::new();
    // Whether the output ends with `/` after its last segment.
    let mut trailing_slash = true;
    for segment in raw.split('/') {
        match dot_segment(segment) {
            Some(Dot::Current) => trailing_slash = true,
            Some(Dot::Parent) => {
                out.pop();
                trailing_slash = true;
            }
            None if segment.is_empty() => trailing_slash = true,
            None => {
                out.push(segment);
                trailing_slash = false;
            }
        }
    }
    let mut path = String::with_capacity(raw.len() + 1);
    for segment in &out {
        path.push('/');
        path.push_str(segment);
    }
    if trailing_slash {
        path.push('/');
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> String {
        normalize_path(p).into_owned()
    }

    #[test]
    fn resolves_dot_segments() {
        assert_eq!(norm("/a/../b"), "/b");
        assert_eq!(norm("/a/./b"), "/a/b");
        assert_eq!(norm("/public/../admin"), "/admin");
        assert_eq!(norm("/a/b/../../c"), "/c");
        assert_eq!(norm("/a/b/.."), "/a/");
        assert_eq!(norm("/a/b/."), "/a/b/");
        assert_eq!(norm("/."), "/");
        assert_eq!(norm("/.."), "/");
    }

    #[test]
    fn dot_dot_never_climbs_above_root() {
        assert_eq!(norm("/../x"), "/x");
        assert_eq!(norm("/../../../admin"), "/admin");
        assert_eq!(norm("/a/../../admin/"), "/admin/");
    }

    #[test]
    fn percent_encoded_dots_count_in_dot_segments() {
        assert_eq!(norm("/a/%2e%2e/b"), "/b");
        assert_eq!(norm("/a/%2E%2E/b"), "/b");
        assert_eq!(norm("/a/.%2e/b"), "/b");
        assert_eq!(norm("/a/%2e./b"), "/b");
        assert_eq!(norm("/a/%2e/b"), "/a/b");
        assert_eq!(norm("/public/%2e%2e/admin"), "/admin");
    }

    #[test]
    fn unreserved_escapes_are_decoded_reserved_ones_kept() {
        // `%2f` is not a separator here: one segment `..%2fadmin` under /public/.
        assert_eq!(norm("/public/..%2fadmin"), "/public/..%2fadmin");
        assert!(matches!(
            normalize_path("/public/..%2fadmin"),
            Cow::Borrowed(_)
        ));
        // Unreserved characters are the same decoded or not (RFC 3986 6.2.2.2).
        assert_eq!(norm("/%61dmin"), "/admin");
        assert_eq!(norm("/a%2eb/%41dmin"), "/a.b/Admin");
        assert_eq!(norm("/%7euser/%5fx"), "/~user/_x");
        assert_eq!(norm("/a%2Fb%3F%25"), "/a%2Fb%3F%25");
        // A bare `%` is malformed: written as %25 so that nothing decodes twice.
        assert_eq!(norm("/p%%34a"), "/p%254a");
        assert_eq!(norm("/%zz%4"), "/%25zz%254");
        for p in ["/p%%34a", "/%4%31", "/%%%36%31", "/x%"] {
            let once = norm(p);
            assert_eq!(norm(&once), once, "{p}");
        }
        assert_eq!(norm("/A/./B"), "/A/B");
        // Segments that merely start or end with dots are ordinary.
        assert_eq!(norm("/.well-known/x"), "/.well-known/x");
        assert_eq!(norm("/a/.../b"), "/a/.../b");
        assert_eq!(norm("/a/..b/c."), "/a/..b/c.");
        assert_eq!(norm("/a/%2e%2e%2e"), "/a/...");
    }

    #[test]
    fn decoded_slashes_decode_only_escaped_slashes_once() {
        assert_eq!(decoded_slashes("/a/b"), None);
        assert_eq!(decoded_slashes("/a%20b%3F"), None);
        assert_eq!(decoded_slashes("/a%2fb%2Fc").as_deref(), Some("/a/b/c"));
        assert_eq!(decoded_slashes("/a%5cb%5C").as_deref(), Some("/a\\b\\"));
        // The escape of `%` is kept whole, so its digits are not read as `2F`.
        assert_eq!(decoded_slashes("/a%252Fb"), None);
        assert_eq!(decoded_slashes("/a%25%2Fb").as_deref(), Some("/a%25/b"));
        assert_eq!(decoded_slashes("/%2").as_deref(), None);
        assert_eq!(decoded_slashes("/%%2F").as_deref(), Some("/%/"));
    }

    #[test]
    fn other_readings_are_distinct_normal_and_not_the_literal_one() {
        assert!(other_readings("/admin/users").is_empty());
        assert!(other_readings("/a%20b").is_empty());
        assert_eq!(other_readings("/a;"), ["/a"]);
        // Readings that come out the same as the literal one are left out.
        assert!(other_readings("/a;x/../b").is_empty());
        assert_eq!(other_readings("/a/b;"), ["/a/b"]);
        assert!(other_readings("/a/./b%2F").contains(&"/a/b/".to_owned()));
        assert_eq!(other_readings("/public/a%2Fb"), ["/public/a/b"]);
        // Parameters dropped after decoding (IIS order), decoding with the parameter
        // kept (nginx), parameters dropped first (Tomcat: here nothing is left to
        // decode, and that reading is the servlet one).
        assert_eq!(
            other_readings("/public/..;x%2f..%2fadmin"),
            ["/public/admin", "/admin", "/"]
        );
        // IIS: `\` as `/`, `;` kept (`..;` is a segment that `..` removes).
        assert!(other_readings("/admin\\..;\\..\\secret").contains(&"/admin/secret".to_owned()));
        assert!(other_readings("/admin%5C..;%5C..%5Csecret").contains(&"/admin/secret".to_owned()));
        // Jetty: parameters dropped, `\` kept.
        assert!(
            other_readings("/pub/..;/admin/x\\..\\..\\..\\pub")
                .contains(&"/admin/x\\..\\..\\..\\pub".to_owned())
        );
        // The same reading by two routes is listed once.
        assert_eq!(other_readings("/a\\b"), ["/a/b"]);
        assert_eq!(other_readings("/a%5Cb"), ["/a\\b", "/a/b"]);
    }

    #[test]
    fn collapses_slashes() {
        assert_eq!(norm("//admin"), "/admin");
        assert_eq!(norm("/a//b///c"), "/a/b/c");
        assert_eq!(norm("/a//"), "/a/");
        assert_eq!(norm("//"), "/");
    }

    #[test]
    fn empty_and_relative() {
        assert_eq!(norm(""), "/");
        assert_eq!(norm("a/b"), "/a/b");
        assert_eq!(norm("../admin"), "/admin");
        assert_eq!(norm("*"), "/*");
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for p in [
            "/",
            "/a",
            "/a/",
            "/a/b.c",
            "/static/app.js",
            "/.well-known/x",
            "/a%2Fb",
        ] {
            assert!(
                matches!(normalize_path(p), Cow::Borrowed(b) if b == p),
                "{p}"
            );
        }
        for p in ["", "//", "/./", "/a/..", "/a/%2e", "a"] {
            assert!(matches!(normalize_path(p), Cow::Owned(_)), "{p}");
        }
    }

    #[test]
    fn keeps_multibyte_text() {
        assert_eq!(norm("/ä//ö/../ü"), "/ä/ü");
    }
}
