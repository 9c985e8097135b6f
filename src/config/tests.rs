use std::path::Path;

use super::*;

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(
        text,
        "test.toml",
        Path::new("/nonexistent"),
        &env(&[("KEY_A", "sk-fake-config-key-1111")]),
    )
}

fn err(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

const MINIMAL: &str = r#"
[[provider]]
name = "openai"
kind = "openai"
base_url = "https://api.openai.com/v1/"

[[credential]]
name = "team-a"
api_key = "env:KEY_A"
"#;

#[test]
fn minimal_config_gets_defaults() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(c.pool.tiers, ["default"]);
    assert_eq!(c.pool.default_cooldown, Duration::from_secs(60));
    assert_eq!(c.pool.quota_cooldown, Duration::from_secs(3600));
    assert_eq!(c.pool.max_attempts, 8);
    assert_eq!(c.pool.max_wait, Duration::ZERO);
    assert_eq!(c.gateway.max_body, 32 * 1024 * 1024);
    assert!(c.gateway.route_headers);
    assert_eq!(c.providers[0].base_url, "https://api.openai.com/v1");
    assert_eq!(c.providers[0].models, ["*"]);
    let cred = &c.credentials[0];
    assert_eq!((cred.provider, cred.tier), (0, 0));
    match &cred.auth {
        AuthSpec::ApiKey(k) => assert_eq!(k.expose(), "sk-fake-config-key-1111"),
        other => panic!("{other:?}"),
    }
    // Debug output of the whole config never shows the key.
    assert!(!format!("{c:?}").contains("sk-fake-config-key-1111"));
}

#[test]
fn the_documented_example_parses() {
    let dir = tempfile::tempdir().unwrap();
    let rt = dir.path().join("rt1");
    std::fs::write(&rt, "rt-secret-value\n").unwrap();
    let text = format!(
        r#"
listen = "127.0.0.1:8787"
client_keys = ["env:CLIENT"]
admin_key = "env:ADMIN"
state_file = "state.json"

[pool]
tiers = ["primary", "backup", "fallback"]
default_cooldown = "60s"
quota_cooldown = "1h"
max_failures = 3
probe_interval = "30s"
max_attempts = 8
max_wait = "0s"

[gateway]
max_body = "1MiB"
route_headers = false
shutdown_grace = "5s"

[[provider]]
name = "openai"
kind = "openai"
base_url = "https://api.openai.com/v1"
models = ["gpt-*", "o3"]

[[credential]]
name = "team-a"
provider = "openai"
tier = "primary"
api_key = "env:OPENAI_KEY_A"

[[credential]]
name = "oauth-1"
provider = "openai"
tier = "backup"
refresh_token = "file:{}"
token_url = "https://auth.example.com/oauth/token"
client_id = "my-client"
client_secret = "literal-client-secret"
"#,
        rt.display()
    );
    let c = Config::parse(
        &text,
        "example.toml",
        dir.path(),
        &env(&[
            ("CLIENT", "ck-1"),
            ("ADMIN", "ak-1"),
            ("OPENAI_KEY_A", "sk-a"),
        ]),
    )
    .unwrap();
    assert_eq!(c.client_keys.len(), 1);
    assert!(c.admin_key.is_some());
    assert_eq!(
        c.state_file.as_deref(),
        Some(dir.path().join("state.json").as_path())
    );
    assert_eq!(c.gateway.max_body, 1024 * 1024);
    assert!(!c.gateway.route_headers);
    assert_eq!(c.credentials[1].tier, 1);
    match &c.credentials[1].auth {
        AuthSpec::Refresh {
            refresh_token,
            client_id,
            client_secret,
            token_url,
        } => {
            assert_eq!(
                refresh_token.expose(),
                "rt-secret-value",
                "trailing newline trimmed"
            );
            assert_eq!(client_id.as_deref(), Some("my-client"));
            assert_eq!(
                client_secret.as_ref().unwrap().expose(),
                "literal-client-secret"
            );
            assert_eq!(token_url, "https://auth.example.com/oauth/token");
        }
        other => panic!("{other:?}"),
    }
    assert!(c.providers[0].serves("gpt-4o-mini"));
    assert!(c.providers[0].serves("o3"));
    assert!(!c.providers[0].serves("o3-mini"));
    assert_eq!(c.route("claude"), None);
}

