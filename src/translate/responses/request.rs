//! Requests: Responses API → Chat Completions.

use serde_json::{Map, Value, json};

use super::{Context, NAMESPACE_SEPARATOR, ToolName, dropped, err, str_of};
use crate::translate::TranslateError;

/// Top-level Responses request fields this translation reads; any other is
/// dropped with a debug log.
const KNOWN: &[&str] = &[
    "model",
    "input",
    "instructions",
    "stream",
    "max_output_tokens",
    "temperature",
    "top_p",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "text",
    "reasoning",
    "user",
    "prompt_cache_key",
    "prompt_cache_retention",
    "safety_identifier",
    "service_tier",
    "previous_response_id",
    "conversation",
    "prompt",
    "background",
];

/// Fields that pass to the chat request unchanged when they are strings.
const PASS_STRINGS: &[&str] = &[
    "user",
    "prompt_cache_key",
    "prompt_cache_retention",
    "safety_identifier",
    "service_tier",
];

/// A Responses request → a Chat Completions request, and the context the
/// way back needs (see [`Context`]).
pub fn request_to_chat(req: &Value) -> Result<(Value, Context), TranslateError> {
    let req = req
        .as_object()
        .ok_or_else(|| err("body", "the request must be a JSON object"))?;
    refuse_stateful(req)?;
    for key in req.keys().filter(|k| !KNOWN.contains(&k.as_str())) {
        dropped(key);
    }
    let mut ctx = Context::default();
    let mut out = Map::new();
    match req.get("model") {
        None | Some(Value::Null) => {}
        Some(Value::String(m)) => {
            out.insert("model".into(), m.as_str().into());
            ctx.model = m.clone();
        }
        Some(_) => return Err(err("model", "must be a string")),
    }

    // Tools first: calls in the input are named by them.
    let tools = tools_to_chat(req.get("tools"), &mut ctx)?;
    let mut messages = Messages::default();
    match req.get("instructions") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            if !s.is_empty() {
                messages.push(json!({"role": "system", "content": s}));
            }
        }
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                messages.item(item, &format!("instructions[{i}]"))?;
            }
        }
        Some(_) => {
            return Err(err(
                "instructions",
                "must be a string or an array of input items",
            ));
        }
    }
    match req.get("input") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                messages.item(item, &format!("input[{i}]"))?;
            }
        }
        Some(_) => return Err(err("input", "must be a string or an array of input items")),
    }
    let messages = messages.finish();
    if messages.is_empty() {
        return Err(err(
            "input",
            "is missing or empty; the whole conversation goes in input (tokenyard keeps none)",
        ));
    }
    out.insert("messages".into(), Value::Array(messages));

    match req.get("max_output_tokens") {
        None | Some(Value::Null) => {}
        Some(v) => {
            let n = v
                .as_u64()
                .ok_or_else(|| err("max_output_tokens", "must be a non-negative integer"))?;
            out.insert("max_completion_tokens".into(), n.into());
        }
    }
    for key in ["temperature", "top_p"] {
        match req.get(key) {
            None | Some(Value::Null) => {}
            Some(v) if v.is_number() => {
                out.insert(key.into(), v.clone());
            }
            Some(_) => return Err(err(key, "must be a number")),
        }
    }
    for key in PASS_STRINGS {
        match req.get(*key) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => {
                out.insert((*key).into(), s.as_str().into());
            }
            Some(_) => return Err(err(*key, "must be a string")),
        }
    }
    match req.get("stream") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => {
            out.insert("stream".into(), (*b).into());
            if *b {
                // So response.completed can carry real token counts.
                out.insert("stream_options".into(), json!({"include_usage": true}));
            }
        }
        Some(_) => return Err(err("stream", "must be a boolean")),
    }
    text_to_chat(req.get("text"), &mut out)?;
    match req.get("reasoning") {
        None | Some(Value::Null) => {}
        Some(Value::Object(r)) => {
            for key in r.keys().filter(|k| k.as_str() != "effort") {
                dropped(&format!("reasoning.{key}"));
            }
            match r.get("effort") {
                None | Some(Value::Null) => {}
                Some(Value::String(e)) => {
                    out.insert("reasoning_effort".into(), e.as_str().into());
                }
                Some(_) => return Err(err("reasoning.effort", "must be a string")),
            }
        }
        Some(_) => return Err(err("reasoning", "must be an object")),
    }

    let choice = match req.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(c) => tool_choice_to_chat(c, &ctx)?,
    };
    if tools.is_empty() {
        // Every tool offered was one the provider would run itself (or none
        // was offered): a chat request may not name a choice without tools.
        if choice.as_ref().is_some_and(|c| c != "none" && c != "auto") {
            return Err(err(
                "tool_choice",
                "requires a tool, but no function or custom tool is offered",
            ));
        }
    } else {
        out.insert("tools".into(), Value::Array(tools));
        if let Some(c) = choice {
            out.insert("tool_choice".into(), c);
        }
        match req.get("parallel_tool_calls") {
            None | Some(Value::Null) => {}
            Some(Value::Bool(b)) => {
                out.insert("parallel_tool_calls".into(), (*b).into());
            }
            Some(_) => return Err(err("parallel_tool_calls", "must be a boolean")),
        }
    }

    ctx.echo = echo(req);
    Ok((Value::Object(out), ctx))
}

