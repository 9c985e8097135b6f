//! Gemini's wire format as the sim speaks it: the answers (whole and
//! streamed), and the refusal statuses with their `google.rpc` details.
//! Pure functions, no I/O.

use std::time::Duration;

use prost::Message as _;
use tonic::{Code, Status};

use crate::gemini::rpc;
use crate::gemini::v1beta as pb;
use crate::sim::HintStyle;
use pb::candidate::FinishReason;

/// As many pieces as the OpenAI path allows.
const MAX_PIECES: usize = 10_000;

/// What one admitted request will get.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    pub(super) id: u64,
    pub(super) model: String,
    /// Text pieces `[0]`, `[1]`, ...; unused for a function call.
    pub(super) pieces: usize,
    pub(super) finish: FinishReason,
    /// Answer with a call to this function instead of text.
    pub(super) call: Option<String>,
    pub(super) prompt_tokens: i32,
}

/// Tokens a function call is said to cost.
const CALL_TOKENS: i32 = 5;

impl Plan {
    /// Messages in a streamed answer: one per piece (at least one, which
    /// carries the finish reason), or the single function call.
    pub(super) fn messages(&self) -> usize {
        if self.call.is_some() {
            1
        } else {
            self.pieces.max(1)
        }
    }

    fn usage(&self) -> pb::generate_content_response::UsageMetadata {
        let out = if self.call.is_some() {
            CALL_TOKENS
        } else {
            i32::try_from(self.pieces).unwrap_or(i32::MAX)
        };
        pb::generate_content_response::UsageMetadata {
            prompt_token_count: self.prompt_tokens,
            candidates_token_count: out,
            total_token_count: self.prompt_tokens.saturating_add(out),
            ..Default::default()
        }
    }

    fn response(&self, parts: Vec<pb::Part>, last: bool) -> pb::GenerateContentResponse {
        pb::GenerateContentResponse {
            candidates: vec![pb::Candidate {
                index: Some(0),
                content: (!parts.is_empty()).then(|| pb::Content {
                    parts,
                    role: "model".to_owned(),
                }),
                finish_reason: if last {
                    self.finish as i32
                } else {
                    FinishReason::Unspecified as i32
                },
                ..Default::default()
            }],
            usage_metadata: last.then(|| self.usage()),
            model_version: self.model.clone(),
            response_id: format!("sim-{}", self.id),
            ..Default::default()
        }
    }

    fn call_part(name: &str) -> pb::Part {
        let args = prost_types::Struct {
            fields: [(
                "city".to_owned(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::StringValue("Paris".to_owned())),
                },
            )]
            .into(),
        };
        pb::Part {
            data: Some(pb::part::Data::FunctionCall(pb::FunctionCall {
                id: String::new(),
                name: name.to_owned(),
                args: Some(args),
            })),
            thought: false,
        }
    }

    pub(super) fn text(t: String) -> pb::Part {
        pb::Part {
            data: Some(pb::part::Data::Text(t)),
            thought: false,
        }
    }

    /// The whole answer of `GenerateContent`.
    pub(super) fn whole(&self) -> pb::GenerateContentResponse {
        let parts = match &self.call {
            Some(name) => vec![Self::call_part(name)],
            None if self.pieces == 0 => Vec::new(),
            None => vec![Self::text(
                (0..self.pieces).map(|i| format!("[{i}]")).collect(),
            )],
        };
        self.response(parts, true)
    }

    /// Streamed message `i` (`0 <= i < messages()`).
    pub(super) fn message(&self, i: usize) -> pb::GenerateContentResponse {
        let last = i + 1 >= self.messages();
        let parts = match &self.call {
            Some(name) => vec![Self::call_part(name)],
            None if self.pieces == 0 => Vec::new(),
            None => vec![Self::text(format!("[{i}]"))],
        };
        self.response(parts, last)
    }
}

/// What the request asks for, read before the lock is taken.
pub(super) struct Params {
    pub(super) model: String,
    pub(super) pieces: Option<usize>,
    pub(super) call: Option<String>,
    pub(super) prompt_tokens: i32,
    pub(super) empty: bool,
}

