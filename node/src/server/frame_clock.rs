//! When a client began the HTTP/2 frame it has not finished sending.
//!
//! A request only reaches tonic, and its deadline, once its header block
//! is whole. A client that trickles a HEADERS frame a byte at a time, or
//! sends CONTINUATION frames that never end the block, holds its
//! connection without ever making a request, and it keeps the idle timeout
//! away because bytes do arrive. The accept loop reads the frame headers
//! of an HTTP/2 connection as they pass (under TLS, once decrypted), and
//! closes a connection whose frame or header block stays unfinished for
//! `--header-timeout-secs`.
//!
//! A connection that does not open with the HTTP/2 preface (HTTP/1, which
//! the client port answers with an error) is not tracked.

use tokio::time::Instant;

/// The client's connection preface (RFC 9113, section 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_BYTES: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;

/// Follows a connection's incoming bytes frame by frame.
#[derive(Debug, Clone)]
pub struct FrameClock {
    state: State,
}

#[derive(Debug, Clone)]
enum State {
    /// How many bytes of the preface arrived so far.
    Preface(usize),
    Frames(Frames),
    /// Not HTTP/2.
    Untracked,
}

#[derive(Debug, Clone, Default)]
struct Frames {
    header: [u8; FRAME_HEADER_BYTES],
    header_read: usize,
    payload_left: usize,
    /// A HEADERS frame without END_HEADERS was read, and no CONTINUATION
    /// with it yet: the block goes on in the next frame (RFC 9113, 6.10).
    header_block_open: bool,
    /// When the first byte of the unfinished frame, or of the unfinished
    /// header block, arrived.
    begun: Option<Instant>,
}

impl Default for FrameClock {
    fn default() -> Self {
        Self {
            state: State::Preface(0),
        }
    }
}

impl FrameClock {
    /// Notes `bytes`, read from the client at `now`.
    pub fn observe(&mut self, mut bytes: &[u8], now: Instant) {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Untracked => return,
                State::Preface(matched) => {
                    let take = bytes.len().min(PREFACE.len() - *matched);
                    if bytes[..take] != PREFACE[*matched..*matched + take] {
                        self.state = State::Untracked;
                        return;
                    }
                    *matched += take;
                    bytes = &bytes[take..];
                    if *matched == PREFACE.len() {
                        self.state = State::Frames(Frames::default());
                    }
                }
                State::Frames(frames) => bytes = frames.observe(bytes, now),
            }
        }
    }

    /// When the unfinished frame or header block began, if one is open.
    pub fn unfinished_since(&self) -> Option<Instant> {
        match &self.state {
            State::Frames(frames) => frames.begun,
            State::Preface(_) | State::Untracked => None,
        }
    }
}

