//! Cutting a serial byte stream into frames.
//!
//! Four ways an instrument marks its frames: a delimiter after each (e.g.
//! `\r\n`), a fixed length, start and end markers (e.g. STX … ETX), or
//! silence (a frame ends after an idle gap). The framer is fed whatever
//! each read returned (a frame split across reads, or many frames in one
//! read) and returns whole frames.
//!
//! Invariants:
//! - Memory is bounded: the framer holds at most `max_len` bytes plus the
//!   length of the marker that ends a frame (a frame of `max_len` bytes is
//!   whole only when its delimiter or end marker has been seen), and never
//!   returns a frame longer than `max_len`. A frame that grows past it is
//!   dropped, its bytes counted, and bytes are
//!   discarded until the next frame can start (after the next delimiter,
//!   or at the next start marker).
//! - Bytes outside any frame (before a start marker) are counted as noise,
//!   never silently lost from the counts.
//! - The idle-gap framing needs the caller's clock: [`Framer::idle`] ends
//!   the frame in progress when the line has been quiet long enough.

/// How frames are marked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    /// Each frame ends with these bytes (not part of the frame).
    Delimiter(Vec<u8>),
    /// Every frame is this many bytes.
    Length(usize),
    /// A frame starts with `start` and ends with `end` (neither is part of
    /// the frame).
    Markers { start: Vec<u8>, end: Vec<u8> },
    /// A frame ends when the line is quiet (see [`Framer::idle`]).
    IdleGap,
}

/// Counts of what did not make a frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Frames longer than the maximum.
    pub overlong: u64,
    /// Bytes dropped: of overlong frames, and noise between frames.
    pub bytes: u64,
}

#[derive(Debug)]
pub struct Framer {
    framing: Framing,
    max_len: usize,
    buf: Vec<u8>,
    /// Inside a frame (markers), or discarding an overlong one until the
    /// next boundary.
    state: State,
    pub dropped: Dropped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between frames (markers: waiting for a start marker).
    Idle,
    /// Collecting a frame.
    InFrame,
    /// Dropping an overlong frame until its end.
    Discarding,
}

