//! A Response object of OpenAI's Responses API and the semantic events a
//! streamed one arrives in, in OpenAI's shapes. Pure functions, no I/O.

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use crate::sim::reply::SseEvents;

/// Fields a Response echoes from its request, already defaulted as the
/// real API defaults them.
#[derive(Debug, Clone)]
pub(crate) struct Echo {
    pub instructions: Value,
    pub max_output_tokens: Value,
    pub parallel_tool_calls: Value,
    pub reasoning: Value,
    pub store: Value,
    pub temperature: Value,
    pub text: Value,
    pub tool_choice: Value,
    pub tools: Value,
    pub top_p: Value,
    pub truncation: Value,
    pub user: Value,
    pub metadata: Value,
}

/// One Response the sim will produce, whole or streamed: a single message
/// item with one `output_text` part holding the numbered pieces.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    /// `resp_...`
    pub id: String,
    /// `msg_...`, the message item's id.
    pub item_id: String,
    pub created_at: u64,
    pub model: String,
    /// `[0][1]...` in this many pieces, the chat endpoint's text.
    pub pieces: usize,
    /// `max_output_tokens` set the length: status `incomplete`.
    pub incomplete: bool,
    pub input_tokens: u64,
    pub echo: Echo,
}

/// The Response object, fields in OpenAI's order.
#[derive(Serialize)]
struct ResponseObject<'a> {
    id: &'a str,
    object: &'static str,
    created_at: u64,
    /// Set once a response has completed; the sim answers within the
    /// second it was asked.
    completed_at: Option<u64>,
    status: &'static str,
    background: bool,
    error: Option<()>,
    incomplete_details: Option<IncompleteDetails>,
    instructions: &'a Value,
    max_output_tokens: &'a Value,
    model: &'a str,
    output: Vec<Item<'a>>,
    parallel_tool_calls: &'a Value,
    previous_response_id: Option<()>,
    reasoning: &'a Value,
    service_tier: &'static str,
    store: &'a Value,
    temperature: &'a Value,
    text: &'a Value,
    tool_choice: &'a Value,
    tools: &'a Value,
    top_p: &'a Value,
    truncation: &'a Value,
    usage: Option<Usage>,
    user: &'a Value,
    metadata: &'a Value,
}

#[derive(Serialize)]
struct IncompleteDetails {
    reason: &'static str,
}

/// The `message` output item.
#[derive(Serialize)]
struct Item<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    status: &'static str,
    role: &'static str,
    content: Vec<Part>,
}

/// An `output_text` content part; the sim never annotates or sends
/// logprobs, but the arrays are always there.
#[derive(Serialize)]
struct Part {
    #[serde(rename = "type")]
    kind: &'static str,
    text: String,
    annotations: [(); 0],
    logprobs: [(); 0],
}

#[derive(Serialize)]
struct Usage {
    input_tokens: u64,
    input_tokens_details: InputDetails,
    output_tokens: u64,
    output_tokens_details: OutputDetails,
    total_tokens: u64,
}

#[derive(Serialize)]
struct InputDetails {
    cached_tokens: u64,
}

#[derive(Serialize)]
struct OutputDetails {
    reasoning_tokens: u64,
}

/// A stream event; `type` is also the SSE `event:` name.
#[derive(Serialize)]
#[serde(tag = "type")]
enum Event<'a> {
    #[serde(rename = "response.created")]
    Created {
        sequence_number: usize,
        response: ResponseObject<'a>,
    },
    #[serde(rename = "response.in_progress")]
    InProgress {
        sequence_number: usize,
        response: ResponseObject<'a>,
    },
    #[serde(rename = "response.output_item.added")]
    ItemAdded {
        sequence_number: usize,
        output_index: u32,
        item: Item<'a>,
    },
    #[serde(rename = "response.content_part.added")]
    PartAdded {
        sequence_number: usize,
        item_id: &'a str,
        output_index: u32,
        content_index: u32,
        part: Part,
    },
    #[serde(rename = "response.output_text.delta")]
    TextDelta {
        sequence_number: usize,
        item_id: &'a str,
        output_index: u32,
        content_index: u32,
        delta: String,
        logprobs: [(); 0],
    },
    #[serde(rename = "response.output_text.done")]
    TextDone {
        sequence_number: usize,
        item_id: &'a str,
        output_index: u32,
        content_index: u32,
        text: String,
        logprobs: [(); 0],
    },
    #[serde(rename = "response.content_part.done")]
    PartDone {
        sequence_number: usize,
        item_id: &'a str,
        output_index: u32,
        content_index: u32,
        part: Part,
    },
    #[serde(rename = "response.output_item.done")]
    ItemDone {
        sequence_number: usize,
        output_index: u32,
        item: Item<'a>,
    },
    #[serde(rename = "response.completed")]
    Completed {
        sequence_number: usize,
        response: ResponseObject<'a>,
    },
    /// The end of a stream `max_output_tokens` cut short.
    #[serde(rename = "response.incomplete")]
    Incomplete {
        sequence_number: usize,
        response: ResponseObject<'a>,
    },
}

