//! The raw config resolved into a checked [`Config`], section by section:
//! defaults filled in, references read, and anything wrong named by the
//! path of its key.

use super::values::{Resolver, budget, check_name, duration, one_of, positive, size, unique_name};
use super::*;

impl RawConfig {
    pub(in crate::config) fn resolve(
        self,
        source: &str,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let r = Resolver {
            base_dir,
            env,
            files: Default::default(),
        };

        let listen_text = self.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen: SocketAddr = listen_text.trim().parse().map_err(|_| {
            invalid(
                "listen",
                format!("{listen_text:?} is not an address like \"127.0.0.1:8787\""),
            )
        })?;

        let client_keys = self
            .client_keys
            .iter()
            .enumerate()
            .map(|(i, v)| r.secret(&format!("client_keys[{i}]"), v))
            .collect::<Result<Vec<_>, _>>()?;
        let admin_key = self
            .admin_key
            .as_deref()
            .map(|v| r.secret("admin_key", v))
            .transpose()?;
        let state_file = match self.state_file.as_deref() {
            Some("") => return Err(invalid("state_file", "is empty")),
            Some(p) => Some(r.path(p)),
            None => default_state_file(),
        };

        let shared = match &self.state {
            None => None,
            Some(s) => match s.backend.as_deref().unwrap_or("file") {
                "file" => {
                    if s.url.is_some() || s.password.is_some() {
                        return Err(invalid("state.url", "only applies to backend = \"redis\""));
                    }
                    None
                }
                "redis" => {
                    let Some(url) = s.url.as_deref() else {
                        return Err(invalid(
                            "state.url",
                            "is required for backend = \"redis\" (redis://host:6379 or rediss://… for TLS)",
                        ));
                    };
                    let parsed = url::Url::parse(url)
                        .map_err(|e| invalid("state.url", format!("is not a URL ({e})")))?;
                    if !matches!(parsed.scheme(), "redis" | "rediss") {
                        return Err(invalid(
                            "state.url",
                            format!(
                                "must start with redis:// or rediss://, not {}://",
                                parsed.scheme()
                            ),
                        ));
                    }
                    if parsed.password().is_some() {
                        return Err(invalid(
                            "state.url",
                            "must not hold a password; set state.password (env:/file: work)",
                        ));
                    }
                    let namespace = s.namespace.clone().unwrap_or_else(|| "tokenyard".into());
                    if namespace.is_empty()
                        || namespace.contains(|c: char| c.is_whitespace() || c == '{' || c == '}')
                    {
                        return Err(invalid(
                            "state.namespace",
                            "must be a non-empty word without spaces or braces",
                        ));
                    }
                    Some(SharedSettings {
                        url: url.to_owned(),
                        password: s
                            .password
                            .as_deref()
                            .map(|v| r.secret("state.password", v))
                            .transpose()?,
                        namespace,
                    })
                }
                other => {
                    return Err(invalid(
                        "state.backend",
                        format!("{other:?} is not a backend; use \"file\" or \"redis\""),
                    ));
                }
            },
        };

        let defaults = PoolSettings::default();
        let p = &self.pool;
        let tiers = p.tiers.clone().unwrap_or(defaults.tiers.clone());
        if tiers.is_empty() {
            return Err(invalid("pool.tiers", "must name at least one tier"));
        }
        let mut seen = HashSet::new();
        for (i, t) in tiers.iter().enumerate() {
            check_name(&format!("pool.tiers[{i}]"), t)?;
            if !seen.insert(t.as_str()) {
                return Err(invalid(
                    format!("pool.tiers[{i}]"),
                    format!("{t:?} is listed twice"),
                ));
            }
        }
        let pool = PoolSettings {
            default_cooldown: duration(
                "pool.default_cooldown",
                p.default_cooldown.as_ref(),
                defaults.default_cooldown,
            )?,
            quota_cooldown: duration(
                "pool.quota_cooldown",
                p.quota_cooldown.as_ref(),
                defaults.quota_cooldown,
            )?,
            max_failures: positive("pool.max_failures", p.max_failures, defaults.max_failures)?,
            probe_interval: duration(
                "pool.probe_interval",
                p.probe_interval.as_ref(),
                defaults.probe_interval,
            )?,
            max_attempts: positive("pool.max_attempts", p.max_attempts, defaults.max_attempts)?,
            max_wait: duration("pool.max_wait", p.max_wait.as_ref(), defaults.max_wait)?,
            refresh_skew: duration(
                "pool.refresh_skew",
                p.refresh_skew.as_ref(),
                defaults.refresh_skew,
            )?,
            max_in_flight: positive(
                "pool.max_in_flight",
                p.max_in_flight,
                defaults.max_in_flight,
            )?,
            budget: budget(
                "pool.",
                p.max_requests_per_minute,
                p.max_tokens_per_minute,
                p.max_tokens_per_day,
            )?,
            usage_zone: match &p.usage_time_zone {
                Some(name) => crate::vocab::UsageZone::parse(name)
                    .map_err(|why| invalid("pool.usage_time_zone", &why))?,
                None => Default::default(),
            },
            strategy: match p.strategy.as_deref() {
                None => Strategy::default(),
                Some(name) => Strategy::parse(name).ok_or_else(|| {
                    one_of("pool.strategy", name, &Strategy::NAMES.map(String::from))
                })?,
            },
            affinity: affinity(p)?,
            tiers,
        };
        if pool.probe_interval.is_zero() {
            return Err(invalid("pool.probe_interval", "must be greater than zero"));
        }

        let gd = GatewaySettings::default();
        let g = &self.gateway;
        let gateway = GatewaySettings {
            max_body: match &g.max_body {
                Some(s) => size("gateway.max_body", s)?,
                None => gd.max_body,
            },
            route_headers: g.route_headers.unwrap_or(gd.route_headers),
            shutdown_grace: duration(
                "gateway.shutdown_grace",
                g.shutdown_grace.as_ref(),
                gd.shutdown_grace,
            )?,
            connect_timeout: duration(
                "gateway.connect_timeout",
                g.connect_timeout.as_ref(),
                gd.connect_timeout,
            )?,
            first_byte_timeout: duration(
                "gateway.first_byte_timeout",
                g.first_byte_timeout.as_ref(),
                gd.first_byte_timeout,
            )?,
            stream_idle_timeout: duration(
                "gateway.stream_idle_timeout",
                g.stream_idle_timeout.as_ref(),
                gd.stream_idle_timeout,
            )?,
            request_timeout: duration(
                "gateway.request_timeout",
                g.request_timeout.as_ref(),
                gd.request_timeout,
            )?,
            max_concurrency: positive(
                "gateway.max_concurrency",
                g.max_concurrency,
                gd.max_concurrency,
            )?,
            body_timeout: duration(
                "gateway.body_timeout",
                g.body_timeout.as_ref(),
                gd.body_timeout,
            )?,
            header_timeout: duration(
                "gateway.header_timeout",
                g.header_timeout.as_ref(),
                gd.header_timeout,
            )?,
            max_uri_bytes: match &g.max_uri_bytes {
                Some(s) => size("gateway.max_uri_bytes", s)?,
                None => gd.max_uri_bytes,
            },
            max_header_bytes: match &g.max_header_bytes {
                Some(s) => size("gateway.max_header_bytes", s)?,
                None => gd.max_header_bytes,
            },
        };
        for (key, d) in [
            ("gateway.connect_timeout", gateway.connect_timeout),
            ("gateway.first_byte_timeout", gateway.first_byte_timeout),
            ("gateway.stream_idle_timeout", gateway.stream_idle_timeout),
            ("gateway.request_timeout", gateway.request_timeout),
            ("gateway.body_timeout", gateway.body_timeout),
            ("gateway.header_timeout", gateway.header_timeout),
        ] {
            if d.is_zero() {
                return Err(invalid(key, "must be greater than zero"));
            }
        }

        if self.providers.is_empty() {
            return Err(invalid(
                "provider",
                "no [[provider]] is configured; add one with name, kind and base_url",
            ));
        }
        let mut providers = Vec::new();
        let mut names = HashSet::new();
        for (i, rp) in self.providers.iter().enumerate() {
            let at = |k: &str| format!("provider[{i}].{k}");
            let name = unique_name(&at("name"), rp.name.as_deref(), &mut names, "providers")?;
            let kind = match rp.kind.as_deref() {
                None => {
                    return Err(invalid(
                        at("kind"),
                        "is missing; use \"openai\", \"anthropic\" or \"gemini\"",
                    ));
                }
                Some("openai") => ProviderKind::OpenAi,
                Some("anthropic") => ProviderKind::Anthropic,
                Some("gemini") => ProviderKind::Gemini,
                Some(k) => {
                    return Err(invalid(
                        at("kind"),
                        format!("{k:?} is not one of openai, anthropic, gemini"),
                    ));
                }
            };
            let base_url = rp
                .base_url
                .clone()
                .or_else(|| kind.default_base_url().map(str::to_string))
                .ok_or_else(|| invalid(at("base_url"), "is missing"))?;
            match url::Url::parse(&base_url) {
                Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some() => {}
                _ => {
                    return Err(invalid(
                        at("base_url"),
                        format!("{base_url:?} is not an http(s) URL"),
                    ));
                }
            }
            let models = rp.models.clone().unwrap_or_else(|| vec!["*".into()]);
            if models.is_empty() || models.iter().any(|m| m.trim().is_empty()) {
                return Err(invalid(
                    at("models"),
                    "must list model names or globs such as \"*\"",
                ));
            }
            let base_url = base_url.trim_end_matches('/').to_string();
            let chat_path = match kind {
                ProviderKind::OpenAi => Some("chat/completions"),
                ProviderKind::Anthropic => Some("messages"),
                ProviderKind::Gemini => None,
            };
            let chat_url = match chat_path {
                Some(path) => {
                    let url = url::Url::parse(&format!("{base_url}/{path}")).map_err(|e| {
                        invalid(at("base_url"), format!("{base_url:?} is not a URL ({e})"))
                    })?;
                    Some(http::Uri::try_from(url.as_str()).map_err(|e| {
                        invalid(at("base_url"), format!("{base_url:?} is not a URL ({e})"))
                    })?)
                }
                None => None,
            };
            let responses = match (rp.responses.as_deref(), kind) {
                (None | Some("translate"), _) => ResponsesMode::Translate,
                (Some("native"), ProviderKind::OpenAi) => ResponsesMode::Native,
                (Some("native"), _) => {
                    return Err(invalid(
                        at("responses"),
                        format!(
                            "\"native\" applies to kind = \"openai\" only; a {} provider is \
                             reached through the translation",
                            kind.as_str()
                        ),
                    ));
                }
                (Some(other), _) => {
                    return Err(invalid(
                        at("responses"),
                        format!("{other:?} is not one of translate, native"),
                    ));
                }
            };
            providers.push(Provider {
                name,
                kind,
                base_url,
                models,
                chat_url,
                responses,
            });
        }

        if self.credentials.is_empty() {
            return Err(invalid(
                "credential",
                "no [[credential]] is configured; add at least one with name and api_key or refresh_token",
            ));
        }
        let mut credentials = Vec::new();
        let mut names = HashSet::new();
        for (i, rc) in self.credentials.iter().enumerate() {
            let at = |k: &str| format!("credential[{i}].{k}");
            let name = unique_name(&at("name"), rc.name.as_deref(), &mut names, "credentials")?;
            let provider = match rc.provider.as_deref() {
                None if providers.len() == 1 => 0,
                None => {
                    return Err(invalid(
                        at("provider"),
                        "is missing (required when more than one provider is configured)",
                    ));
                }
                Some(p) => providers.iter().position(|x| x.name == p).ok_or_else(|| {
                    let all: Vec<String> = providers.iter().map(|x| x.name.clone()).collect();
                    one_of(&at("provider"), p, &all)
                })?,
            };
            let tier = match rc.tier.as_deref() {
                None => 0,
                Some(t) => pool
                    .tiers
                    .iter()
                    .position(|x| x == t)
                    .ok_or_else(|| one_of(&at("tier"), t, &pool.tiers))?,
            };
            let auth = match (&rc.api_key, &rc.refresh_token) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        at("api_key"),
                        "and refresh_token are both set; a credential has one or the other",
                    ));
                }
                (None, None) => {
                    return Err(invalid(
                        at("api_key"),
                        "is missing; set api_key, or refresh_token with token_url",
                    ));
                }
                (Some(k), None) => {
                    for (key, set) in [
                        ("token_url", rc.token_url.is_some()),
                        ("client_id", rc.client_id.is_some()),
                        ("client_secret", rc.client_secret.is_some()),
                    ] {
                        if set {
                            return Err(invalid(at(key), "only applies with refresh_token"));
                        }
                    }
                    AuthSpec::ApiKey(r.secret(&at("api_key"), k)?)
                }
                (None, Some(rt)) => {
                    let token_url = rc.token_url.clone().ok_or_else(|| {
                        invalid(at("token_url"), "is missing (required with refresh_token)")
                    })?;
                    match url::Url::parse(&token_url) {
                        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
                        _ => {
                            return Err(invalid(
                                at("token_url"),
                                format!("{token_url:?} is not an http(s) URL"),
                            ));
                        }
                    }
                    if rc.client_secret.is_some() && rc.client_id.is_none() {
                        return Err(invalid(at("client_secret"), "needs client_id"));
                    }
                    AuthSpec::Refresh {
                        refresh_token: r.secret(&at("refresh_token"), rt)?,
                        token_url,
                        client_id: rc.client_id.clone(),
                        client_secret: rc
                            .client_secret
                            .as_deref()
                            .map(|s| r.secret(&at("client_secret"), s))
                            .transpose()?,
                    }
                }
            };
            let own = budget(
                &at(""),
                rc.max_requests_per_minute,
                rc.max_tokens_per_minute,
                rc.max_tokens_per_day,
            )?;
            credentials.push(CredentialSpec {
                name,
                provider,
                tier,
                auth,
                budget: own.or(pool.budget),
            });
        }

        let names: Vec<String> = providers.iter().map(|p| p.name.clone()).collect();
        let error_policy = self
            .error_policy
            .iter()
            .enumerate()
            .map(|(i, r)| r.resolve(i, &names))
            .collect::<Result<Vec<_>, _>>()?;

        let config = Config {
            source: source.to_string(),
            listen,
            client_keys,
            admin_key,
            state_file,
            shared,
            pool,
            gateway,
            providers,
            credentials,
            error_policy,
            secret_files: r.files.into_inner(),
        };
        config.check_exposure()?;
        Ok(config)
    }
}