pub(super) fn params(req: &pb::GenerateContentRequest) -> Params {
    use pb::function_calling_config::Mode;
    let text_of = |c: &pb::Content| -> String {
        c.parts
            .iter()
            .filter_map(|p| match &p.data {
                Some(pb::part::Data::Text(t)) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    };
    let chars: usize = req
        .contents
        .iter()
        .chain(req.system_instruction.as_ref())
        .map(|c| text_of(c).len())
        .sum();
    let first = req
        .tools
        .iter()
        .flat_map(|t| &t.function_declarations)
        .map(|d| d.name.clone())
        .next();
    let calling = req
        .tool_config
        .as_ref()
        .and_then(|t| t.function_calling_config.as_ref());
    let mode = calling.map_or(Mode::Unspecified, |c| {
        Mode::try_from(c.mode).unwrap_or(Mode::Unspecified)
    });
    let asks_weather = req
        .contents
        .iter()
        .rev()
        .find(|c| c.role == "user" || c.role.is_empty())
        .is_some_and(|c| text_of(c).to_lowercase().contains("weather"));
    let call = match mode {
        Mode::None => None,
        Mode::Any => calling
            .and_then(|c| c.allowed_function_names.first().cloned())
            .or(first),
        _ if asks_weather => first,
        _ => None,
    };
    let pieces = req
        .generation_config
        .as_ref()
        .and_then(|g| g.max_output_tokens)
        .map(|n| usize::try_from(n).unwrap_or(0).min(MAX_PIECES));
    Params {
        model: req
            .model
            .strip_prefix("models/")
            .unwrap_or(&req.model)
            .to_owned(),
        pieces,
        call,
        prompt_tokens: i32::try_from(chars / 4).unwrap_or(i32::MAX).max(1),
        empty: req.contents.is_empty(),
    }
}

/// A status with a `google.rpc.Status` in `grpc-status-details-bin`; no
/// details, no trailer (as Google's servers do).
fn with_details(code: Code, message: &str, details: Vec<prost_types::Any>) -> Status {
    if details.is_empty() {
        return Status::new(code, message);
    }
    let body = rpc::Status {
        code: code as i32,
        message: message.to_owned(),
        details,
    };
    Status::with_details(code, message, body.encode_to_vec().into())
}

fn any<M: prost::Message>(type_url: &str, m: &M) -> prost_types::Any {
    prost_types::Any {
        type_url: type_url.to_owned(),
        value: m.encode_to_vec(),
    }
}

const QUOTA_MESSAGE: &str = "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.";

fn quota_failure(model: &str, quota_id: &str, value: u32) -> prost_types::Any {
    let violation = rpc::quota_failure::Violation {
        quota_metric: "generativelanguage.googleapis.com/generate_content_requests".to_owned(),
        quota_id: quota_id.to_owned(),
        quota_dimensions: [
            ("location".to_owned(), "global".to_owned()),
            ("model".to_owned(), model.to_owned()),
        ]
        .into(),
        quota_value: i64::from(value),
        ..Default::default()
    };
    any(
        rpc::QUOTA_FAILURE_TYPE_URL,
        &rpc::QuotaFailure {
            violations: vec![violation],
        },
    )
}

fn retry_info(d: Duration) -> prost_types::Any {
    let d = prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    };
    any(
        rpc::RETRY_INFO_TYPE_URL,
        &rpc::RetryInfo {
            retry_delay: Some(d),
        },
    )
}

/// The rate-limit refusal in the account's hint style; `wait` is exact and
/// every form rounds it up, so no hint is earlier than the reset.
pub(super) fn rate_limited(model: &str, limit: u32, wait: Duration, style: HintStyle) -> Status {
    let ms = Duration::from_millis(
        u64::try_from(wait.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX),
    );
    let secs = Duration::from_secs(wait.as_nanos().div_ceil(1_000_000_000).max(1) as u64);
    let per_minute = || quota_failure(model, "GenerateRequestsPerMinutePerProjectPerModel", limit);
    let details = match style {
        HintStyle::All => vec![per_minute(), retry_info(ms)],
        HintStyle::RetryAfterOnly | HintStyle::HttpDate => vec![retry_info(secs)],
        HintStyle::RetryAfterMsOnly => vec![retry_info(ms)],
        HintStyle::ResetHeadersOnly => vec![per_minute()],
        HintStyle::None => Vec::new(),
    };
    with_details(Code::ResourceExhausted, QUOTA_MESSAGE, details)
}

/// The gRPC code for an HTTP status the sim is told to fail with.
fn code_for(status: u16) -> Code {
    match status {
        400 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        408 | 504 => Code::DeadlineExceeded,
        409 => Code::Aborted,
        429 => Code::ResourceExhausted,
        499 => Code::Cancelled,
        501 => Code::Unimplemented,
        502 | 503 => Code::Unavailable,
        s if (400..500).contains(&s) => Code::FailedPrecondition,
        _ => Code::Internal,
    }
}

pub(super) fn fault_status(status: u16) -> Status {
    let code = code_for(status);
    let message = match code {
        Code::Unavailable => "The model is overloaded. Please try again later.",
        Code::Internal => {
            "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting"
        }
        Code::ResourceExhausted => "Resource has been exhausted (e.g. check quota).",
        Code::Unauthenticated => "Request had invalid authentication credentials.",
        Code::PermissionDenied => "The caller does not have permission",
        Code::DeadlineExceeded => "Deadline expired before operation could complete.",
        _ => "The sim was told to fail this request.",
    };
    Status::new(code, message)
}

pub(super) fn missing_credential() -> Status {
    Status::unauthenticated(
        "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
    )
}

/// A wrong key, with the `ErrorInfo` Google attaches to it.
pub(super) fn invalid_key() -> Status {
    let info = rpc::ErrorInfo {
        reason: "API_KEY_INVALID".to_owned(),
        domain: "googleapis.com".to_owned(),
        metadata: [(
            "service".to_owned(),
            "generativelanguage.googleapis.com".to_owned(),
        )]
        .into(),
    };
    with_details(
        Code::Unauthenticated,
        "API key not valid. Please pass a valid API key.",
        vec![any(rpc::ERROR_INFO_TYPE_URL, &info)],
    )
}

pub(super) fn expired_token() -> Status {
    Status::unauthenticated(
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
    )
}

pub(super) fn invalid_token() -> Status {
    Status::unauthenticated("Request had invalid authentication credentials.")
}

pub(super) fn contents_missing() -> Status {
    Status::invalid_argument("* GenerateContentRequest.contents: contents is not specified\n")
}

pub(super) fn model_not_found(model: &str) -> Status {
    Status::not_found(format!(
        "models/{model} is not found for API version v1beta, or is not supported for generateContent. Call ListModels to see the list of available models and their supported methods."
    ))
}

/// An exhausted daily quota: the per-day `QuotaFailure`, no `RetryInfo`.
pub(super) fn daily_quota(model: &str) -> Status {
    let details = vec![quota_failure(
        model,
        "GenerateRequestsPerDayPerProjectPerModel",
        0,
    )];
    with_details(Code::ResourceExhausted, QUOTA_MESSAGE, details)
}
