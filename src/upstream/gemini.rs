//! The Gemini upstream: gRPC to `GenerativeService` with the key in
//! `x-goog-api-key`, and Gemini's way of saying "slow down" versus "done
//! for today": `RESOURCE_EXHAUSTED` with a `google.rpc.Status` in
//! `grpc-status-details-bin` whose details carry a `RetryInfo` (how long to
//! wait) and a `QuotaFailure` (which quota ran out: per minute or per day).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message as _;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::Outcome;
use super::hints::MAX_COOLDOWN;
use crate::config::PoolSettings;
use crate::gemini::rpc;
use crate::gemini::v1beta::generative_service_client::GenerativeServiceClient;
use crate::secret::Secret;

/// A client of Gemini's `GenerativeService` over one channel (one HTTP/2
/// connection, reconnected by tonic when it drops).
pub type Client = GenerativeServiceClient<Channel>;

/// Requests one connection carries at once before the next request gets
/// another connection: Google's front ends advertise
/// `SETTINGS_MAX_CONCURRENT_STREAMS` = 100. hyper's HTTP/2 client never
/// opens a second connection by itself; at the server's cap it holds the
/// next request, silently, until a stream ends (hyperium/hyper#2197,
/// #3623) — for an LLM stream, tens of seconds or minutes.
pub const STREAMS_PER_CONNECTION: usize = 100;

/// Largest response message accepted (tonic's default is 4 MiB; a
/// response with generated images can be bigger).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// What the details of a failed call say, as far as the pool cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorDetails {
    /// `RetryInfo.retry_delay`, capped at [`MAX_COOLDOWN`].
    pub retry_delay: Option<Duration>,
    /// `quota_id` (or, without one, `quota_metric`) of every
    /// `QuotaFailure` violation.
    pub quotas: Vec<String>,
    /// `ErrorInfo.reason`, e.g. `API_KEY_INVALID`.
    pub reason: Option<String>,
}

impl ErrorDetails {
    /// Whether a violated quota is a daily one (Gemini names them
    /// `GenerateRequestsPerDayPerProjectPerModel...`).
    pub fn per_day(&self) -> bool {
        self.quotas.iter().any(|q| {
            let q = q.to_ascii_lowercase();
            q.contains("perday") || q.contains("per_day") || q.contains("daily")
        })
    }
}

/// Decodes `grpc-status-details-bin` (tonic's `Status::details()`): a
/// serialized `google.rpc.Status` whose `details` are `Any`s. Details that
/// are missing, malformed or of other types are ignored.
pub fn error_details(status: &tonic::Status) -> ErrorDetails {
    let mut out = ErrorDetails::default();
    if status.details().is_empty() {
        return out;
    }
    let Ok(decoded) = rpc::Status::decode(status.details()) else {
        tracing::debug!("gemini: grpc-status-details-bin is not a google.rpc.Status; ignored");
        return out;
    };
    for any in &decoded.details {
        match any.type_url.as_str() {
            rpc::RETRY_INFO_TYPE_URL => {
                let delay = rpc::RetryInfo::decode(any.value.as_slice())
                    .ok()
                    .and_then(|r| r.retry_delay)
                    // A negative delay does not convert: no hint.
                    .and_then(|d| Duration::try_from(d).ok());
                if let Some(d) = delay {
                    out.retry_delay = Some(d.min(MAX_COOLDOWN));
                }
            }
            rpc::QUOTA_FAILURE_TYPE_URL => {
                if let Ok(q) = rpc::QuotaFailure::decode(any.value.as_slice()) {
                    out.quotas.extend(q.violations.into_iter().map(|v| {
                        if v.quota_id.is_empty() {
                            v.quota_metric
                        } else {
                            v.quota_id
                        }
                    }));
                }
            }
            rpc::ERROR_INFO_TYPE_URL => {
                if let Ok(info) = rpc::ErrorInfo::decode(any.value.as_slice()) {
                    out.reason = Some(info.reason);
                }
            }
            _ => {}
        }
    }
    out
}

/// Time from `now` to the next midnight in US Pacific time, when Gemini's
/// per-day quotas reset (Google documents the reset as midnight Pacific).
/// Pacific is UTC−8, and UTC−7 from the second Sunday of March, 02:00
/// local, to the first Sunday of November, 02:00 local (the US rule since
/// 2007). Midnight is never inside a change, so it is always one instant.
/// The rule is written out rather than read from the system's time zone
/// database, which minimal containers do not have.
pub fn until_pacific_midnight(now: SystemTime) -> Duration {
    const DAY: i64 = 24 * 3600;
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let t = since.as_secs() as i64;
    let local = t + pacific_offset(t);
    let local_midnight = (local.div_euclid(DAY) + 1) * DAY;
    // The offset at that midnight may differ from now's (a change at 02:00
    // today); one correction settles it, as midnight is never near one.
    let mut next = local_midnight - pacific_offset(t);
    next = local_midnight - pacific_offset(next);
    let next = Duration::from_secs(next.max(0) as u64);
    next.saturating_sub(since).min(MAX_COOLDOWN)
}