/// Fields that continue or defer to state kept by the provider.
fn refuse_stateful(req: &Map<String, Value>) -> Result<(), TranslateError> {
    let present = |k: &str| !matches!(req.get(k), None | Some(Value::Null));
    if present("previous_response_id") {
        return Err(err(
            "previous_response_id",
            "continues a response stored by the provider, and a Chat Completions provider \
             stores none (nor does tokenyard): send the whole conversation in input, or route \
             the model to a provider with responses = \"native\"",
        ));
    }
    if present("conversation") {
        return Err(err(
            "conversation",
            "names a conversation stored by the provider; a Chat Completions provider keeps \
             none: send the whole conversation in input",
        ));
    }
    if present("prompt") {
        return Err(err(
            "prompt",
            "refers to a prompt template stored by the provider; a Chat Completions provider \
             has none",
        ));
    }
    if req.get("background") == Some(&Value::Bool(true)) {
        return Err(err(
            "background",
            "a background response is stored and polled at the provider; a Chat Completions \
             provider cannot run one",
        ));
    }
    Ok(())
}

/// The request settings every Response object echoes, with the API's
/// defaults where the request left them out. `store` is always false:
/// nothing is stored.
fn echo(req: &Map<String, Value>) -> Map<String, Value> {
    let get = |k: &str, default: Value| match req.get(k) {
        None | Some(Value::Null) => default,
        Some(v) => v.clone(),
    };
    let mut e = Map::new();
    e.insert("instructions".into(), get("instructions", Value::Null));
    e.insert(
        "max_output_tokens".into(),
        get("max_output_tokens", Value::Null),
    );
    e.insert(
        "parallel_tool_calls".into(),
        get("parallel_tool_calls", true.into()),
    );
    e.insert("temperature".into(), get("temperature", 1.0.into()));
    e.insert("top_p".into(), get("top_p", 1.0.into()));
    e.insert("tool_choice".into(), get("tool_choice", "auto".into()));
    e.insert("tools".into(), get("tools", json!([])));
    e.insert(
        "text".into(),
        get("text", json!({"format": {"type": "text"}})),
    );
    e.insert(
        "reasoning".into(),
        get("reasoning", json!({"effort": null, "summary": null})),
    );
    e.insert("store".into(), false.into());
    e.insert("truncation".into(), get("truncation", "disabled".into()));
    e.insert("metadata".into(), get("metadata", json!({})));
    e.insert("user".into(), get("user", Value::Null));
    if let Some(k) = req.get("prompt_cache_key").filter(|v| !v.is_null()) {
        e.insert("prompt_cache_key".into(), k.clone());
    }
    e
}