impl Event<'_> {
    fn name(&self) -> &'static str {
        match self {
            Event::Created { .. } => "response.created",
            Event::InProgress { .. } => "response.in_progress",
            Event::ItemAdded { .. } => "response.output_item.added",
            Event::PartAdded { .. } => "response.content_part.added",
            Event::TextDelta { .. } => "response.output_text.delta",
            Event::TextDone { .. } => "response.output_text.done",
            Event::PartDone { .. } => "response.content_part.done",
            Event::ItemDone { .. } => "response.output_item.done",
            Event::Completed { .. } => "response.completed",
            Event::Incomplete { .. } => "response.incomplete",
        }
    }
}

/// Events before the first delta: created, in_progress, the item, the part.
const HEAD_EVENTS: usize = 4;
/// Events after the last delta: text done, part done, item done, the end.
const TAIL_EVENTS: usize = 4;

impl Reply {
    pub fn text(&self) -> String {
        (0..self.pieces).map(|i| format!("[{i}]")).collect()
    }

    /// The final status of the response and of its message item.
    fn status(&self) -> &'static str {
        if self.incomplete {
            "incomplete"
        } else {
            "completed"
        }
    }

    fn part(&self, text: String) -> Part {
        Part {
            kind: "output_text",
            text,
            annotations: [],
            logprobs: [],
        }
    }

    /// The message item, as it starts (`in_progress`, empty) or ends.
    fn item(&self, done: bool) -> Item<'_> {
        let (status, content) = if done {
            (self.status(), vec![self.part(self.text())])
        } else {
            ("in_progress", Vec::new())
        };
        Item {
            kind: "message",
            id: &self.item_id,
            status,
            role: "assistant",
            content,
        }
    }

    /// The Response object, as it starts (`in_progress`, no output, no
    /// usage) or ends.
    fn response(&self, done: bool) -> ResponseObject<'_> {
        let e = &self.echo;
        let output_tokens = self.pieces as u64;
        ResponseObject {
            id: &self.id,
            object: "response",
            created_at: self.created_at,
            completed_at: (done && !self.incomplete).then_some(self.created_at),
            status: if done { self.status() } else { "in_progress" },
            background: false,
            error: None,
            incomplete_details: (done && self.incomplete).then_some(IncompleteDetails {
                reason: "max_output_tokens",
            }),
            instructions: &e.instructions,
            max_output_tokens: &e.max_output_tokens,
            model: &self.model,
            output: if done {
                vec![self.item(true)]
            } else {
                Vec::new()
            },
            parallel_tool_calls: &e.parallel_tool_calls,
            previous_response_id: None,
            reasoning: &e.reasoning,
            service_tier: "default",
            store: &e.store,
            temperature: &e.temperature,
            text: &e.text,
            tool_choice: &e.tool_choice,
            tools: &e.tools,
            top_p: &e.top_p,
            truncation: &e.truncation,
            usage: done.then_some(Usage {
                input_tokens: self.input_tokens,
                input_tokens_details: InputDetails { cached_tokens: 0 },
                output_tokens,
                output_tokens_details: OutputDetails {
                    reasoning_tokens: 0,
                },
                total_tokens: self.input_tokens + output_tokens,
            }),
            user: &e.user,
            metadata: &e.metadata,
        }
    }

    /// The non-stream body.
    pub fn body(&self) -> String {
        serde_json::to_string(&self.response(true)).unwrap_or_default()
    }

    pub fn event_count(&self) -> usize {
        HEAD_EVENTS + self.pieces + TAIL_EVENTS
    }

    /// Whether event `i` is a text delta (paced by `chunk_interval`).
    pub fn is_content(&self, i: usize) -> bool {
        (HEAD_EVENTS..HEAD_EVENTS + self.pieces).contains(&i)
    }

    /// SSE event `i` (`0 <= i < event_count()`), framed as
    /// `event: <type>\ndata: <json>\n\n`; its `sequence_number` is `i`.
    pub fn event(&self, i: usize) -> Bytes {
        let deltas_end = HEAD_EVENTS + self.pieces;
        let (item_id, output_index, content_index) = (self.item_id.as_str(), 0, 0);
        let sequence_number = i;
        let event = match i {
            0 => Event::Created {
                sequence_number,
                response: self.response(false),
            },
            1 => Event::InProgress {
                sequence_number,
                response: self.response(false),
            },
            2 => Event::ItemAdded {
                sequence_number,
                output_index,
                item: self.item(false),
            },
            3 => Event::PartAdded {
                sequence_number,
                item_id,
                output_index,
                content_index,
                part: self.part(String::new()),
            },
            i if i < deltas_end => Event::TextDelta {
                sequence_number,
                item_id,
                output_index,
                content_index,
                delta: format!("[{}]", i - HEAD_EVENTS),
                logprobs: [],
            },
            i if i == deltas_end => Event::TextDone {
                sequence_number,
                item_id,
                output_index,
                content_index,
                text: self.text(),
                logprobs: [],
            },
            i if i == deltas_end + 1 => Event::PartDone {
                sequence_number,
                item_id,
                output_index,
                content_index,
                part: self.part(self.text()),
            },
            i if i == deltas_end + 2 => Event::ItemDone {
                sequence_number,
                output_index,
                item: self.item(true),
            },
            _ if self.incomplete => Event::Incomplete {
                sequence_number,
                response: self.response(true),
            },
            _ => Event::Completed {
                sequence_number,
                response: self.response(true),
            },
        };
        let json = serde_json::to_string(&event).unwrap_or_default();
        Bytes::from(format!("event: {}\ndata: {json}\n\n", event.name()))
    }
}

