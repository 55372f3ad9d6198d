use super::*;
use crate::Pipelining;
use crate::peer::{self, AgentFrame};
use proptest::prelude::*;
use spop::TypedData;

fn run(machine: &mut Machine, input: &[u8]) -> (Vec<Event>, Vec<u8>) {
    let mut buf = BytesMut::from(input);
    let mut out = Vec::new();
    let mut events = Vec::new();
    while let Some(ev) = machine.poll(&mut buf, &mut out) {
        events.push(ev);
    }
    (events, out)
}

fn replies(mut out: &[u8]) -> Vec<AgentFrame> {
    let mut frames = Vec::new();
    while let Some((f, fin, used)) = peer::read(out).unwrap() {
        assert!(fin, "every agent frame carries FIN");
        frames.push(f);
        out = &out[used..];
    }
    assert!(out.is_empty(), "trailing bytes");
    frames
}

fn disconnect_status(out: &[u8]) -> u32 {
    match replies(out).last() {
        Some(AgentFrame::Disconnect { status, .. }) => *status,
        other => panic!("expected AGENT-DISCONNECT, got {other:?}"),
    }
}

#[test]
fn negotiates_the_smaller_frame_size_and_enforces_it() {
    let mut m = Machine::new(16_384, Pipelining::Auto);
    let (events, out) = run(&mut m, &peer::hello(1024, "pipelining,async", false));
    assert_eq!(
        events,
        vec![Event::Ready {
            max_frame_size: 1024,
            pipelining: true,
            healthcheck: false
        }]
    );
    assert!(matches!(
        replies(&out)[0],
        AgentFrame::Hello {
            max_frame_size: 1024,
            ..
        }
    ));
    let big = peer::notify(1, 1, "m", &[("x", TypedData::String("y".repeat(2000)))]);
    let (events, out) = run(&mut m, &big);
    assert!(matches!(events[0], Event::Closing(Close::Protocol(_))));
    assert_eq!(disconnect_status(&out), StatusCode::TooBig.to_u32());
}

fn announced(hello: &AgentFrame) -> &str {
    match hello {
        AgentFrame::Hello { capabilities, .. } => capabilities,
        other => panic!("expected AGENT-HELLO, got {other:?}"),
    }
}

/// HAProxy 2.x and 3.0 offer `async` by default; 3.1+ (the SPOP multiplexer whose demux
/// stalls on a full buffer) never does. `auto` pipelines only with the former.
#[test]
fn pipelining_is_announced_per_mode_and_peer() {
    for (mode, caps, want) in [
        (Pipelining::Auto, "pipelining,async", true),
        (Pipelining::Auto, "pipelining, async", true),
        (Pipelining::Auto, "pipelining,async,fragmentation", true),
        (Pipelining::Auto, "pipelining", false),
        (Pipelining::Auto, "", false),
        (Pipelining::Auto, "asynchronous", false),
        (Pipelining::On, "pipelining", true),
        (Pipelining::Off, "pipelining,async", false),
    ] {
        let mut m = Machine::new(16_384, mode);
        let (events, out) = run(&mut m, &peer::hello(16_380, caps, false));
        assert_eq!(
            events,
            vec![Event::Ready {
                max_frame_size: 16_380,
                pipelining: want,
                healthcheck: false
            }],
            "{mode} with HELLO capabilities {caps:?}"
        );
        let expected = if want { "pipelining" } else { "" };
        assert_eq!(announced(&replies(&out)[0]), expected, "{mode}, {caps:?}");
    }
}

#[test]
fn acks_stay_one_byte_under_max_frame_size() {
    let mut m = Machine::new(16_384, Pipelining::Auto);
    assert_eq!(m.ack_limit(), 16_383);
    run(&mut m, &peer::hello(16_380, "pipelining", false));
    assert_eq!(m.max_frame_size(), 16_380);
    assert_eq!(m.ack_limit(), 16_379);
}

#[test]
fn tiny_frame_size_from_haproxy_is_refused() {
    let mut m = Machine::new(16_384, Pipelining::Auto);
    let (_, out) = run(&mut m, &peer::hello(255, "pipelining", false));
    assert_eq!(disconnect_status(&out), StatusCode::BadFrameSize.to_u32());
}