#[test]
fn errors_name_the_key_path() {
    let bad_tier = format!(
        "[pool]\ntiers = [\"primary\", \"backup\", \"fallback\"]\n{MINIMAL}\n[[credential]]\nname = \"b\"\napi_key = \"x\"\n[[credential]]\nname = \"c\"\napi_key = \"y\"\ntier = \"bakup\"\n"
    );
    assert_eq!(
        err(&bad_tier),
        r#"credential[2].tier: "bakup" is not one of primary, backup, fallback"#
    );
    assert_eq!(
        err(&MINIMAL.replace("env:KEY_A", "env:NOPE")),
        "credential[0].api_key: environment variable NOPE is not set"
    );
    assert!(
        err(&MINIMAL.replace("kind = \"openai\"", "kind = \"opanai\""))
            .starts_with("provider[0].kind: \"opanai\" is not one of")
    );
    assert!(
        err(&format!("[pool]\ndefault_cooldown = \"soon\"\n{MINIMAL}"))
            .starts_with("pool.default_cooldown: \"soon\" is not a duration")
    );
    assert!(
        err(&format!("[pool]\nmax_attempts = 0\n{MINIMAL}"))
            .starts_with("pool.max_attempts: 0 must be")
    );
    assert!(
        err(&MINIMAL.replace("https://api.openai.com/v1/", "ftp://x"))
            .starts_with("provider[0].base_url")
    );
    assert!(err(&MINIMAL.replace("team-a", "../etc")).starts_with("credential[0].name"));
    assert!(
        err(&format!(
            "{MINIMAL}\n[[credential]]\nname = \"team-a\"\napi_key = \"z\"\n"
        ))
        .contains("used by two credentials")
    );
    assert!(
        err(&format!(
            "{MINIMAL}\n[[credential]]\nname = \"x\"\nrefresh_token = \"rt\"\n"
        ))
        .starts_with("credential[1].token_url: is missing")
    );
    assert!(
        err(&format!("{MINIMAL}\n[[credential]]\nname = \"x\"\n"))
            .starts_with("credential[1].api_key: is missing")
    );
    assert!(
        err(&format!(
            "{MINIMAL}\n[[credential]]\nname = \"x\"\napi_key = \"a\"\nprovider = \"nope\"\n"
        ))
        .starts_with("credential[1].provider: \"nope\" is not one of openai")
    );
    assert!(
        err(&format!("[gateway]\nmax_body = \"12 parsecs\"\n{MINIMAL}"))
            .starts_with("gateway.max_body")
    );
    assert!(
        err(&format!(
            "{MINIMAL}\n[[credential]]\nname = \"x\"\napi_key = \"\"\n"
        ))
        .starts_with("credential[1].api_key: is empty")
    );
}

#[test]
fn unknown_keys_are_errors_not_silence() {
    let e = err(&format!("[pool]\nmax_atempts = 3\n{MINIMAL}"));
    assert!(e.contains("max_atempts"), "{e}");
    assert!(e.starts_with("test.toml:"), "{e}");
}

#[test]
fn non_loopback_listen_needs_client_keys() {
    let e = err(&format!("listen = \"0.0.0.0:8787\"\n{MINIMAL}"));
    assert!(
        e.starts_with("listen: 0.0.0.0:8787 is not a loopback address"),
        "{e}"
    );
    let ok = parse(&format!(
        "listen = \"0.0.0.0:8787\"\nclient_keys = [\"ck-123\"]\n{MINIMAL}"
    ));
    assert!(ok.is_ok());
}

#[test]
fn missing_sections_are_explained() {
    assert!(err("").starts_with("provider: no [[provider]] is configured"));
    let only_provider =
        "[[provider]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:1/v1\"\n";
    assert!(err(only_provider).starts_with("credential: no [[credential]]"));
}

#[test]
fn quick_start_from_environment() {
    let e = env(&[
        ("TOKENYARD_UPSTREAM", "http://127.0.0.1:9/v1"),
        ("TOKENYARD_KEYS", "k1, k2,k3"),
    ]);
    let c = Config::from_env(&e).unwrap().unwrap();
    let names: Vec<_> = c.credentials.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["key-1", "key-2", "key-3"]);
    assert_eq!(c.providers.len(), 1);
    assert!(c.providers[0].serves("anything-at-all"));
    assert_eq!(c.source, "environment");
    assert!(Config::from_env(&env(&[])).is_none());
    let e = env(&[("TOKENYARD_UPSTREAM", "http://127.0.0.1:9/v1")]);
    assert!(
        Config::from_env(&e)
            .unwrap()
            .unwrap_err()
            .to_string()
            .starts_with("TOKENYARD_KEYS")
    );
}