impl SseEvents for Reply {
    fn event_count(&self) -> usize {
        Reply::event_count(self)
    }
    fn is_content(&self, i: usize) -> bool {
        Reply::is_content(self, i)
    }
    fn event(&self, i: usize) -> Bytes {
        Reply::event(self, i)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn reply(pieces: usize, incomplete: bool) -> Reply {
        Reply {
            id: "resp_sim1".into(),
            item_id: "msg_sim1".into(),
            created_at: 1,
            model: "sim-small".into(),
            pieces,
            incomplete,
            input_tokens: 3,
            echo: Echo {
                instructions: Value::Null,
                max_output_tokens: Value::Null,
                parallel_tool_calls: json!(true),
                reasoning: json!({"effort": null, "summary": null}),
                store: json!(true),
                temperature: json!(1.0),
                text: json!({"format": {"type": "text"}}),
                tool_choice: json!("auto"),
                tools: json!([]),
                top_p: json!(1.0),
                truncation: json!("disabled"),
                user: Value::Null,
                metadata: json!({}),
            },
        }
    }

    fn data(r: &Reply, i: usize) -> Value {
        let event = String::from_utf8(r.event(i).to_vec()).unwrap();
        let (_, data) = event.split_once("\ndata: ").unwrap();
        serde_json::from_str(data).unwrap()
    }

    #[test]
    fn deltas_and_parts_are_openai_shaped() {
        let r = reply(2, false);
        assert_eq!(r.event_count(), 10);
        assert_eq!(
            String::from_utf8(r.event(4).to_vec()).unwrap(),
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":4,\"item_id\":\"msg_sim1\",\"output_index\":0,\"content_index\":0,\"delta\":\"[0]\",\"logprobs\":[]}\n\n"
        );
        assert_eq!(
            data(&r, 2)["item"],
            json!({"type": "message", "id": "msg_sim1", "status": "in_progress", "role": "assistant", "content": []})
        );
        assert_eq!(
            data(&r, 7)["part"],
            json!({"type": "output_text", "text": "[0][1]", "annotations": [], "logprobs": []})
        );
        let created = data(&r, 0);
        assert_eq!(created["response"]["status"], "in_progress");
        assert_eq!(created["response"]["usage"], Value::Null);
        let whole: Value = serde_json::from_str(&r.body()).unwrap();
        assert_eq!(data(&r, 9)["response"], whole);
        assert_eq!(
            whole["usage"],
            json!({"input_tokens": 3, "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": 2, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 5})
        );
        assert!(!r.is_content(3) && r.is_content(4) && r.is_content(5) && !r.is_content(6));
    }

    #[test]
    fn a_cut_response_is_incomplete_throughout() {
        let r = reply(1, true);
        let whole: Value = serde_json::from_str(&r.body()).unwrap();
        assert_eq!(whole["status"], "incomplete");
        assert_eq!(whole["completed_at"], Value::Null);
        assert_eq!(
            whole["incomplete_details"],
            json!({"reason": "max_output_tokens"})
        );
        assert_eq!(whole["output"][0]["status"], "incomplete");
        let last = String::from_utf8(r.event(r.event_count() - 1).to_vec()).unwrap();
        assert!(last.starts_with("event: response.incomplete\n"), "{last}");
    }
}