impl Frames {
    /// Takes what `bytes` holds of the current frame; returns the rest.
    fn observe<'a>(&mut self, bytes: &'a [u8], now: Instant) -> &'a [u8] {
        if self.header_read < FRAME_HEADER_BYTES {
            if self.header_read == 0 && self.begun.is_none() {
                self.begun = Some(now);
            }
            let take = bytes.len().min(FRAME_HEADER_BYTES - self.header_read);
            self.header[self.header_read..self.header_read + take].copy_from_slice(&bytes[..take]);
            self.header_read += take;
            if self.header_read == FRAME_HEADER_BYTES {
                let [l0, l1, l2, kind, flags, ..] = self.header;
                self.payload_left = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
                if kind == HEADERS || kind == CONTINUATION {
                    self.header_block_open = flags & END_HEADERS == 0;
                }
                self.finish_if_whole();
            }
            return &bytes[take..];
        }
        let take = bytes.len().min(self.payload_left);
        self.payload_left -= take;
        self.finish_if_whole();
        &bytes[take..]
    }

    fn finish_if_whole(&mut self) {
        if self.header_read == FRAME_HEADER_BYTES && self.payload_left == 0 {
            self.header_read = 0;
            if !self.header_block_open {
                self.begun = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    fn frame(kind: u8, flags: u8, payload: usize) -> Vec<u8> {
        let mut bytes = vec![
            (payload >> 16) as u8,
            (payload >> 8) as u8,
            payload as u8,
            kind,
            flags,
            0,
            0,
            0,
            1,
        ];
        bytes.resize(FRAME_HEADER_BYTES + payload, 0xAB);
        bytes
    }

    /// A frame the client sends, and for a HEADERS or CONTINUATION frame
    /// whether it leaves its header block open.
    #[derive(Debug, Clone)]
    struct Sent {
        bytes: Vec<u8>,
        leaves_block_open: Option<bool>,
    }

    fn any_frame() -> impl Strategy<Value = Sent> {
        (
            prop_oneof![Just(HEADERS), Just(CONTINUATION), 0u8..=0xA],
            any::<bool>(),
            0usize..600,
        )
            .prop_map(|(kind, end_headers, payload)| {
                let flags = if end_headers { END_HEADERS } else { 0 };
                Sent {
                    bytes: frame(kind, flags, payload),
                    leaves_block_open: (kind == HEADERS || kind == CONTINUATION)
                        .then_some(!end_headers),
                }
            })
    }

    proptest! {
        /// Cut into reads of any size, a stream of frames is unfinished
        /// exactly while a frame is part-way or a header block is open, and
        /// the clock shows when that began.
        #[test]
        fn unfinished_exactly_while_a_frame_or_header_block_is_open(
            frames in proptest::collection::vec(any_frame(), 0..12),
            cuts in proptest::collection::vec(1usize..40, 1..400),
        ) {
            let start = Instant::now();
            let mut clock = FrameClock::default();
            let mut stream = PREFACE.to_vec();
            // Where each frame ends, and what should hold once it has.
            let mut ends = Vec::new();
            let mut block_open = false;
            let mut block_began_at_frame_start = None;
            for sent in &frames {
                let frame_start = stream.len();
                stream.extend_from_slice(&sent.bytes);
                if !block_open {
                    block_began_at_frame_start = Some(frame_start);
                }
                block_open = sent.leaves_block_open.unwrap_or(block_open);
                ends.push((stream.len(), block_open.then_some(block_began_at_frame_start).flatten()));
            }
            let mut at = 0;
            let mut tick = 0u64;
            // When the byte at each offset was read.
            let mut read_at = vec![start; stream.len()];
            for cut in cuts.iter().cycle() {
                if at >= stream.len() {
                    break;
                }
                let until = (at + cut).min(stream.len());
                tick += 1;
                let now = start + Duration::from_millis(tick);
                for slot in &mut read_at[at..until] {
                    *slot = now;
                }
                clock.observe(&stream[at..until], now);
                // After this read: where does the stream stand?
                let finished = ends.iter().rev().find(|(end, _)| *end <= until);
                let mid_frame = until > PREFACE.len()
                    && ends.iter().all(|(end, _)| *end != until);
                let expected = if mid_frame {
                    // A frame is part-way: the unfinished span began at the
                    // open block's first frame, or at this frame.
                    let frame_start = finished.map_or(PREFACE.len(), |(end, _)| *end);
                    let began = finished.and_then(|(_, block)| *block).unwrap_or(frame_start);
                    Some(read_at[began])
                } else {
                    finished.and_then(|(_, block)| block.map(|began| read_at[began]))
                };
                prop_assert_eq!(clock.unfinished_since(), expected, "after {} bytes", until);
                at = until;
            }
        }
    }

    #[test]
    fn a_connection_that_is_not_http2_is_not_tracked() {
        let now = Instant::now();
        for opening in [&b"GET / HTTP/1.1\r\n"[..], b"PRI * HTTP/1.1"] {
            let mut clock = FrameClock::default();
            clock.observe(opening, now);
            clock.observe(&frame(HEADERS, 0, 10)[..4], now);
            assert_eq!(clock.unfinished_since(), None);
        }
    }

    #[test]
    fn a_trickled_header_block_stays_unfinished_from_its_first_byte() {
        let start = Instant::now();
        let mut clock = FrameClock::default();
        clock.observe(PREFACE, start);
        clock.observe(&frame(0x4, 0, 0), start);
        assert_eq!(clock.unfinished_since(), None, "an empty SETTINGS is whole");
        let headers = frame(HEADERS, 0, 3);
        for (i, byte) in headers.iter().enumerate() {
            clock.observe(&[*byte], start + Duration::from_secs(1 + i as u64));
        }
        let began = Some(start + Duration::from_secs(1));
        assert_eq!(clock.unfinished_since(), began, "no END_HEADERS yet");
        clock.observe(&frame(CONTINUATION, 0, 2), start + Duration::from_secs(60));
        assert_eq!(clock.unfinished_since(), began);
        clock.observe(
            &frame(CONTINUATION, END_HEADERS, 2),
            start + Duration::from_secs(61),
        );
        assert_eq!(clock.unfinished_since(), None);
    }
}