/// US Pacific's offset from UTC at unix time `t`, in seconds.
fn pacific_offset(t: i64) -> i64 {
    const PST: i64 = -8 * 3600;
    const PDT: i64 = -7 * 3600;
    let (year, _, _) = civil_from_days(t.div_euclid(86_400));
    // 02:00 PST is 10:00 UTC; 02:00 PDT is 09:00 UTC.
    let starts = nth_sunday(year, 3, 2) * 86_400 + 10 * 3600;
    let ends = nth_sunday(year, 11, 1) * 86_400 + 9 * 3600;
    if (starts..ends).contains(&t) {
        PDT
    } else {
        PST
    }
}

/// Days since 1970-01-01 of the `n`th Sunday of `month` in `year`.
fn nth_sunday(year: i64, month: u32, n: i64) -> i64 {
    let first = days_from_civil(year, month, 1);
    // 1970-01-01 was a Thursday: weekday 0 is Sunday.
    let weekday = (first + 4).rem_euclid(7);
    first + (7 - weekday) % 7 + 7 * (n - 1)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the era-based
/// method: 400-year eras of 146,097 days, years starting in March).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number from [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The HTTP status Google documents for each gRPC code (`google.rpc.Code`),
/// used to tell the client what went wrong in its own terms.
pub fn http_status(code: Code) -> u16 {
    match code {
        Code::Ok => 200,
        Code::Cancelled => 499,
        Code::Unknown | Code::Internal | Code::DataLoss => 500,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
        Code::DeadlineExceeded => 504,
        Code::NotFound => 404,
        Code::AlreadyExists | Code::Aborted => 409,
        Code::PermissionDenied => 403,
        Code::Unauthenticated => 401,
        Code::ResourceExhausted => 429,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
    }
}

/// Classifies a failed call.
///
/// `RESOURCE_EXHAUSTED` is a rate limit for `RetryInfo.retry_delay` (hinted)
/// or, without one, the default cooldown; a `QuotaFailure` naming a daily
/// quota makes it quota exhaustion until the next midnight Pacific, whatever
/// `RetryInfo` says (Gemini sends a short delay even then, and retrying
/// after it only earns another refusal). A refused key is `Unauthorized`,
/// also when Gemini says so with `INVALID_ARGUMENT` + `API_KEY_INVALID`.
pub fn classify_status(
    status: &tonic::Status,
    settings: &PoolSettings,
    now: SystemTime,
) -> Outcome {
    let code = status.code();
    match code {
        Code::Ok => Outcome::Ok { hold: None },
        Code::ResourceExhausted => {
            let details = error_details(status);
            if details.per_day() {
                Outcome::QuotaExhausted {
                    wait: until_pacific_midnight(now),
                    hinted: true,
                }
            } else {
                Outcome::RateLimited {
                    wait: details.retry_delay.unwrap_or(settings.default_cooldown),
                    hinted: details.retry_delay.is_some(),
                }
            }
        }
        Code::Unauthenticated | Code::PermissionDenied => Outcome::Unauthorized,
        Code::InvalidArgument
            if error_details(status).reason.as_deref() == Some("API_KEY_INVALID") =>
        {
            Outcome::Unauthorized
        }
        // The provider's side (or the path to it) failed: another key or a
        // later try may work.
        Code::Unavailable
        | Code::Internal
        | Code::Unknown
        | Code::DataLoss
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::Cancelled => Outcome::ServerError {
            status: http_status(code),
        },
        // The request's fault (or a wrong endpoint): the same for every key.
        Code::InvalidArgument
        | Code::NotFound
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::AlreadyExists
        | Code::Unimplemented => Outcome::ClientError {
            status: http_status(code),
        },
    }
}

/// Opens a channel to `base_url`: plaintext HTTP/2 for `http://` (the sim
/// on loopback), TLS with the system's root certificates for `https://`
/// (`https://generativelanguage.googleapis.com`). A path in the URL is
/// ignored: gRPC paths are fixed by the service. Resolves once connected.
pub async fn connect(base_url: &str, connect_timeout: Duration) -> Result<Client, String> {
    let url = url::Url::parse(base_url)
        .map_err(|e| format!("Gemini base URL {base_url:?} is not a URL: {e}"))?;
    let tls = match url.scheme() {
        "https" => true,
        "http" => false,
        other => {
            return Err(format!(
                "Gemini base URL {base_url:?}: scheme {other:?} is not http or https"
            ));
        }
    };
    let Some(host) = url.host_str() else {
        return Err(format!("Gemini base URL {base_url:?} has no host"));
    };
    if !matches!(url.path(), "" | "/") {
        tracing::debug!(base_url, "gemini: path in the base URL ignored for gRPC");
    }
    let origin = match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    };
    let mut endpoint = Endpoint::from_shared(origin.clone())
        .map_err(|e| format!("Gemini base URL {base_url:?}: {}", describe(&e)))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true)
        .user_agent(concat!("tokenyard/", env!("CARGO_PKG_VERSION")))
        .map_err(|e| format!("Gemini user agent: {}", describe(&e)))?;
    if tls {
        endpoint = endpoint
            .tls_config(ClientTlsConfig::new().with_native_roots())
            .map_err(|e| format!("TLS for {origin}: {}", describe(&e)))?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {origin}: {}", describe(&e)))?;
    Ok(GenerativeServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE))
}