/// `text.format` → `response_format`; `text.verbosity` → `verbosity`.
fn text_to_chat(text: Option<&Value>, out: &mut Map<String, Value>) -> Result<(), TranslateError> {
    let text = match text {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Object(t)) => t,
        Some(_) => return Err(err("text", "must be an object")),
    };
    for key in text
        .keys()
        .filter(|k| !["format", "verbosity"].contains(&k.as_str()))
    {
        dropped(&format!("text.{key}"));
    }
    match text.get("verbosity") {
        None | Some(Value::Null) => {}
        Some(Value::String(v)) => {
            out.insert("verbosity".into(), v.as_str().into());
        }
        Some(_) => return Err(err("text.verbosity", "must be a string")),
    }
    let format = match text.get("format") {
        None | Some(Value::Null) => return Ok(()),
        Some(f @ Value::Object(_)) => f,
        Some(_) => return Err(err("text.format", "must be an object")),
    };
    match str_of(format, "type") {
        Some("text") => {}
        Some("json_object") => {
            out.insert("response_format".into(), json!({"type": "json_object"}));
        }
        Some("json_schema") => {
            let schema = format
                .get("schema")
                .filter(|s| s.is_object())
                .ok_or_else(|| err("text.format.schema", "must be a JSON schema object"))?;
            let mut js = Map::new();
            js.insert(
                "name".into(),
                str_of(format, "name").unwrap_or("response").into(),
            );
            js.insert("schema".into(), schema.clone());
            if let Some(d) = str_of(format, "description") {
                js.insert("description".into(), d.into());
            }
            if let Some(s) = format.get("strict").filter(|s| s.is_boolean()) {
                js.insert("strict".into(), s.clone());
            }
            out.insert(
                "response_format".into(),
                json!({"type": "json_schema", "json_schema": js}),
            );
        }
        Some(other) => {
            return Err(err(
                "text.format.type",
                format!("{other:?} has no Chat Completions equivalent"),
            ));
        }
        None => return Err(err("text.format.type", "must be a string")),
    }
    Ok(())
}

/// The chat function name of tool `name` in `namespace`.
fn flat_name(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{ns}{NAMESPACE_SEPARATOR}{name}"),
        None => name.to_owned(),
    }
}

/// Responses `tools` → chat `tools`; records in `ctx` every tool whose
/// calls come back under another name or item type.
fn tools_to_chat(tools: Option<&Value>, ctx: &mut Context) -> Result<Vec<Value>, TranslateError> {
    let tools = match tools {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(t)) => t,
        Some(_) => return Err(err("tools", "must be an array")),
    };
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut add = |tool: Value, at: &str| -> Result<(), TranslateError> {
        let name = tool["function"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if !seen.insert(name.clone()) {
            return Err(err(
                format!("{at}.name"),
                format!("{name:?} is the name of another tool (namespaces flattened with \"__\")"),
            ));
        }
        out.push(tool);
        Ok(())
    };
    for (k, t) in tools.iter().enumerate() {
        let at = format!("tools[{k}]");
        match str_of(t, "type") {
            Some("function") => add(function_tool(t, None, &at, ctx)?, &at)?,
            Some("custom") => add(custom_tool(t, None, &at, ctx)?, &at)?,
            Some("namespace") => {
                let ns = str_of(t, "name")
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| err(format!("{at}.name"), "must be a non-empty string"))?;
                let about = str_of(t, "description").filter(|d| !d.is_empty());
                let inner = t
                    .get("tools")
                    .and_then(Value::as_array)
                    .ok_or_else(|| err(format!("{at}.tools"), "must be an array"))?;
                for (j, tool) in inner.iter().enumerate() {
                    let at = format!("{at}.tools[{j}]");
                    let made = match str_of(tool, "type") {
                        Some("function") => function_tool(tool, Some((ns, about)), &at, ctx)?,
                        Some("custom") => custom_tool(tool, Some((ns, about)), &at, ctx)?,
                        other => {
                            return Err(err(
                                format!("{at}.type"),
                                format!("{other:?} inside a namespace cannot be translated"),
                            ));
                        }
                    };
                    add(made, &at)?;
                }
            }
            // A built-in tool (web search, file search, code interpreter,
            // local shell, …): it has no chat form.
            Some(other) => dropped(&format!("{at} (type {other:?})")),
            None => return Err(err(format!("{at}.type"), "must be a string")),
        }
    }
    Ok(out)
}

/// A namespace's name and description, for the tools inside it.
type Namespace<'a> = Option<(&'a str, Option<&'a str>)>;

fn described(ns: Namespace<'_>, description: Option<&str>) -> Option<String> {
    let description = description.filter(|d| !d.is_empty());
    match (ns, description) {
        (Some((name, Some(about))), Some(d)) => Some(format!("({name}: {about}) {d}")),
        (Some((name, Some(about))), None) => Some(format!("({name}: {about})")),
        (_, d) => d.map(str::to_owned),
    }
}

fn tool_name<'a>(t: &'a Value, at: &str) -> Result<&'a str, TranslateError> {
    str_of(t, "name")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| err(format!("{at}.name"), "must be a non-empty string"))
}