#[test]
fn globs() {
    assert!(glob_match("*", "gpt-4o"));
    assert!(glob_match("gpt-*", "gpt-4o"));
    assert!(!glob_match("gpt-*", "o3"));
    assert!(glob_match("gpt-?o", "gpt-4o"));
    assert!(glob_match("*-mini", "o4-mini"));
    assert!(glob_match("a*b*c", "aXXbYYc"));
    assert!(!glob_match("a*b*c", "aXXbYY"));
    assert!(glob_match("exact", "exact"));
    assert!(!glob_match("exact", "exactly"));
    // `?` and a star's retries step over whole characters.
    assert!(glob_match("a?c", "aéc"));
    assert!(glob_match("模型-?", "模型-é"));
    assert!(!glob_match("*é", "xê"));
    assert!(glob_match("*é*", "xêé-1"));
    assert!(glob_match("?", "🙂"));
    assert!(!glob_match("??", "🙂"));
}

#[test]
fn the_shipped_example_config_is_valid() {
    let text = include_str!("../../assets/tokenyard.example.toml")
        .replace("file:/run/secrets/rt1", "rt-example-refresh-token");
    let c = Config::parse(
        &text,
        "assets/tokenyard.example.toml",
        Path::new("."),
        &env(&[
            ("OPENAI_KEY_A", "sk-a-123"),
            ("OPENAI_KEY_B", "sk-b-456"),
            ("ANTHROPIC_KEY_A", "sk-ant-789"),
            ("GEMINI_KEY_A", "gm-012"),
        ]),
    )
    .unwrap();
    assert_eq!(c.credentials.len(), 5);
    assert_eq!(c.pool.tiers, ["primary", "backup", "fallback"]);
    let kinds: Vec<_> = c.providers.iter().map(|p| p.kind.as_str()).collect();
    assert_eq!(kinds, ["anthropic", "gemini", "openai"]);
    // claude-* and gemini-* go to their own kinds; the rest to OpenAI.
    assert_eq!(c.route("claude-sonnet-4"), Some(0));
    assert_eq!(c.route("gemini-2.5-flash"), Some(1));
    assert_eq!(c.route("gpt-4o"), Some(2));
}

#[test]
fn limits_have_defaults_and_refuse_nonsense() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.pool.max_in_flight, 256);
    assert_eq!(c.gateway.max_concurrency, 10_000);
    assert_eq!(c.gateway.request_timeout, Duration::from_secs(600));
    assert_eq!(c.gateway.max_uri_bytes, 8 * 1024);
    assert_eq!(c.gateway.max_header_bytes, 64 * 1024);
    assert_eq!(c.gateway.header_timeout, Duration::from_secs(30));
    let c = parse(&format!(
        "[pool]\nmax_in_flight = 4\n[gateway]\nmax_concurrency = 100\nrequest_timeout = \"90s\"\nmax_header_bytes = \"16KiB\"\nheader_timeout = \"75s\"\n{MINIMAL}"
    ))
    .unwrap();
    assert_eq!(c.gateway.header_timeout, Duration::from_secs(75));
    assert_eq!(c.pool.max_in_flight, 4);
    assert_eq!(c.gateway.max_concurrency, 100);
    assert_eq!(c.gateway.request_timeout, Duration::from_secs(90));
    assert_eq!(c.gateway.max_header_bytes, 16 * 1024);
    assert!(
        err(&format!("[pool]\nmax_in_flight = 0\n{MINIMAL}")).starts_with("pool.max_in_flight:")
    );
    assert!(
        err(&format!("[gateway]\nrequest_timeout = \"0s\"\n{MINIMAL}"))
            .starts_with("gateway.request_timeout: must be greater than zero")
    );
    assert!(
        err(&format!("[gateway]\nheader_timeout = \"0s\"\n{MINIMAL}"))
            .starts_with("gateway.header_timeout: must be greater than zero")
    );
    assert!(
        err(&format!("[gateway]\nmax_concurrency = -3\n{MINIMAL}"))
            .starts_with("gateway.max_concurrency:")
    );
}

#[test]
fn provider_kinds_and_their_default_urls() {
    let c = parse(&format!(
        "{}\n[[provider]]\nname = \"claude\"\nkind = \"anthropic\"\n\n[[provider]]\nname = \"gem\"\nkind = \"gemini\"\n",
        MINIMAL.replace("api_key = \"env:KEY_A\"", "api_key = \"env:KEY_A\"\nprovider = \"openai\"")
    ))
    .unwrap();
    assert_eq!(c.providers[1].base_url, "https://api.anthropic.com/v1");
    assert_eq!(
        c.providers[2].base_url,
        "https://generativelanguage.googleapis.com"
    );
    assert!(
        err(&MINIMAL.replace("base_url = \"https://api.openai.com/v1/\"\n", ""))
            .starts_with("provider[0].base_url: is missing")
    );
}