/// The connections to one Gemini address, so that no request waits behind
/// a connection's stream cap: a request takes the least busy connection
/// with fewer than `cap` requests on it, and when every one is full, a new
/// connection.
///
/// Connections are kept when idle, for as long as the address is in use
/// (see `GeminiClients::retain`): tonic keeps each alive with HTTP/2 pings
/// and reconnects it if the server closes it, and a burst that needed N
/// connections tends to come back. So there are at most as many as the
/// peak of concurrent requests divided by `cap`, rounded up.
pub struct Connections {
    base_url: String,
    /// Requests per connection, at least 1.
    cap: usize,
    /// Every connection opened or being opened, oldest first (ties go to
    /// the oldest). Never locked across an `.await`.
    slots: Mutex<Vec<Arc<Slot>>>,
}

/// One connection and the requests on it.
#[derive(Default)]
struct Slot {
    /// Set by the first request that picks the slot; requests that pick it
    /// meanwhile wait for that same connect instead of opening their own.
    /// A failed connect is kept too, so every one of them gets its error;
    /// the slot then leaves the list and a later request connects afresh.
    client: tokio::sync::OnceCell<Result<Client, String>>,
    /// Requests using or waiting for this connection. Raised under the
    /// list's lock when the slot is picked (so two requests never both
    /// take a connection's last place), lowered by [`InFlight`]'s drop
    /// without it.
    in_flight: AtomicUsize,
}

/// A request's place on a connection. Hold it until the response is done
/// (a unary answer arrived, a stream ended or was dropped): dropping it
/// frees the place for the next request.
#[must_use = "the place on the connection is freed when this is dropped"]
pub struct InFlight(Arc<Slot>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Connections {
    /// No connection yet: the first request opens one.
    pub fn new(base_url: impl Into<String>, cap: usize) -> Self {
        Connections {
            base_url: base_url.into(),
            cap: cap.max(1),
            slots: Mutex::default(),
        }
    }

    /// A client on a connection with room, and the request's place on it.
    /// Connects (see [`connect`]) when every connection is full or none
    /// is open yet; the error is the connect's.
    pub async fn acquire(&self, connect_timeout: Duration) -> Result<(Client, InFlight), String> {
        let place = self.pick();
        let slot = place.0.clone();
        let connected = slot
            .client
            .get_or_init(|| connect(&self.base_url, connect_timeout))
            .await;
        match connected {
            Ok(client) => Ok((client.clone(), place)),
            Err(e) => {
                self.lock().retain(|s| !Arc::ptr_eq(s, &slot));
                Err(e.clone())
            }
        }
    }

    /// Takes a place on the least busy slot with room, or on a new one.
    fn pick(&self) -> InFlight {
        let mut slots = self.lock();
        let free = slots
            .iter()
            .filter(|s| s.in_flight.load(Ordering::Relaxed) < self.cap)
            .min_by_key(|s| s.in_flight.load(Ordering::Relaxed))
            .cloned();
        let slot = free.unwrap_or_else(|| {
            let slot = Arc::new(Slot::default());
            slots.push(slot.clone());
            slot
        });
        slot.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(slot)
    }

    /// Requests holding a place on any connection now.
    pub fn in_flight(&self) -> usize {
        self.lock()
            .iter()
            .map(|s| s.in_flight.load(Ordering::Relaxed))
            .sum()
    }

    /// Connections opened (not counting ones still connecting).
    pub fn connections(&self) -> usize {
        self.lock()
            .iter()
            .filter(|s| matches!(s.client.get(), Some(Ok(_))))
            .count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A transport error with its causes: tonic's own text is only
/// "transport error".
fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Wraps a message in a request carrying `key` as `x-goog-api-key`,
/// marked sensitive so tonic and hyper never log it.
pub fn with_key<T>(message: T, key: &Secret) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    match MetadataValue::try_from(key.expose()) {
        Ok(mut value) => {
            value.set_sensitive(true);
            req.metadata_mut().insert("x-goog-api-key", value);
        }
        Err(_) => tracing::warn!(
            key = %key,
            "gemini: the key has characters not allowed in gRPC metadata; sent without it"
        ),
    }
    req
}

/// Wraps a message in a request carrying an OAuth access token (from a
/// refresh-token credential) as `authorization: Bearer …`, marked sensitive.
pub fn with_bearer<T>(message: T, token: &Secret) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    match MetadataValue::try_from(format!("Bearer {}", token.expose())) {
        Ok(mut value) => {
            value.set_sensitive(true);
            req.metadata_mut().insert("authorization", value);
        }
        Err(_) => tracing::warn!(
            "gemini: the access token has characters not allowed in gRPC metadata; sent without it"
        ),
    }
    req
}

#[cfg(test)]
mod tests;