/// Where `needle` starts in `hay`, if it is there.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Framer {
    /// A framer; `max_len` is at least 1.
    pub fn new(framing: Framing, max_len: usize) -> Self {
        let state = match framing {
            Framing::Markers { .. } => State::Idle,
            _ => State::InFrame,
        };
        Framer {
            framing,
            max_len: max_len.max(1),
            buf: Vec::new(),
            state,
            dropped: Dropped::default(),
        }
    }

    /// The most bytes [`Framer::pending`] can be: `max_len` and room for
    /// all but the last byte of the marker that ends a frame.
    pub fn capacity(&self) -> usize {
        let marker = match &self.framing {
            Framing::Delimiter(d) => d.len(),
            Framing::Markers { start, end } => end.len().max(start.len()),
            Framing::Length(_) | Framing::IdleGap => 0,
        };
        self.max_len + marker.saturating_sub(1)
    }

    /// Bytes held towards the next frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Feeds bytes read from the line; pushes every completed frame.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<Vec<u8>>) {
        match self.framing.clone() {
            Framing::Delimiter(d) => self.push_delimited(data, &d, out),
            Framing::Length(n) => self.push_fixed(data, n, out),
            Framing::Markers { start, end } => self.push_marked(data, &start, &end, out),
            Framing::IdleGap => {
                for &b in data {
                    if self.state == State::Discarding {
                        self.dropped.bytes += 1;
                        continue;
                    }
                    self.buf.push(b);
                    if self.buf.len() > self.max_len {
                        self.overlong();
                    }
                }
            }
        }
    }

    /// The line has been quiet for the idle gap: ends the frame in progress
    /// (idle-gap framing; other framings keep what they hold).
    pub fn idle(&mut self, out: &mut Vec<Vec<u8>>) {
        if self.framing != Framing::IdleGap {
            return;
        }
        if self.state == State::Discarding {
            self.state = State::InFrame;
            return;
        }
        if !self.buf.is_empty() {
            out.push(std::mem::take(&mut self.buf));
        }
    }

    fn overlong(&mut self) {
        self.dropped.overlong += 1;
        self.dropped.bytes += self.buf.len() as u64;
        self.buf.clear();
        self.state = State::Discarding;
    }

    fn push_delimited(&mut self, data: &[u8], delim: &[u8], out: &mut Vec<Vec<u8>>) {
        for &b in data {
            self.buf.push(b);
            if self.buf.ends_with(delim) {
                let len = self.buf.len() - delim.len();
                if self.state == State::Discarding {
                    self.dropped.bytes += len as u64;
                    self.state = State::InFrame;
                } else {
                    self.buf.truncate(len);
                    out.push(std::mem::take(&mut self.buf));
                }
                self.buf.clear();
                continue;
            }
            // Room for the frame and a delimiter being matched: one byte
            // more, without the delimiter, can no longer end a frame of
            // `max_len`.
            if self.buf.len() >= self.max_len + delim.len() {
                let keep = delim.len().saturating_sub(1);
                let cut = self.buf.len() - keep;
                if self.state != State::Discarding {
                    self.dropped.overlong += 1;
                    self.state = State::Discarding;
                }
                self.dropped.bytes += cut as u64;
                self.buf.drain(..cut);
            }
        }
    }

    fn push_fixed(&mut self, data: &[u8], n: usize, out: &mut Vec<Vec<u8>>) {
        for &b in data {
            self.buf.push(b);
            if self.buf.len() == n {
                out.push(std::mem::take(&mut self.buf));
            }
        }
    }

    fn push_marked(&mut self, data: &[u8], start: &[u8], end: &[u8], out: &mut Vec<Vec<u8>>) {
        for &b in data {
            self.buf.push(b);
            match self.state {
                State::Idle => {
                    if self.buf.ends_with(start) {
                        let noise = self.buf.len() - start.len();
                        self.dropped.bytes += noise as u64;
                        self.buf.clear();
                        self.state = State::InFrame;
                    } else if self.buf.len() >= start.len() {
                        // Keep only what could still begin a start marker.
                        let cut = self.buf.len() + 1 - start.len();
                        self.dropped.bytes += cut as u64;
                        self.buf.drain(..cut);
                    }
                }
                State::InFrame => {
                    if self.buf.ends_with(end) {
                        let len = self.buf.len() - end.len();
                        self.buf.truncate(len);
                        out.push(std::mem::take(&mut self.buf));
                        self.state = State::Idle;
                    } else if self.buf.ends_with(start) && find(&self.buf, start) != Some(0) {
                        // A new start before an end: the frame was cut
                        // short; count it and begin again here.
                        let lost = self.buf.len() - start.len();
                        self.dropped.bytes += lost as u64;
                        self.dropped.overlong += 1;
                        self.buf.clear();
                    } else if self.buf.len() >= self.max_len + end.len() {
                        self.overlong();
                        self.state = State::Idle;
                    }
                }
                State::Discarding => self.state = State::Idle,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(f: &mut Framer, chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for c in chunks {
            f.push(c, &mut out);
        }
        out
    }

    #[test]
    fn delimited_frames_split_across_reads_and_many_in_one() {
        let mut f = Framer::new(Framing::Delimiter(b"\r\n".to_vec()), 64);
        let got = frames(
            &mut f,
            &[b"W 12.5", b"0 kg\r", b"\nW 13.00 kg\r\nW 1", b"4 kg\r\n"],
        );
        assert_eq!(
            got,
            [
                b"W 12.50 kg".to_vec(),
                b"W 13.00 kg".to_vec(),
                b"W 14 kg".to_vec()
            ]
        );
        assert_eq!(f.pending(), 0);
        assert_eq!(f.dropped, Dropped::default());
    }

    /// Found by the `serial` fuzz target: with a one-byte maximum the
    /// framer holds the maximum and a delimiter's worth more (its capacity),
    /// never a longer frame.
    #[test]
    fn a_tiny_maximum_holds_no_more_than_its_capacity() {
        let mut f = Framer::new(Framing::Delimiter(b"\r\n".to_vec()), 1);
        let data = b"\x00\r\n\n\xed\xab\xc2\xcd\xce\x61\x40";
        let mut out = Vec::new();
        for b in data {
            f.push(std::slice::from_ref(b), &mut out);
            assert!(f.pending() <= f.capacity(), "holds {}", f.pending());
        }
        assert_eq!(f.capacity(), 2);
        assert_eq!(out, [vec![0u8]]);
        assert_eq!(f.dropped.overlong, 1);
        let framed: usize = out.iter().map(|o| o.len() + 2).sum();
        assert_eq!(
            framed as u64 + f.dropped.bytes + f.pending() as u64,
            data.len() as u64
        );
    }

    /// Found by the `serial` fuzz target: a frame one byte over the maximum
    /// was returned when its delimiter or end marker came right after it.
    #[test]
    fn a_frame_one_byte_over_the_maximum_is_dropped() {
        for framing in [
            Framing::Delimiter(b"\0".to_vec()),
            Framing::Delimiter(b"\r\n".to_vec()),
            Framing::Markers {
                start: b"<".to_vec(),
                end: b">".to_vec(),
            },
            Framing::Markers {
                start: b"\x02".to_vec(),
                end: b"\r\n".to_vec(),
            },
        ] {
            let (start, end) = match &framing {
                Framing::Delimiter(d) => (Vec::new(), d.clone()),
                Framing::Markers { start, end } => (start.clone(), end.clone()),
                _ => unreachable!(),
            };
            let mut f = Framer::new(framing.clone(), 2);
            let frame = |body: &[u8]| [&start[..], body, &end[..]].concat();
            let mut out = Vec::new();
            f.push(&frame(b"ab"), &mut out);
            f.push(&frame(b"abc"), &mut out);
            f.push(&frame(b"x"), &mut out);
            assert_eq!(out, [b"ab".to_vec(), b"x".to_vec()], "{framing:?}");
            assert_eq!(f.dropped.overlong, 1, "{framing:?}");
        }
    }

    #[test]
    fn an_overlong_frame_is_counted_and_dropped_up_to_the_next_delimiter() {
        let mut f = Framer::new(Framing::Delimiter(b"\n".to_vec()), 8);
        let long = [b'x'; 30];
        let got = frames(&mut f, &[b"ok1\n", &long, b"tail\nok2\n"]);
        assert_eq!(got, [b"ok1".to_vec(), b"ok2".to_vec()]);
        assert_eq!(f.dropped.overlong, 1);
        assert_eq!(f.dropped.bytes, 34, "30 x and the 4 bytes of tail");
        assert!(f.pending() <= 9, "bounded: {}", f.pending());
    }

    #[test]
    fn fixed_length_frames() {
        let mut f = Framer::new(Framing::Length(4), 64);
        let got = frames(&mut f, &[b"abcdef", b"gh", b"i"]);
        assert_eq!(got, [b"abcd".to_vec(), b"efgh".to_vec()]);
        assert_eq!(f.pending(), 1);
    }

    #[test]
    fn markers_skip_noise_and_recover_from_a_lost_end() {
        let mut f = Framer::new(
            Framing::Markers {
                start: vec![0x02],
                end: vec![0x03],
            },
            16,
        );
        let got = frames(
            &mut f,
            &[b"zz\x02one\x03noise\x02tw", b"o\x03\x02lost\x02three\x03"],
        );
        assert_eq!(got, [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]);
        assert_eq!(f.dropped.bytes, 2 + 5 + 4, "zz, noise, lost");
        assert_eq!(f.dropped.overlong, 1, "the frame cut short by a new start");
    }

    #[test]
    fn markers_drop_a_frame_that_never_ends() {
        let mut f = Framer::new(
            Framing::Markers {
                start: b"<".to_vec(),
                end: b">".to_vec(),
            },
            5,
        );
        let got = frames(&mut f, &[b"<abcdefghij", b"k><ok>"]);
        assert_eq!(got, [b"ok".to_vec()]);
        assert_eq!(f.dropped.overlong, 1);
        assert!(f.pending() <= 6);
    }

    #[test]
    fn idle_gap_ends_a_frame_and_bounds_it() {
        let mut f = Framer::new(Framing::IdleGap, 4);
        let mut out = Vec::new();
        f.push(b"ab", &mut out);
        f.push(b"c", &mut out);
        assert!(out.is_empty());
        f.idle(&mut out);
        assert_eq!(out, [b"abc".to_vec()]);
        f.idle(&mut out);
        assert_eq!(out.len(), 1, "no empty frames");
        f.push(b"toolong", &mut out);
        f.idle(&mut out);
        f.push(b"ok", &mut out);
        f.idle(&mut out);
        assert_eq!(out, [b"abc".to_vec(), b"ok".to_vec()]);
        assert_eq!(f.dropped.overlong, 1);
        assert_eq!(f.dropped.bytes, 7);
    }
}

#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// However the stream is cut into reads, the same frames come out.
        #[test]
        fn reads_of_any_size_give_the_same_frames(
            frames in proptest::collection::vec(proptest::collection::vec(b'a'..=b'z', 0..20), 0..20),
            cuts in proptest::collection::vec(1usize..7, 1..50),
        ) {
            let mut stream = Vec::new();
            for f in &frames {
                stream.extend_from_slice(f);
                stream.extend_from_slice(b"\r\n");
            }
            let mut framer = Framer::new(Framing::Delimiter(b"\r\n".to_vec()), 64);
            let mut out = Vec::new();
            let mut at = 0;
            let mut i = 0;
            while at < stream.len() {
                let n = cuts[i % cuts.len()].min(stream.len() - at);
                framer.push(&stream[at..at + n], &mut out);
                at += n;
                i += 1;
            }
            prop_assert_eq!(out, frames);
            prop_assert_eq!(framer.dropped, Dropped::default());
        }
    }
}