#[test]
fn unsupported_version_is_refused() {
    let mut m = Machine::new(16_384, Pipelining::Auto);
    let hello = peer::frame(
        1,
        1,
        0,
        0,
        &peer::kv_list(&[
            ("supported-versions", TypedData::String("1.0".into())),
            ("max-frame-size", TypedData::UInt32(16_380)),
            ("capabilities", TypedData::String("pipelining".into())),
        ]),
    );
    let (_, out) = run(&mut m, &hello);
    assert_eq!(disconnect_status(&out), StatusCode::BadVersion.to_u32());
}

#[test]
fn notify_before_hello_and_second_hello_are_invalid() {
    let mut m = Machine::new(16_384, Pipelining::Auto);
    let (_, out) = run(&mut m, &peer::notify(1, 1, "m", &[]));
    assert_eq!(disconnect_status(&out), StatusCode::Invalid.to_u32());
    assert!(m.is_closed());

    let mut m = Machine::new(16_384, Pipelining::Auto);
    let mut input = peer::hello(16_380, "pipelining", false);
    input.extend(peer::hello(16_380, "pipelining", false));
    let (events, out) = run(&mut m, &input);
    assert_eq!(events.len(), 2);
    assert_eq!(disconnect_status(&out), StatusCode::Invalid.to_u32());
}

#[test]
fn nothing_is_read_after_close() {
    let mut m = Machine::new(16_384, Pipelining::Auto);
    let mut input = peer::hello(16_380, "pipelining", false);
    input.extend(peer::disconnect(0, "bye"));
    input.extend(peer::notify(1, 1, "m", &[]));
    let (events, out) = run(&mut m, &input);
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(matches!(
        events[1],
        Event::Closing(Close::Peer { status: 0, .. })
    ));
    assert_eq!(disconnect_status(&out), 0);
}

#[test]
fn unknown_capabilities_are_ignored() {
    let mut m = Machine::new(16_384, Pipelining::Auto);
    let (events, _) = run(
        &mut m,
        &peer::hello(16_380, "pipelining,async,fragmentation,shiny", false),
    );
    assert!(matches!(events[0], Event::Ready { .. }));
}

fn valid_stream() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((any::<u64>(), any::<u64>(), ".{0,40}"), 0..8).prop_map(|notifies| {
        let mut bytes = peer::hello(16_380, "pipelining,async", false);
        for (s, f, v) in notifies {
            bytes.extend(peer::notify(s, f, "check", &[("v", TypedData::String(v))]));
        }
        bytes
    })
}

proptest! {
    /// Arbitrary bytes never panic the machine, and anything it ends on is a
    /// well-formed AGENT-DISCONNECT.
    #[test]
    fn arbitrary_input_never_panics(input in prop::collection::vec(any::<u8>(), 0..2048)) {
        let mut m = Machine::new(4096, Pipelining::Auto);
        let (_, out) = run(&mut m, &input);
        let frames = replies(&out);
        if m.is_closed() {
            let ended = matches!(frames.last(), Some(AgentFrame::Disconnect { .. }));
            prop_assert!(ended, "closed without AGENT-DISCONNECT");
        }
    }

    /// Garbage after a valid handshake is also handled.
    #[test]
    fn garbage_after_hello_never_panics(tail in prop::collection::vec(any::<u8>(), 0..1024)) {
        let mut input = peer::hello(16_380, "pipelining", false);
        input.extend(tail);
        let mut m = Machine::new(4096, Pipelining::Auto);
        let _ = run(&mut m, &input);
    }

    /// However the bytes are split into reads, the same events come out.
    #[test]
    fn chunking_does_not_change_events(stream in valid_stream(), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..16)) {
        let mut whole = Machine::new(16_384, Pipelining::Auto);
        let (expected, expected_out) = run(&mut whole, &stream);

        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        points.push(0);
        points.push(stream.len());
        points.sort_unstable();
        let mut m = Machine::new(16_384, Pipelining::Auto);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut events = Vec::new();
        for pair in points.windows(2) {
            buf.extend_from_slice(&stream[pair[0]..pair[1]]);
            while let Some(ev) = m.poll(&mut buf, &mut out) {
                events.push(ev);
            }
        }
        prop_assert_eq!(events, expected);
        prop_assert_eq!(replies(&out), replies(&expected_out));
    }
}