fn function_tool(
    t: &Value,
    ns: Namespace<'_>,
    at: &str,
    ctx: &mut Context,
) -> Result<Value, TranslateError> {
    let name = tool_name(t, at)?;
    let chat_name = flat_name(ns.map(|n| n.0), name);
    let mut f = Map::new();
    f.insert("name".into(), chat_name.as_str().into());
    if let Some(d) = described(ns, str_of(t, "description")) {
        f.insert("description".into(), d.into());
    }
    match t.get("parameters") {
        None | Some(Value::Null) => {
            f.insert(
                "parameters".into(),
                json!({"type": "object", "properties": {}}),
            );
        }
        Some(p @ Value::Object(_)) => {
            f.insert("parameters".into(), p.clone());
        }
        Some(_) => return Err(err(format!("{at}.parameters"), "must be a JSON schema")),
    }
    if let Some(s) = t.get("strict").filter(|s| s.is_boolean()) {
        f.insert("strict".into(), s.clone());
    }
    if let Some((namespace, _)) = ns {
        ctx.tools.insert(
            chat_name,
            ToolName {
                namespace: Some(namespace.to_owned()),
                name: name.to_owned(),
                custom: false,
            },
        );
    }
    Ok(json!({"type": "function", "function": f}))
}

/// A free-form tool becomes a function of one string, `input`; a grammar
/// it declares goes into the description, for the model to follow.
fn custom_tool(
    t: &Value,
    ns: Namespace<'_>,
    at: &str,
    ctx: &mut Context,
) -> Result<Value, TranslateError> {
    let name = tool_name(t, at)?;
    let chat_name = flat_name(ns.map(|n| n.0), name);
    let mut description = described(ns, str_of(t, "description")).unwrap_or_default();
    if let Some(format) = t.get("format").filter(|f| !f.is_null())
        && str_of(format, "type") == Some("grammar")
    {
        let syntax = str_of(format, "syntax").unwrap_or("grammar");
        let definition = str_of(format, "definition").unwrap_or_default();
        if !description.is_empty() {
            description.push_str("\n\n");
        }
        description.push_str(&format!(
            "The input must follow this {syntax} grammar:\n{definition}"
        ));
    }
    let mut f = Map::new();
    f.insert("name".into(), chat_name.as_str().into());
    if !description.is_empty() {
        f.insert("description".into(), description.into());
    }
    f.insert(
        "parameters".into(),
        json!({
            "type": "object",
            "properties": {"input": {"type": "string", "description": "The tool's input, as free-form text."}},
            "required": ["input"],
            "additionalProperties": false,
        }),
    );
    ctx.tools.insert(
        chat_name,
        ToolName {
            namespace: ns.map(|n| n.0.to_owned()),
            name: name.to_owned(),
            custom: true,
        },
    );
    Ok(json!({"type": "function", "function": f}))
}

fn tool_choice_to_chat(choice: &Value, ctx: &Context) -> Result<Option<Value>, TranslateError> {
    match choice {
        Value::String(s) if ["auto", "none", "required"].contains(&s.as_str()) => {
            Ok(Some(s.as_str().into()))
        }
        Value::String(s) => Err(err(
            "tool_choice",
            format!("{s:?} is not one of auto, none, required"),
        )),
        Value::Object(_) => match str_of(choice, "type") {
            Some("function" | "custom") => {
                let name = tool_name(choice, "tool_choice")?;
                let chat_name = flat_name(str_of(choice, "namespace"), name);
                let known = ctx.tools.contains_key(&chat_name)
                    || str_of(choice, "type") == Some("function");
                if !known {
                    return Err(err("tool_choice.name", "names no custom tool offered"));
                }
                Ok(Some(
                    json!({"type": "function", "function": {"name": chat_name}}),
                ))
            }
            Some(other) => Err(err(
                "tool_choice.type",
                format!(
                    "{other:?} forces a tool the provider would run itself (or a choice with no \
                     Chat Completions equivalent)"
                ),
            )),
            None => Err(err("tool_choice.type", "must be a string")),
        },
        _ => Err(err("tool_choice", "must be a string or an object")),
    }
}

/// The chat messages being built, with images a tool returned waiting to
/// follow its tool messages.
#[derive(Default)]
struct Messages {
    out: Vec<Value>,
    /// Image parts from tool outputs: a chat tool message carries text only,
    /// so they follow the run of tool messages as one user message.
    images: Vec<Value>,
}

impl Messages {
    fn push(&mut self, m: Value) {
        if m["role"] != "tool" {
            self.flush_images();
        }
        self.out.push(m);
    }