/// The `[pool] affinity*` keys.
fn affinity(p: &RawPool) -> Result<crate::config::Affinity, ConfigError> {
    let d = crate::config::Affinity::default();
    let ttl = duration("pool.affinity_ttl", p.affinity_ttl.as_ref(), d.ttl)?;
    if ttl.is_zero() {
        return Err(invalid(
            "pool.affinity_ttl",
            "must be greater than zero (turn affinity off with affinity = false)",
        ));
    }
    let header = match &p.affinity_header {
        None => None,
        Some(h) => Some(
            h.trim()
                .to_ascii_lowercase()
                .parse::<http::HeaderName>()
                .map_err(|_| {
                    invalid(
                        "pool.affinity_header",
                        format!("{h:?} is not a header name; write e.g. \"x-session-id\""),
                    )
                })?,
        ),
    };
    let fallback_prompt = match p.affinity_fallback.as_deref().map(str::trim) {
        None | Some("none") => false,
        Some("prompt") => true,
        Some(other) => {
            return Err(invalid(
                "pool.affinity_fallback",
                format!("{other:?} is not a fallback; write \"none\" or \"prompt\""),
            ));
        }
    };
    Ok(crate::config::Affinity {
        enabled: p.affinity.unwrap_or(d.enabled),
        ttl,
        max_sessions: positive(
            "pool.affinity_max_sessions",
            p.affinity_max_sessions,
            d.max_sessions as u32,
        )? as usize,
        header,
        fallback_prompt,
    })
}
