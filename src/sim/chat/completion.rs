//! A `chat.completion` and its `chat.completion.chunk` stream in OpenAI's
//! exact shapes: numbered text, or one function call. Pure functions, no
//! I/O.

use bytes::Bytes;
use serde::Serialize;

use crate::sim::reply::SseEvents;
use crate::sim::wire::TOOL_ARGS_PIECES;

/// What the assistant says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Says {
    /// `[0][1]...` in this many pieces.
    Text { pieces: usize },
    /// One call of the named function with `TOOL_ARGS_PIECES` as its
    /// arguments.
    ToolCall { id: String, name: String },
}

/// One completion the sim will produce, streamed or whole.
#[derive(Debug, Clone)]
pub(crate) struct Completion {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub says: Says,
    /// `"length"` when `max_tokens` set the count, `"tool_calls"` for a
    /// call, else `"stop"`.
    pub finish: &'static str,
    pub include_usage: bool,
    pub prompt_tokens: u64,
}

/// Token counts; completion tokens are the streamed pieces.
#[derive(Serialize)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

/// A `chat.completion.chunk`, fields in OpenAI's order.
#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: Option<()>,
    choices: Vec<ChunkChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    /// `Some(None)` is the `"content": null` of a tool call's role chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallDelta<'a>; 1]>,
}

/// One piece of a streamed call: the first names it (with empty
/// arguments), the rest carry only argument text.
#[derive(Serialize)]
struct ToolCallDelta<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDelta<'a>,
}

#[derive(Serialize)]
struct FunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

/// A whole `chat.completion`, fields in OpenAI's order.
#[derive(Serialize)]
struct Whole<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [WholeChoice<'a>; 1],
    usage: Usage,
    system_fingerprint: Option<()>,
}

#[derive(Serialize)]
struct WholeChoice<'a> {
    index: u32,
    message: Message<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCall<'a>; 1]>,
    refusal: Option<()>,
}

#[derive(Serialize)]
struct ToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: Function<'a>,
}

#[derive(Serialize)]
struct Function<'a> {
    name: &'a str,
    arguments: String,
}

impl Completion {
    /// The content text; empty for a tool call.
    pub fn text(&self) -> String {
        match self.says {
            Says::Text { pieces } => (0..pieces).map(|i| format!("[{i}]")).collect(),
            Says::ToolCall { .. } => String::new(),
        }
    }

    /// Paced stream events between the role chunk and the finish chunk:
    /// the text pieces, or the call's head and its argument pieces.
    fn deltas(&self) -> usize {
        match self.says {
            Says::Text { pieces } => pieces,
            Says::ToolCall { .. } => 1 + TOOL_ARGS_PIECES.len(),
        }
    }

    fn usage(&self) -> Usage {
        let completion = match self.says {
            Says::Text { pieces } => pieces,
            Says::ToolCall { .. } => TOOL_ARGS_PIECES.len(),
        } as u64;
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: completion,
            total_tokens: self.prompt_tokens + completion,
        }
    }

    /// The non-stream `chat.completion` body.
    pub fn body(&self) -> String {
        let message = match &self.says {
            Says::Text { .. } => Message {
                role: "assistant",
                content: Some(self.text()),
                tool_calls: None,
                refusal: None,
            },
            Says::ToolCall { id, name } => Message {
                role: "assistant",
                content: None,
                tool_calls: Some([ToolCall {
                    id,
                    kind: "function",
                    function: Function {
                        name,
                        arguments: TOOL_ARGS_PIECES.concat(),
                    },
                }]),
                refusal: None,
            },
        };
        let whole = Whole {
            id: &self.id,
            object: "chat.completion",
            created: self.created,
            model: &self.model,
            choices: [WholeChoice {
                index: 0,
                message,
                logprobs: None,
                finish_reason: self.finish,
            }],
            usage: self.usage(),
            system_fingerprint: None,
        };
        serde_json::to_string(&whole).unwrap_or_default()
    }

    /// SSE data events in a full stream: role chunk, the deltas, finish
    /// chunk, the usage chunk if asked, `[DONE]`.
    pub fn event_count(&self) -> usize {
        self.deltas() + 3 + usize::from(self.include_usage)
    }

    /// Whether event `i` is a delta (paced by `chunk_interval`).
    pub fn is_content(&self, i: usize) -> bool {
        (1..=self.deltas()).contains(&i)
    }

    /// SSE event `i` (`0 <= i < event_count()`), framed as `data: ...\n\n`.
    pub fn event(&self, i: usize) -> Bytes {
        let finish_at = self.deltas() + 1;
        let chunk = if i == 0 {
            // OpenAI opens a call's stream with a null content, text with "".
            let content = match self.says {
                Says::Text { .. } => Some(String::new()),
                Says::ToolCall { .. } => None,
            };
            let delta = Delta {
                role: Some("assistant"),
                content: Some(content),
                tool_calls: None,
            };
            self.chunk(vec![choice(delta, None)], None)
        } else if i < finish_at {
            self.chunk(vec![choice(self.delta(i - 1), None)], None)
        } else if i == finish_at {
            self.chunk(vec![choice(Delta::default(), Some(self.finish))], None)
        } else if i == finish_at + 1 && self.include_usage {
            self.chunk(Vec::new(), Some(self.usage()))
        } else {
            return Bytes::from_static(b"data: [DONE]\n\n");
        };
        let json = serde_json::to_string(&chunk).unwrap_or_default();
        Bytes::from(format!("data: {json}\n\n"))
    }

    /// Delta `k` of the content between role and finish chunks.
    fn delta(&self, k: usize) -> Delta<'_> {
        let call = match &self.says {
            Says::Text { .. } => {
                return Delta {
                    content: Some(Some(format!("[{k}]"))),
                    ..Delta::default()
                };
            }
            Says::ToolCall { id, name } if k == 0 => ToolCallDelta {
                index: 0,
                id: Some(id),
                kind: Some("function"),
                function: FunctionDelta {
                    name: Some(name),
                    arguments: "",
                },
            },
            Says::ToolCall { .. } => ToolCallDelta {
                index: 0,
                id: None,
                kind: None,
                function: FunctionDelta {
                    name: None,
                    arguments: TOOL_ARGS_PIECES[k - 1],
                },
            },
        };
        Delta {
            tool_calls: Some([call]),
            ..Delta::default()
        }
    }

    fn chunk<'a>(&'a self, choices: Vec<ChunkChoice<'a>>, usage: Option<Usage>) -> Chunk<'a> {
        Chunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            system_fingerprint: None,
            choices,
            usage,
        }
    }
}

