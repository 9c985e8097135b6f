//! A reader of `text/event-stream` that takes the bytes as they come:
//! a pure state machine, no I/O, so the awkward cases (a line split
//! between chunks, `\r\n`, a lone `\r`) are tested byte by byte.

/// One SSE line or event larger than this is not tokenyard talking (a
/// snapshot of a thousand credentials is well under a megabyte).
const MAX_EVENT_BYTES: usize = 32 << 20;

/// One dispatched server-sent event.
#[derive(Debug, PartialEq)]
pub(super) struct SseMessage {
    /// The `event:` field; `message` when there was none.
    pub event: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

/// An incremental reader of `text/event-stream`, after the WHATWG rules:
/// lines end in `\n`, `\r\n` or `\r` (and may be split anywhere between
/// chunks), `:` starts a comment, a blank line dispatches the event.
#[derive(Default)]
pub(super) struct SseParser {
    /// The bytes of a line whose end has not arrived yet. Lines are decoded
    /// only when whole, so a UTF-8 character split between chunks survives.
    line: Vec<u8>,
    /// The last chunk ended in `\r`: a `\n` starting the next one is the
    /// rest of that line end, not an empty line.
    after_cr: bool,
    event: String,
    /// The data lines so far, each followed by `\n`.
    data: String,
}

impl SseParser {
    /// Reads one chunk; returns the events it completed. `Err` when a line
    /// or an event grows past [`MAX_EVENT_BYTES`]: the stream is not one
    /// worth reading on.
    pub(super) fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseMessage>, String> {
        let mut out = Vec::new();
        let mut rest = chunk;
        if self.after_cr {
            self.after_cr = false;
            if let Some(tail) = rest.strip_prefix(b"\n") {
                rest = tail;
            }
        }
        while let Some(i) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&rest[..i]);
            let line = std::mem::take(&mut self.line);
            self.take_line(&String::from_utf8_lossy(&line), &mut out);
            rest = match (rest[i], rest.get(i + 1)) {
                (b'\r', Some(b'\n')) => &rest[i + 2..],
                (b'\r', None) => {
                    self.after_cr = true;
                    &[]
                }
                _ => &rest[i + 1..],
            };
            if self.data.len() > MAX_EVENT_BYTES {
                return Err(too_large());
            }
        }
        self.line.extend_from_slice(rest);
        if self.line.len() + self.data.len() > MAX_EVENT_BYTES {
            return Err(too_large());
        }
        Ok(out)
    }

    fn take_line(&mut self, line: &str, out: &mut Vec<SseMessage>) {
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            let mut data = std::mem::take(&mut self.data);
            // No data lines: nothing to dispatch (the spec's rule).
            if data.is_empty() {
                return;
            }
            data.pop();
            out.push(SseMessage {
                event: if event.is_empty() {
                    "message".to_string()
                } else {
                    event
                },
                data,
            });
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_string(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            // `id` and `retry` mean nothing here: a reconnect starts over
            // from a snapshot, on this side's own backoff.
            _ => {}
        }
    }
}

fn too_large() -> String {
    format!(
        "an event of over {} MiB in the stream; is it a tokenyard gateway?",
        MAX_EVENT_BYTES >> 20
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(event: &str, data: &str) -> SseMessage {
        SseMessage {
            event: event.into(),
            data: data.into(),
        }
    }

    fn parse_all(stream: &[u8], split_every: usize) -> Vec<SseMessage> {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for chunk in stream.chunks(split_every) {
            out.extend(p.push(chunk).unwrap());
        }
        out
    }

    #[test]
    fn sse_lines_split_anywhere_and_any_line_end() {
        let stream = "event: snapshot\ndata: {\"a\":1}\n\n\
                      : keep-alive\n\n\
                      event: event\r\ndata: one\r\ndata:two\r\n\r\n\
                      event: event\rdata: é€\r\r\
                      data: plain\n\n\
                      data\n\n\
                      event: ignored-without-data\n\n";
        let want = vec![
            msg("snapshot", "{\"a\":1}"),
            msg("event", "one\ntwo"),
            msg("event", "é€"),
            msg("message", "plain"),
            msg("message", ""),
        ];
        for split in 1..=stream.len() {
            assert_eq!(parse_all(stream.as_bytes(), split), want, "split {split}");
        }
    }

    #[test]
    fn an_endless_line_is_an_error_not_a_leak() {
        let mut p = SseParser::default();
        let chunk = vec![b'x'; 1 << 20];
        let mut failed = false;
        for _ in 0..(MAX_EVENT_BYTES >> 20) + 2 {
            if p.push(&chunk).is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed);
    }
}
