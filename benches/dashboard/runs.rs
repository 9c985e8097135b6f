//! One run end to end: a fresh sim, a gateway in the chosen mode, a sanity
//! request, warm-up, the measured window between two samples.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokenyard::sim::{self, Limit, SimAccount, SimConfig, SimHandle};

use crate::gateway::Gateway;
use crate::load::{Load, MEASURE, STOP, client_loop, percentile};
use crate::procfs::{Sample, Threads, has_thread, threads_delta};
use crate::report::Run;
use crate::{BODY, KEYS, Mode, Settings};

/// What every run shares.
pub struct Bench {
    pub s: Settings,
    /// The sim and the load generator run on runtimes of their own, so
    /// their CPU can be told apart by thread name.
    pub sim_rt: tokio::runtime::Runtime,
    pub load_rt: tokio::runtime::Runtime,
    /// Configs and state files of the gateways.
    pub dir: tempfile::TempDir,
    /// Units of utime and stime in /proc.
    pub clk_tck: f64,
}

impl Bench {
    /// Run `n`: a fresh sim and gateway, warm-up, `secs` measured.
    pub fn run(&self, n: usize, mode: Mode, pace: Option<f64>, secs: f64) -> Run {
        let Bench {
            s,
            sim_rt,
            load_rt,
            dir,
            clk_tck,
        } = self;
        let (dir, clk_tck) = (dir.path(), *clk_tck);
        // A fresh sim per run: it logs every request and the log only grows.
        let sim = sim_rt
            .block_on(sim::start(sim_config(), "127.0.0.1:0".parse().unwrap()))
            .expect("the sim starts");
        let config = dir.join(format!("run-{n}.toml"));
        std::fs::write(
            &config,
            config_toml(&sim, &dir.join(format!("state-{n}.json"))),
        )
        .expect("write the config");
        let gw = Gateway::start(mode, &config, dir);
        let show_screen = std::env::var_os("BENCH_SCREEN").is_some();
        let url = format!("http://{}/v1/chat/completions", gw.addr);
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(s.conns)
            .tcp_nodelay(true)
            .build()
            .expect("a reqwest client");
        load_rt.block_on(sanity_check(&client, &url, &gw));

        let load = Arc::new(Load::default());
        // Paced: each connection sends one request per period, the connections
        // spread evenly over it.
        let period = pace.map(|rate| Duration::from_secs_f64(s.conns as f64 / rate));
        let tasks: Vec<_> = (0..s.conns)
            .map(|i| {
                let ticks = period.map(|p| (p.mul_f64(i as f64 / s.conns as f64), p));
                load_rt.spawn(client_loop(
                    client.clone(),
                    url.clone(),
                    load.clone(),
                    ticks,
                ))
            })
            .collect();
        std::thread::sleep(Duration::from_secs_f64(s.warmup));

        let before = Sample::take(&gw, &load);
        load.phase.store(MEASURE, Ordering::SeqCst);
        std::thread::sleep(Duration::from_secs_f64(secs));
        let after = Sample::take(&gw, &load);
        load.phase.store(STOP, Ordering::SeqCst);
        if let Some(pty) = gw.pty.as_ref().filter(|_| show_screen) {
            println!("the dashboard at the end of run {n}:");
            println!("{}", pty.screen.lock().unwrap().screen().contents());
        }

        let mut latencies: Vec<u32> = load_rt.block_on(async {
            let mut all = Vec::new();
            for t in tasks {
                match tokio::time::timeout(Duration::from_secs(10), t).await {
                    Ok(Ok(l)) => all.extend(l),
                    _ => panic!("a load task did not stop"),
                }
            }
            all
        });
        drop(gw);
        sim_rt.block_on(sim.shutdown());

        latencies.sort_unstable();
        let wall = after.at.duration_since(before.at).as_secs_f64();
        let ok = after.ok - before.ok;
        let pct = |ticks: u64| ticks as f64 / clk_tck / wall * 100.0;
        let gw_ticks = after.gateway - before.gateway;
        let dashboard = mode == Mode::Dashboard;
        let named = |list: fn(&Sample) -> &Threads, prefix: &str| {
            pct(threads_delta(list(&before), list(&after), prefix))
        };
        Run {
            mode,
            rps: ok as f64 / wall,
            errors: after.errors - before.errors,
            p50_ms: percentile(&latencies, 0.50),
            p99_ms: percentile(&latencies, 0.99),
            gateway_cpu: pct(gw_ticks),
            gateway_us_per_req: gw_ticks as f64 / clk_tck * 1e6 / ok.max(1) as f64,
            tui_cpu: dashboard.then(|| named(|s| &s.gateway_threads, "tokenyard-tui")),
            logger_cpu: (dashboard && has_thread(&after.gateway_threads, "tui-logger"))
                .then(|| named(|s| &s.gateway_threads, "tui-logger")),
            frames_per_s: dashboard.then(|| (after.frames - before.frames) as f64 / wall),
            pty_kib_per_s: dashboard.then(|| (after.bytes - before.bytes) as f64 / 1024.0 / wall),
            load_cpu: named(|s| &s.own_threads, "bench-load"),
            sim_cpu: named(|s| &s.own_threads, "bench-sim"),
            pty_reader_cpu: dashboard.then(|| named(|s| &s.own_threads, "bench-pty")),
        }
    }
}

fn sim_config() -> SimConfig {
    SimConfig {
        accounts: (1..=KEYS)
            .map(|i| {
                SimAccount::api_key(
                    format!("bench-{i}"),
                    format!("sk-fake-bench-{i}"),
                    Limit::Unlimited,
                )
            })
            .collect(),
        chunks: 1,
        chunk_interval: Duration::ZERO,
        latency: Duration::ZERO,
        ..SimConfig::default()
    }
}

/// The gateway's config: the sim as its one provider, state in the
/// temporary directory (never the user's own state file).
fn config_toml(sim: &SimHandle, state: &Path) -> String {
    let mut t = format!(
        "listen = \"127.0.0.1:0\"\nstate_file = {:?}\n\n[pool]\ntiers = [\"primary\"]\n\n\
         [[provider]]\nname = \"sim\"\nkind = \"openai\"\nbase_url = \"{}\"\nmodels = [\"sim-*\"]\n",
        state.display().to_string(),
        sim.base_url()
    );
    for i in 1..=KEYS {
        t.push_str(&format!(
            "\n[[credential]]\nname = \"bench-{i}\"\ntier = \"primary\"\napi_key = \"sk-fake-bench-{i}\"\n"
        ));
    }
    t
}

/// One request must succeed before any is counted: a bench that measures
/// how fast the gateway says "no" would be worse than none.
async fn sanity_check(client: &reqwest::Client, url: &str, gw: &Gateway) {
    let resp = client
        .post(url)
        .header("content-type", "application/json")
        .body(BODY)
        .send()
        .await
        .unwrap_or_else(|e| panic!("the gateway does not answer: {e}\n{}", gw.output()));
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    assert!(
        status == 200 && body.contains("choices"),
        "the gateway answered {status}: {body}"
    );
}