impl SseEvents for Completion {
    fn event_count(&self) -> usize {
        Completion::event_count(self)
    }
    fn is_content(&self, i: usize) -> bool {
        Completion::is_content(self, i)
    }
    fn event(&self, i: usize) -> Bytes {
        Completion::event(self, i)
    }
}

fn choice<'a>(delta: Delta<'a>, finish_reason: Option<&'static str>) -> ChunkChoice<'a> {
    ChunkChoice {
        index: 0,
        delta,
        logprobs: None,
        finish_reason,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn completion(says: Says, finish: &'static str) -> Completion {
        Completion {
            id: "chatcmpl-sim-1".into(),
            created: 1,
            model: "sim-small".into(),
            says,
            finish,
            include_usage: true,
            prompt_tokens: 3,
        }
    }

    fn events(c: &Completion) -> Vec<String> {
        (0..c.event_count())
            .map(|i| String::from_utf8(c.event(i).to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn stream_events_are_numbered() {
        let c = completion(Says::Text { pieces: 2 }, "stop");
        assert_eq!(c.event_count(), 6);
        let text = events(&c);
        assert!(text[0].starts_with(r#"data: {"id":"chatcmpl-sim-1","object":"chat.completion.chunk","created":1,"model":"sim-small","system_fingerprint":null,"choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}"#));
        assert!(text[1].contains(r#""delta":{"content":"[0]"}"#));
        assert!(text[3].contains(r#""finish_reason":"stop""#));
        assert!(text[4].contains(r#""choices":[]"#));
        assert_eq!(text[5], "data: [DONE]\n\n");
        assert_eq!(c.text(), "[0][1]");
    }

    #[test]
    fn tool_call_chunks_are_openai_shaped() {
        let says = Says::ToolCall {
            id: "call_sim_1".into(),
            name: "lookup".into(),
        };
        let c = completion(says, "tool_calls");
        let text = events(&c);
        assert_eq!(
            text.len(),
            8,
            "role, head, 3 arguments, finish, usage, DONE"
        );
        assert!(text[0].contains(r#""delta":{"role":"assistant","content":null}"#));
        assert!(text[1].contains(r#""delta":{"tool_calls":[{"index":0,"id":"call_sim_1","type":"function","function":{"name":"lookup","arguments":""}}]}"#), "{}", text[1]);
        assert!(
            text[2].contains(
                r#""delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"piece\":\""}}]}"#
            ),
            "{}",
            text[2]
        );
        assert!(text[5].contains(r#""delta":{},"logprobs":null,"finish_reason":"tool_calls""#));
        assert!((1..=4).all(|i| c.is_content(i)) && !c.is_content(5));
        let whole: Value = serde_json::from_str(&c.body()).unwrap();
        assert_eq!(
            whole["choices"][0]["message"],
            json!({"role": "assistant", "content": null, "refusal": null,
                "tool_calls": [{"id": "call_sim_1", "type": "function",
                    "function": {"name": "lookup", "arguments": "{\"piece\":\"[0]\",\"n\":1}"}}]})
        );
        assert_eq!(whole["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(whole["usage"]["completion_tokens"], 3);
    }
}
