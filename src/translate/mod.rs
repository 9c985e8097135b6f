//! Pure conversions between the OpenAI, Anthropic and Gemini wire formats:
//! requests, full responses and stream events. No I/O, no clocks. A field
//! that cannot be carried across is dropped with a debug log; a request
//! that cannot be expressed in the target format at all is a
//! [`TranslateError`] naming the field, which the gateway answers with 400.

pub mod anthropic;
pub mod gemini;
pub mod responses;

/// A request that cannot be expressed in the target format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct TranslateError {
    /// JSON path of the offending field, e.g. `messages[2].content[0].type`.
    pub field: String,
    pub message: String,
}

impl TranslateError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        TranslateError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// One server-sent event: its `event:` name (if any) and its `data:`
/// lines joined with `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

impl SseEvent {
    pub fn data(data: impl Into<String>) -> Self {
        SseEvent {
            event: None,
            data: data.into(),
        }
    }

    pub fn named(event: impl Into<String>, data: impl Into<String>) -> Self {
        SseEvent {
            event: Some(event.into()),
            data: data.into(),
        }
    }
}

/// Parses whole SSE events (as the relay hands them over: complete events,
/// each ended by a blank line). Comments and unknown fields are skipped;
/// an event with no data is dropped.
pub fn parse_events(bytes: &[u8]) -> Vec<SseEvent> {
    let text = String::from_utf8_lossy(bytes);
    let mut out = Vec::new();
    let mut event: Option<String> = None;
    let mut data: Option<String> = None;
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            if let Some(d) = data.take() {
                out.push(SseEvent {
                    event: event.take(),
                    data: d,
                });
            }
            event = None;
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => event = Some(value.to_string()),
            "data" => match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_string()),
            },
            _ => {}
        }
    }
    if let Some(d) = data {
        out.push(SseEvent { event, data: d });
    }
    out
}

/// Writes events in SSE form, each ended by a blank line.
pub fn write_events(events: &[SseEvent]) -> bytes::Bytes {
    let mut out = String::new();
    for e in events {
        if let Some(name) = &e.event {
            out.push_str("event: ");
            out.push_str(name);
            out.push('\n');
        }
        for line in e.data.split('\n') {
            out.push_str("data: ");
            out.push_str(line);
            out.push('\n');
        }
        out.push('\n');
    }
    bytes::Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_round_trip() {
        let raw = b"event: message_start\ndata: {\"a\":1}\n\n: ping\n\ndata: x\ndata: y\n\ndata: [DONE]\r\n\r\n";
        let events = parse_events(raw);
        assert_eq!(
            events,
            vec![
                SseEvent::named("message_start", "{\"a\":1}"),
                SseEvent::data("x\ny"),
                SseEvent::data("[DONE]"),
            ]
        );
        assert_eq!(parse_events(&write_events(&events)), events);
    }
}
