//! Splitting a byte stream into lines, losslessly and with bounded memory.
//!
//! `tokio_util`'s `LinesCodec` ends the stream at the first invalid UTF-8
//! line or over-long line; [`LineDecoder`] never does:
//!
//! - lines end at `\n` (the `\n` is removed; a `\r` before it is kept);
//! - invalid UTF-8 is decoded lossily (each bad sequence becomes U+FFFD);
//! - a line longer than the cap is emitted in pieces of at most `cap` bytes,
//!   cut at a character boundary, every piece but the last marked `partial`;
//! - at end of input an unterminated last line is emitted as a line.
//!
//! ```
//! use cldpd::runtime::LineDecoder;
//! use cldpd::OutputStream;
//! let mut d = LineDecoder::new(OutputStream::Stdout, 4);
//! let mut out = Vec::new();
//! d.push(b"ab\nabcdefg\n\xffz", &mut out);
//! d.finish(&mut out);
//! let texts: Vec<_> = out.iter().map(|l| (l.text.as_str(), l.partial)).collect();
//! assert_eq!(texts, [("ab", false), ("abcd", true), ("efg", false), ("\u{fffd}z", false)]);
//! ```

use super::OutputLine;
use crate::event::OutputStream;

/// Default line cap: 1 MiB. A longer line arrives as several `Output`
/// events, all but the last with `partial: true`.
pub const DEFAULT_LINE_CAP: usize = 1024 * 1024;

/// Incremental line splitter for one output stream. See the module docs.
#[derive(Debug)]
pub struct LineDecoder {
    stream: OutputStream,
    cap: usize,
    pending: Vec<u8>,
}

impl LineDecoder {
    /// A decoder for `stream` that splits lines longer than `cap` bytes
    /// (`cap` is raised to at least 4, one UTF-8 character).
    pub fn new(stream: OutputStream, cap: usize) -> Self {
        LineDecoder {
            stream,
            cap: cap.max(4),
            pending: Vec::new(),
        }
    }

    /// Feed bytes; complete lines are appended to `out`.
    pub fn push(&mut self, mut bytes: &[u8], out: &mut Vec<OutputLine>) {
        while !bytes.is_empty() {
            match memchr::memchr(b'\n', bytes) {
                Some(i) => {
                    let (line, rest) = (&bytes[..i], &bytes[i + 1..]);
                    if self.pending.is_empty() {
                        self.emit_complete(line, out);
                    } else {
                        self.pending.extend_from_slice(line);
                        let whole = std::mem::take(&mut self.pending);
                        self.emit_complete(&whole, out);
                        self.recycle(whole);
                    }
                    bytes = rest;
                }
                None => {
                    self.pending.extend_from_slice(bytes);
                    bytes = &[];
                    self.drain_overlong(out);
                }
            }
        }
    }

    /// End of input: emit what is left as a last line.
    pub fn finish(&mut self, out: &mut Vec<OutputLine>) {
        if !self.pending.is_empty() {
            let whole = std::mem::take(&mut self.pending);
            self.emit_complete(&whole, out);
        }
        self.pending = Vec::new();
    }

    /// Bytes held for an unterminated line (never more than the cap + 3).
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    fn recycle(&mut self, mut buf: Vec<u8>) {
        // Keep a modest buffer for the next partial line, free a huge one.
        if buf.capacity() <= 64 * 1024 {
            buf.clear();
            self.pending = buf;
        }
    }

    /// Emit a complete line, in cap-sized pieces if it is too long.
    fn emit_complete(&self, mut line: &[u8], out: &mut Vec<OutputLine>) {
        while line.len() > self.cap {
            let cut = char_boundary(line, self.cap);
            out.push(self.line(&line[..cut], true));
            line = &line[cut..];
        }
        out.push(self.line(line, false));
    }

