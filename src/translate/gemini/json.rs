//! JSON as protobuf and back: `Struct`/`Value` for function arguments
//! and results, and JSON Schema as Gemini's OpenAPI-subset `Schema` for
//! function parameters.

use prost_types::value::Kind;
use serde_json::{Map, Value};

use crate::gemini::v1beta as pb;

/// JSON nested deeper than this (in tool arguments, results and schemas) is
/// cut off: Google's decoders refuse deeply nested messages anyway, and a
/// bound keeps the recursion here safe on hostile input.
const MAX_DEPTH: usize = 32;

/// A JSON Schema (as OpenAI tools carry) as Gemini's OpenAPI-subset
/// `Schema`. Keywords without an equivalent are dropped.
pub(super) fn schema(v: &Value, depth: usize) -> pb::Schema {
    let mut s = pb::Schema::default();
    let Some(o) = v.as_object() else {
        return s;
    };
    if depth >= MAX_DEPTH {
        tracing::debug!("gemini: schema nested too deeply; cut off");
        return s;
    }
    let str_of = |k: &str| {
        o.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let (ty, nullable) = match o.get("type") {
        Some(Value::String(t)) => (schema_type(t), false),
        Some(Value::Array(ts)) => {
            let names: Vec<&str> = ts.iter().filter_map(Value::as_str).collect();
            let ty = names
                .iter()
                .find(|t| **t != "null")
                .map_or(pb::Type::Unspecified, |t| schema_type(t));
            (ty, names.contains(&"null"))
        }
        _ if o.contains_key("properties") => (pb::Type::Object, false),
        _ if o.contains_key("items") => (pb::Type::Array, false),
        _ if o.contains_key("enum") => (pb::Type::String, false),
        _ => (pb::Type::Unspecified, false),
    };
    s.r#type = ty as i32;
    s.nullable = nullable || o.get("nullable").and_then(Value::as_bool).unwrap_or(false);
    s.format = str_of("format");
    s.title = str_of("title");
    s.description = str_of("description");
    if let Some(Value::Array(values)) = o.get("enum") {
        if ty == pb::Type::String || ty == pb::Type::Unspecified {
            s.r#type = pb::Type::String as i32;
            s.format = "enum".to_owned();
            s.r#enum = values
                .iter()
                .filter(|v| !v.is_null())
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .collect();
        } else {
            tracing::debug!("gemini: enum on a non-string schema dropped");
        }
    }
    if let Some(items) = o.get("items").filter(|i| i.is_object()) {
        s.items = Some(Box::new(schema(items, depth + 1)));
    }
    s.min_items = o.get("minItems").and_then(Value::as_i64).unwrap_or(0);
    s.max_items = o.get("maxItems").and_then(Value::as_i64).unwrap_or(0);
    if let Some(Value::Object(props)) = o.get("properties") {
        for (name, p) in props {
            s.properties.insert(name.clone(), schema(p, depth + 1));
        }
        s.property_ordering = props.keys().cloned().collect();
    }
    if let Some(Value::Array(req)) = o.get("required") {
        s.required = req
            .iter()
            .filter_map(Value::as_str)
            .filter(|r| s.properties.contains_key(*r))
            .map(str::to_owned)
            .collect();
    }
    s.minimum = o.get("minimum").and_then(Value::as_f64);
    s.maximum = o.get("maximum").and_then(Value::as_f64);
    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(alts)) = o.get(key) {
            s.any_of.extend(alts.iter().map(|a| schema(a, depth + 1)));
        }
    }
    if let Some(d) = o.get("default") {
        s.default = Some(to_value(d, depth + 1));
    }
    for key in o.keys() {
        if !SCHEMA_KEYS.contains(&key.as_str()) {
            tracing::debug!(keyword = %key, "gemini: JSON Schema keyword dropped");
        }
    }
    s
}

const SCHEMA_KEYS: &[&str] = &[
    "type",
    "nullable",
    "format",
    "title",
    "description",
    "enum",
    "items",
    "minItems",
    "maxItems",
    "properties",
    "required",
    "minimum",
    "maximum",
    "anyOf",
    "oneOf",
    "default",
];

fn schema_type(t: &str) -> pb::Type {
    match t {
        "string" => pb::Type::String,
        "number" => pb::Type::Number,
        "integer" => pb::Type::Integer,
        "boolean" => pb::Type::Boolean,
        "array" => pb::Type::Array,
        "object" => pb::Type::Object,
        "null" => pb::Type::Null,
        _ => pb::Type::Unspecified,
    }
}

/// A JSON object as a protobuf `Struct`.
pub fn to_struct(o: &Map<String, Value>, depth: usize) -> prost_types::Struct {
    prost_types::Struct {
        fields: o
            .iter()
            .map(|(k, v)| (k.clone(), to_value(v, depth + 1)))
            .collect(),
    }
}

/// A JSON value as a protobuf `Value` (numbers become doubles).
pub fn to_value(v: &Value, depth: usize) -> prost_types::Value {
    let kind = if depth >= MAX_DEPTH {
        tracing::debug!("gemini: JSON nested too deeply; cut off");
        Kind::NullValue(0)
    } else {
        match v {
            Value::Null => Kind::NullValue(0),
            Value::Bool(b) => Kind::BoolValue(*b),
            Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
            Value::String(s) => Kind::StringValue(s.clone()),
            Value::Array(items) => Kind::ListValue(prost_types::ListValue {
                values: items.iter().map(|i| to_value(i, depth + 1)).collect(),
            }),
            Value::Object(o) => Kind::StructValue(to_struct(o, depth)),
        }
    };
    prost_types::Value { kind: Some(kind) }
}

/// A protobuf `Struct` as a JSON object.
pub fn from_struct(s: &prost_types::Struct) -> Value {
    Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), from_value(v)))
            .collect(),
    )
}

/// A protobuf `Value` as JSON. Whole doubles become integers, so `3`
/// comes back as `3`, not `3.0`; non-finite numbers become null.
pub fn from_value(v: &prost_types::Value) -> Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::NumberValue(n)) => {
            if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 {
                Value::from(*n as i64)
            } else {
                serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number)
            }
        }
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(from_value).collect()),
        Some(Kind::StructValue(s)) => from_struct(s),
    }
}