    fn flush_images(&mut self) {
        if self.images.is_empty() {
            return;
        }
        let mut content = vec![json!({
            "type": "text",
            "text": "The tool calls above returned these images:",
        })];
        content.append(&mut self.images);
        self.out.push(json!({"role": "user", "content": content}));
    }

    fn finish(mut self) -> Vec<Value> {
        self.flush_images();
        self.out
    }

    /// A tool call joins the assistant message right before it (its text,
    /// or other calls); otherwise it starts an assistant message.
    fn tool_call(&mut self, call: Value) {
        if self.images.is_empty()
            && let Some(last) = self.out.last_mut()
            && last["role"] == "assistant"
            && let Some(m) = last.as_object_mut()
        {
            match m.get_mut("tool_calls") {
                Some(Value::Array(calls)) => calls.push(call),
                _ => {
                    m.insert("tool_calls".into(), json!([call]));
                }
            }
            return;
        }
        self.push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
    }

    fn item(&mut self, item: &Value, at: &str) -> Result<(), TranslateError> {
        if !item.is_object() {
            return Err(err(at, "must be an input item object"));
        }
        let kind = match item.get("type") {
            None | Some(Value::Null) => "message",
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return Err(err(format!("{at}.type"), "must be a string")),
        };
        match kind {
            "message" => {
                let m = message(item, at)?;
                self.push(m);
            }
            "function_call" | "custom_tool_call" => {
                let call_id = required(item, "call_id", at)?;
                let name = required(item, "name", at)?;
                let chat_name = flat_name(str_of(item, "namespace"), name);
                let arguments = if kind == "custom_tool_call" {
                    let input = str_of(item, "input")
                        .ok_or_else(|| err(format!("{at}.input"), "must be a string"))?;
                    json!({"input": input}).to_string()
                } else {
                    match item.get("arguments") {
                        None | Some(Value::Null) => "{}".to_owned(),
                        Some(Value::String(s)) => s.clone(),
                        // Lenient: an object where the API wants its JSON text.
                        Some(v @ Value::Object(_)) => v.to_string(),
                        Some(_) => {
                            return Err(err(format!("{at}.arguments"), "must be a JSON string"));
                        }
                    }
                };
                self.tool_call(json!({
                    "id": call_id,
                    "type": "function",
                    "function": {"name": chat_name, "arguments": arguments},
                }));
            }
            "function_call_output" | "custom_tool_call_output" => {
                let call_id = required(item, "call_id", at)?;
                let content = self.tool_output(item.get("output"), &format!("{at}.output"))?;
                self.push(json!({"role": "tool", "tool_call_id": call_id, "content": content}));
            }
            // Encrypted for the provider that made it; a chat server could
            // not read it.
            "reasoning" => dropped(at),
            "item_reference" => {
                return Err(err(
                    format!("{at}.type"),
                    "item_reference points at an item stored by the provider; tokenyard keeps \
                     none: send the item itself",
                ));
            }
            other => {
                return Err(err(
                    format!("{at}.type"),
                    format!("item type {other:?} cannot be sent to a Chat Completions provider"),
                ));
            }
        }
        Ok(())
    }

    /// A tool's output as the tool message's text; images wait in
    /// `self.images`.
    fn tool_output(&mut self, output: Option<&Value>, at: &str) -> Result<String, TranslateError> {
        match output {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Array(parts)) => {
                let mut texts = Vec::new();
                for (k, p) in parts.iter().enumerate() {
                    let at = format!("{at}[{k}]");
                    match str_of(p, "type") {
                        Some("input_text" | "output_text" | "text") => {
                            texts.push(required(p, "text", &at)?.to_owned());
                        }
                        Some("input_image") => {
                            self.images.push(image_part(p, &at)?);
                            texts.push("(an image; it follows this message)".to_owned());
                        }
                        other => {
                            return Err(err(
                                format!("{at}.type"),
                                format!("{other:?} cannot be carried in a chat tool message"),
                            ));
                        }
                    }
                }
                Ok(texts.join("\n"))
            }
            // Some clients send a structured output object: its JSON text.
            Some(v) => Ok(v.to_string()),
        }
    }
}

fn required<'a>(v: &'a Value, key: &str, at: &str) -> Result<&'a str, TranslateError> {
    str_of(v, key).ok_or_else(|| err(format!("{at}.{key}"), "must be a string"))
}

