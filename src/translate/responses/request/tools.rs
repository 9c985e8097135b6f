//! Tools: Responses `tools` and `tool_choice` → chat's, namespaces
//! flattened and custom (free-form) tools offered as functions of one
//! string.

use serde_json::{Map, Value, json};

use crate::translate::TranslateError;
use crate::translate::responses::{Context, NAMESPACE_SEPARATOR, ToolName, dropped, err, str_of};

/// The chat function name of tool `name` in `namespace`.
pub(super) fn flat_name(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{ns}{NAMESPACE_SEPARATOR}{name}"),
        None => name.to_owned(),
    }
}

/// Responses `tools` → chat `tools`; records in `ctx` every tool whose
/// calls come back under another name or item type.
pub(super) fn tools_to_chat(
    tools: Option<&Value>,
    ctx: &mut Context,
) -> Result<Vec<Value>, TranslateError> {
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

pub(super) fn tool_choice_to_chat(
    choice: &Value,
    ctx: &Context,
) -> Result<Option<Value>, TranslateError> {
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
