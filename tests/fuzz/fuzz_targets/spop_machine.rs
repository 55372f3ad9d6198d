//! SPOP connection handling: arbitrary bytes, delivered in arbitrary pieces, into the
//! protocol state machine. It must never panic, and once closed it must have written a
//! well-formed AGENT-DISCONNECT.
#![no_main]

use bytes::BytesMut;
use keyward_spoa::Pipelining;
use keyward_spoa::machine::Machine;
use keyward_spoa::peer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size; a valid HELLO is prepended half the time so
    // the fuzzer reaches the post-handshake states quickly.
    let Some((&ctl, rest)) = data.split_first() else { return };
    let mut input = Vec::new();
    if ctl & 0x80 != 0 {
        input.extend(peer::hello(16_380, "pipelining,async", false));
    }
    input.extend_from_slice(rest);
    let chunk = usize::from(ctl & 0x3f).max(1);
    let mut m = Machine::new(4096, Pipelining::Auto);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in input.chunks(chunk) {
        buf.extend_from_slice(piece);
        while m.poll(&mut buf, &mut out).is_some() {}
        assert!(buf.len() <= 4 + 16_380 + chunk, "buffered more than one frame");
    }
    let mut rest = out.as_slice();
    let mut last = None;
    while let Ok(Some((frame, fin, used))) = peer::read(rest) {
        assert!(fin);
        last = Some(frame);
        rest = &rest[used..];
    }
    assert!(rest.is_empty(), "agent wrote a partial frame");
    if m.is_closed() {
        assert!(matches!(last, Some(peer::AgentFrame::Disconnect { .. })));
    }
});