    /// While the pending (unterminated) line exceeds the cap, emit pieces.
    fn drain_overlong(&mut self, out: &mut Vec<OutputLine>) {
        if self.pending.len() <= self.cap {
            return;
        }
        let mut start = 0;
        while self.pending.len() - start > self.cap {
            let cut = start + char_boundary(&self.pending[start..], self.cap);
            out.push(self.line(&self.pending[start..cut], true));
            start = cut;
        }
        self.pending.drain(..start);
    }

    fn line(&self, bytes: &[u8], partial: bool) -> OutputLine {
        let text = match std::str::from_utf8(bytes) {
            Ok(s) => s.to_owned(),
            Err(_) => String::from_utf8_lossy(bytes).into_owned(),
        };
        OutputLine {
            stream: self.stream,
            text,
            partial,
        }
    }
}

/// The largest cut `<= cap` that does not split a UTF-8 sequence (falls back
/// to `cap` when the bytes there are not UTF-8 anyway).
fn char_boundary(bytes: &[u8], cap: usize) -> usize {
    let mut cut = cap;
    // Back up over at most 3 continuation bytes (10xxxxxx).
    while cut > cap.saturating_sub(3) && cut > 0 && (bytes[cut] & 0xC0) == 0x80 {
        cut -= 1;
    }
    if cut == 0 || (bytes[cut] & 0xC0) == 0x80 {
        cap
    } else {
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(chunks: &[&[u8]], cap: usize) -> Vec<(String, bool)> {
        let mut d = LineDecoder::new(OutputStream::Stdout, cap);
        let mut out = Vec::new();
        for c in chunks {
            d.push(c, &mut out);
        }
        d.finish(&mut out);
        out.into_iter().map(|l| (l.text, l.partial)).collect()
    }

    #[test]
    fn lines_split_across_chunks_are_joined() {
        assert_eq!(
            decode(&[b"he", b"llo\nwor", b"ld\n"], 100),
            [("hello".to_string(), false), ("world".to_string(), false)]
        );
    }

    #[test]
    fn empty_lines_and_cr_are_kept() {
        assert_eq!(
            decode(&[b"\n\r\na\r\n"], 100),
            [
                ("".to_string(), false),
                ("\r".to_string(), false),
                ("a\r".to_string(), false)
            ]
        );
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        let got = decode(&[b"ok\n\xc3\x28\n", b"\xfe\xfe\xff\xffend\nafter\n"], 100);
        assert_eq!(got[0].0, "ok");
        assert_eq!(got[1].0, "\u{fffd}(");
        assert!(got[2].0.ends_with("end") && got[2].0.starts_with('\u{fffd}'));
        assert_eq!(got[3].0, "after");
    }

    #[test]
    fn overlong_unterminated_line_is_emitted_in_pieces_while_streaming() {
        let mut d = LineDecoder::new(OutputStream::Stderr, 1024);
        let mut out = Vec::new();
        let chunk = vec![b'x'; 4096];
        for _ in 0..2560 {
            // 10 MiB without a newline
            d.push(&chunk, &mut out);
            assert!(d.pending_len() <= 1024);
        }
        d.push(b"\n", &mut out);
        d.finish(&mut out);
        let total: usize = out.iter().map(|l| l.text.len()).sum();
        assert_eq!(total, 10 * 1024 * 1024);
        assert!(out[..out.len() - 1].iter().all(|l| l.partial));
        assert!(!out.last().unwrap().partial);
        assert!(out.iter().all(|l| l.stream == OutputStream::Stderr));
    }

    #[test]
    fn cuts_fall_on_character_boundaries() {
        // "é" is 2 bytes; a cap of 5 on "aéééé" must not split one.
        let got = decode(&["aéééé\n".as_bytes()], 5);
        assert!(got.iter().all(|(t, _)| !t.contains('\u{fffd}')), "{got:?}");
        assert_eq!(
            got.iter().map(|(t, _)| t.as_str()).collect::<String>(),
            "aéééé"
        );
    }
}
