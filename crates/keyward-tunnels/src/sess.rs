//! Reading HAProxy's `show sess` answers. No IO; never panics on any input.
//!
//! The summary (`show sess`) has one line per stream, in every version from 2.6 to 3.x:
//! `0x55d0c8a3e000: proto=tcpv4 src=127.0.0.1:50962 fe=front be=app srv=app ts=… …`
//! (only the leading fields are read: the rest changes between versions). It has no
//! stream id, so a candidate is confirmed with the detailed form (`show sess <ptr>`),
//! whose first line is `0x…: [07/Dec/2026:03:55:12.123456] id=42 proto=tcpv4
//! source=127.0.0.1:50962`.

use std::net::{IpAddr, SocketAddr};

/// One stream of the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listed<'a> {
    /// The stream's pointer, as `shutdown session` and `show sess <ptr>` take it.
    pub ptr: &'a str,
    /// The client's address (`None` for Unix-socket clients and internal streams).
    pub client: Option<SocketAddr>,
}

/// The streams of a `show sess` answer. Lines that are not stream lines are skipped.
pub fn parse_list(text: &str) -> impl Iterator<Item = Listed<'_>> {
    text.lines().filter_map(|line| {
        let (ptr, rest) = line.split_once(": ")?;
        if !is_pointer(ptr) {
            return None;
        }
        let client = field(rest, "src=").and_then(parse_addr);
        Some(Listed { ptr, client })
    })
}

/// The stream described by a `show sess <ptr>` answer: its id and client address.
/// `None`: the stream is gone (`Session not found.`) or the answer is not one.
pub fn parse_detail(text: &str) -> Option<(u32, SocketAddr)> {
    let first = text.lines().next()?;
    let (ptr, rest) = first.split_once(": ")?;
    if !is_pointer(ptr) {
        return None;
    }
    let id = field(rest, "id=")?.parse().ok()?;
    let client = parse_addr(field(rest, "source=")?)?;
    Some((id, client))
}

/// `0x` and hex digits (what `%p` prints on Linux).
fn is_pointer(s: &str) -> bool {
    s.strip_prefix("0x")
        .is_some_and(|h| (1..=16).contains(&h.len()) && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The value of the first space-separated `key…` field of `rest`.
fn field<'a>(rest: &'a str, key: &str) -> Option<&'a str> {
    rest.split(' ').find_map(|f| f.strip_prefix(key))
}

/// `127.0.0.1:50962`, `::1:50962` (HAProxy prints IPv6 without brackets) or
/// `[::1]:50962`.
fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.rsplit_once(':')?;
    let ip = ip
        .strip_prefix('[')
        .and_then(|i| i.strip_suffix(']'))
        .unwrap_or(ip);
    Some(SocketAddr::new(
        ip.parse::<IpAddr>().ok()?,
        port.parse().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Shapes as HAProxy 2.6 and 3.1 print them.
    const LIST_26: &str = "\
0x55d0c8a3e000: proto=tcpv4 src=127.0.0.1:50962 fe=keyward-front be=app srv=app ts=00 epoch=0 age=2s calls=3 rate=0 cpu=0 lat=0 rq[f=848000h,i=0,an=00h,rx=,wx=,ax=] rp[f=80048000h,i=0,an=00h,rx=,wx=,ax=] scf=[8,200008h,fd=13] scb=[8,200118h,fd=14] exp=
0x55d0c8a3f400: proto=unix_stream src=unix:1 fe=GLOBAL be=<NONE> srv=<none> ts=00 epoch=0x1 age=0s calls=1 rate=1 cpu=0 lat=0 rq[f=c48202h,i=0,an=00h,rx=,wx=,ax=] rp[f=80008002h,i=0,an=00h,rx=,wx=,ax=] scf=[8,c0000h,fd=15] scb=[8,1h,fd=-1] exp=10s rc=0 c_exp=
0x7f3a1c0b2a10: proto=tcpv6 src=::1:41000 fe=keyward-front be=app srv=app ts=00 epoch=0 age=9s calls=5 rate=0 cpu=0 lat=0 rq[f=848000h,i=0,an=00h,ax=] rp[f=80048000h,i=0,an=00h,ax=] scf=[7,0h,fd=16,rex=,wex=] scb=[7,1h,fd=17,rex=,wex=] exp=

";

    #[test]
    fn the_summary_lists_pointers_and_clients() {
        let got: Vec<_> = parse_list(LIST_26).collect();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].ptr, "0x55d0c8a3e000");
        assert_eq!(got[0].client, Some("127.0.0.1:50962".parse().unwrap()));
        assert_eq!(got[1].client, None, "the CLI's own stream");
        assert_eq!(got[2].client, Some("[::1]:41000".parse().unwrap()));
    }

    #[test]
    fn the_detail_gives_id_and_source() {
        let detail = "0x55d0c8a3e000: [07/Dec/2026:03:55:12.123456] id=42 proto=tcpv4 source=127.0.0.1:50962\n  flags=0x44a, conn_retries=0, conn_exp=<NEVER> conn_et=0x000 srv_conn=0x55d0c8a1b000, pend_pos=(nil) waiting=0 epoch=0\n  frontend=keyward-front (id=2 mode=http), listener=? (id=1) addr=127.0.0.1:8080\n\n";
        assert_eq!(
            parse_detail(detail),
            Some((42, "127.0.0.1:50962".parse().unwrap()))
        );
        assert_eq!(parse_detail("Session not found.\n\n"), None);
        assert_eq!(parse_detail(""), None);
        assert_eq!(
            parse_detail("0x1: [x] id=4294967296 proto=tcpv4 source=1.2.3.4:5\n"),
            None,
            "ids are 32-bit"
        );
        assert_eq!(
            parse_detail("0x1: [x] id=7 proto=unix_stream source=unix:1\n"),
            None
        );
    }

    proptest! {
        #[test]
        fn any_answer_is_read_without_panic(text in ".{0,400}") {
            let _ = parse_list(&text).count();
            let _ = parse_detail(&text);
        }

        #[test]
        fn printed_streams_read_back(
            ptr in 1u64..,
            ip in any::<std::net::IpAddr>(),
            port in any::<u16>(),
            id in any::<u32>(),
        ) {
            // What HAProxy prints: IPv6 without brackets.
            let client = SocketAddr::new(ip, port);
            let list = format!("0x{ptr:x}: proto=tcpv4 src={ip}:{port} fe=f be=b srv=s ts=00\n");
            let got: Vec<_> = parse_list(&list).collect();
            prop_assert_eq!(got.len(), 1);
            prop_assert_eq!(got[0].client, Some(client));
            let detail = format!("0x{ptr:x}: [07/Dec/2026:03:55:12.123456] id={id} proto=tcpv4 source={ip}:{port}\n");
            prop_assert_eq!(parse_detail(&detail), Some((id, client)));
        }
    }
}