#[test]
fn redis_state_backend_is_parsed_and_checked() {
    let c = parse(&format!(
        "[state]\nbackend = \"redis\"\nurl = \"rediss://cache.internal:6380/2\"\npassword = \"env:KEY_A\"\nnamespace = \"blue\"\n{MINIMAL}"
    ))
    .unwrap();
    let shared = c.shared.expect("redis backend");
    assert_eq!(shared.url, "rediss://cache.internal:6380/2");
    assert_eq!(shared.namespace, "blue");
    assert!(!format!("{shared:?}").contains("sk-fake-config-key-1111"));
    assert!(parse(MINIMAL).unwrap().shared.is_none());
    let file = parse(&format!("[state]\nbackend = \"file\"\n{MINIMAL}")).unwrap();
    assert!(file.shared.is_none());

    for (state, want) in [
        ("backend = \"redis\"", "state.url: is required"),
        (
            "backend = \"etcd\"",
            "state.backend: \"etcd\" is not a backend",
        ),
        (
            "backend = \"redis\"\nurl = \"http://x\"",
            "must start with redis://",
        ),
        (
            "backend = \"redis\"\nurl = \"redis://:hunter2@x\"",
            "must not hold a password",
        ),
        ("url = \"redis://x\"", "only applies to backend = \"redis\""),
        (
            "backend = \"redis\"\nurl = \"redis://x\"\nnamespace = \"\"",
            "state.namespace",
        ),
        (
            "backend = \"redis\"\nurl = \"redis://x\"\nnamespace = \"a{b}\"",
            "state.namespace",
        ),
    ] {
        let e = err(&format!("[state]\n{state}\n{MINIMAL}"));
        assert!(e.contains(want), "{state}: {e}");
        assert!(!e.contains("hunter2"), "{e}");
    }
}

#[test]
fn responses_mode_is_per_openai_provider() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.providers[0].responses, ResponsesMode::Translate);
    let native = MINIMAL.replace(
        "kind = \"openai\"",
        "kind = \"openai\"\nresponses = \"native\"",
    );
    assert_eq!(
        parse(&native).unwrap().providers[0].responses,
        ResponsesMode::Native
    );
    let e = err(&MINIMAL.replace(
        "kind = \"openai\"",
        "kind = \"openai\"\nresponses = \"yes\"",
    ));
    assert!(
        e.contains("provider[0].responses") && e.contains("translate, native"),
        "{e}"
    );
    let e = err(&MINIMAL.replace(
        "kind = \"openai\"",
        "kind = \"anthropic\"\nresponses = \"native\"",
    ));
    assert!(
        e.contains("provider[0].responses") && e.contains("kind = \"openai\" only"),
        "{e}"
    );
}

#[test]
fn strategy_defaults_to_round_robin_and_names_the_key_when_wrong() {
    assert_eq!(parse(MINIMAL).unwrap().pool.strategy, Strategy::RoundRobin);
    for (name, want) in [
        ("round_robin", Strategy::RoundRobin),
        ("least_used", Strategy::LeastUsed),
        ("soonest_reset", Strategy::SoonestReset),
    ] {
        let c = parse(&format!("[pool]\nstrategy = \"{name}\"\n{MINIMAL}")).unwrap();
        assert_eq!(c.pool.strategy, want);
        assert_eq!(want.as_str(), name);
    }
    let e = err(&format!("[pool]\nstrategy = \"fastest\"\n{MINIMAL}"));
    assert!(
        e.starts_with(
            "pool.strategy: \"fastest\" is not one of round_robin, least_used, soonest_reset"
        ),
        "{e}"
    );
}

#[test]
fn affinity_keys_have_defaults_and_refuse_nonsense() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.pool.affinity, Affinity::default());
    assert!(c.pool.affinity.enabled);
    assert_eq!(c.pool.affinity.ttl, Duration::from_secs(3600));
    assert_eq!(c.pool.affinity.max_sessions, 10_000);
    let c = parse(&format!(
        "[pool]\naffinity = false\naffinity_ttl = \"10m\"\naffinity_max_sessions = 50\n\
         affinity_header = \"X-My-Session\"\naffinity_fallback = \"prompt\"\n{MINIMAL}"
    ))
    .unwrap();
    let a = &c.pool.affinity;
    assert!(!a.enabled && a.fallback_prompt);
    assert_eq!(a.ttl, Duration::from_secs(600));
    assert_eq!(a.max_sessions, 50);
    assert_eq!(a.header.as_ref().map(|h| h.as_str()), Some("x-my-session"));
    for (line, key) in [
        ("affinity_ttl = \"0s\"", "pool.affinity_ttl:"),
        ("affinity_max_sessions = 0", "pool.affinity_max_sessions:"),
        ("affinity_header = \"bad header\"", "pool.affinity_header:"),
        ("affinity_fallback = \"body\"", "pool.affinity_fallback:"),
    ] {
        let e = err(&format!("[pool]\n{line}\n{MINIMAL}"));
        assert!(e.starts_with(key), "{e}");
    }
}