/// A `message` item → a chat message.
fn message(item: &Value, at: &str) -> Result<Value, TranslateError> {
    let role = required(item, "role", at)?;
    let chat_role = match role {
        "user" => "user",
        "assistant" => "assistant",
        // Most chat servers know no `developer` role; `system` is read the
        // same way by the ones that do.
        "system" | "developer" => "system",
        other => {
            return Err(err(
                format!("{at}.role"),
                format!("{other:?} is not one of user, assistant, system, developer"),
            ));
        }
    };
    let parts: Vec<Value> = match item.get("content") {
        Some(Value::String(s)) => return Ok(json!({"role": chat_role, "content": s})),
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(k, p)| content_part(p, &format!("{at}.content[{k}]")))
            .collect::<Result<_, _>>()?,
        None | Some(Value::Null) => Vec::new(),
        Some(_) => {
            return Err(err(
                format!("{at}.content"),
                "must be a string or an array of content parts",
            ));
        }
    };
    if chat_role == "assistant" {
        // Chat's assistant content is its text; a refusal has its own field.
        let mut text = String::new();
        let mut refusal = None;
        for (k, p) in parts.iter().enumerate() {
            match p["type"].as_str() {
                Some("text") => text.push_str(p["text"].as_str().unwrap_or_default()),
                Some("refusal") => refusal = p["refusal"].as_str().map(str::to_owned),
                _ => {
                    return Err(err(
                        format!("{at}.content[{k}].type"),
                        "an assistant message carries only text and refusals",
                    ));
                }
            }
        }
        let mut m = json!({"role": "assistant", "content": text});
        if let Some(r) = refusal {
            m["refusal"] = r.into();
        }
        return Ok(m);
    }
    if let Some((k, _)) = parts
        .iter()
        .enumerate()
        .find(|(_, p)| p["type"] == "refusal")
    {
        return Err(err(
            format!("{at}.content[{k}].type"),
            "only an assistant message can carry a refusal",
        ));
    }
    if chat_role == "system"
        && let Some((k, _)) = parts.iter().enumerate().find(|(_, p)| p["type"] != "text")
    {
        return Err(err(
            format!("{at}.content[{k}].type"),
            "a system or developer message carries only text in Chat Completions",
        ));
    }
    let content = match parts.as_slice() {
        [one] if one["type"] == "text" => one["text"].clone(),
        _ => Value::Array(parts),
    };
    Ok(json!({"role": chat_role, "content": content}))
}

/// A content part of a message → a chat content part (a refusal is kept as
/// `{"type":"refusal"}` for [`message`] to place).
fn content_part(p: &Value, at: &str) -> Result<Value, TranslateError> {
    match str_of(p, "type") {
        Some("input_text" | "output_text" | "text") => {
            Ok(json!({"type": "text", "text": required(p, "text", at)?}))
        }
        Some("refusal") => Ok(json!({"type": "refusal", "refusal": required(p, "refusal", at)?})),
        Some("input_image") => image_part(p, at),
        Some("input_file") => {
            if p.get("file_url").is_some_and(|u| !u.is_null()) {
                return Err(err(
                    format!("{at}.file_url"),
                    "Chat Completions takes a file as file_data or file_id, not by URL",
                ));
            }
            let mut file = Map::new();
            for key in ["file_data", "file_id", "filename"] {
                if let Some(v) = str_of(p, key) {
                    file.insert(key.into(), v.into());
                }
            }
            if !file.contains_key("file_data") && !file.contains_key("file_id") {
                return Err(err(at, "an input_file needs file_data or file_id"));
            }
            Ok(json!({"type": "file", "file": file}))
        }
        Some(other) => Err(err(
            format!("{at}.type"),
            format!("content type {other:?} has no Chat Completions equivalent"),
        )),
        None => Err(err(format!("{at}.type"), "must be a string")),
    }
}

fn image_part(p: &Value, at: &str) -> Result<Value, TranslateError> {
    let Some(url) = str_of(p, "image_url") else {
        if p.get("file_id").is_some_and(|f| !f.is_null()) {
            return Err(err(
                format!("{at}.file_id"),
                "an uploaded file id cannot be shown to a Chat Completions model; send the \
                 image as image_url (an https or data: URL)",
            ));
        }
        return Err(err(format!("{at}.image_url"), "must be a string"));
    };
    let mut image = Map::new();
    image.insert("url".into(), url.into());
    if let Some(d) = str_of(p, "detail") {
        image.insert("detail".into(), d.into());
    }
    Ok(json!({"type": "image_url", "image_url": image}))
}
