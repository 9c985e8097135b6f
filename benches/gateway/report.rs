//! Runs the workloads in order and prints raw numbers, then the verdicts.

use std::sync::Arc;
use std::time::Duration;

use super::Peer;
use super::client::{Sample, Target};
use super::procs;
use super::stats::{median, p50_p99, verdict};
use super::workloads::{self, Bench, Failover, Flat, Level, StreamStats};

/// Targets of the issue (ms unless said otherwise).
const ADDED_P50: f64 = 0.15;
const ADDED_P99: f64 = 0.5;
const TTFB_P99: f64 = 1.0;
const KIB_PER_STREAM: f64 = 32.0;
const FAILOVER_SLACK: f64 = 0.2;
const COLD_MS: f64 = 100.0;
const UPSTREAM_MARGIN: f64 = 5.0;

fn tokenyard_target(gw: &procs::Gateway) -> Arc<Target> {
    Arc::new(Target::new("tokenyard", &format!("http://{}/v1", gw.addr)))
}

/// One line of the verdicts: what, the number, the target, met or not.
type Verdict = (&'static str, String, String, bool);

/// Default mode: the five workloads (those in `BENCH_ONLY`), tokenyard
/// against direct.
pub fn all(b: &Bench) {
    println!(
        "== upstream: which one is faster (direct, {} connections, 2 s each)",
        b.s.conns
    );
    let choice = workloads::choose_upstream(b);
    for (label, rps, us) in &choice {
        println!("  {label:<26} {rps:>9.0} req/s   {us:>6.1} µs upstream CPU per request");
    }
    println!("  using: the hand-written HTTP/1.1 server\n");

    let gw = b.tokenyard();
    let ty = tokenyard_target(&gw);
    let direct = b.direct();
    let mut verdicts: Vec<Verdict> = Vec::new();
    let mut rtt = None;
    if b.s.runs(1) {
        let (v, d50) = added_latency(b, &direct, &ty);
        verdicts.extend(v);
        rtt = Some(d50);
    }
    if b.s.runs(2) {
        verdicts.extend(throughput(b, &direct, &ty, &gw));
    }
    if b.s.runs(3) {
        verdicts.extend(streaming(b, &direct, &ty, &gw));
    }
    if b.s.runs(4) {
        let rtt = rtt.unwrap_or_else(|| {
            let seq = workloads::sequential(b, std::slice::from_ref(&direct));
            p50_p99(&seq[0].ok).0
        });
        println!(
            "== 4. 429 failover: {} requests one at a time; key 3 answers 429 (retry-after: 0) to 3 of 5 it gets",
            b.s.failover
        );
        let fo = workloads::failover(b, &ty, 10_000_000);
        print_failover(&fo, rtt);
        println!(
            "  per key at the upstream so far: {:?}\n",
            b.seen.requests()
        );
        let (a50, a99) = fo.added();
        verdicts.push((
            "failover success",
            format!("{:.2} %", fo.ok as f64 / fo.n as f64 * 100.0),
            "100 %".into(),
            fo.ok == fo.n,
        ));
        verdicts.push((
            "failover added latency p50 / p99",
            format!("{a50:.3} / {a99:.3} ms"),
            format!(
                "≤ {:.3} ms (RTT {rtt:.3} + {FAILOVER_SLACK})",
                rtt + FAILOVER_SLACK
            ),
            a99 <= rtt + FAILOVER_SLACK,
        ));
    }
    drop(gw);
    if b.s.runs(5) {
        verdicts.push(cold_start(b));
    }

    println!("== verdicts");
    for (what, got, target, pass) in verdicts {
        println!(
            "  {:<4} {what:<40} {got:<26} target {target}",
            verdict(pass)
        );
    }
}

/// Workload 1; returns the verdicts and direct's p50 (one upstream round
/// trip).
fn added_latency(b: &Bench, direct: &Arc<Target>, ty: &Arc<Target>) -> (Vec<Verdict>, f64) {
    println!(
        "== 1. added latency, one request at a time ({} each, alternating per request)",
        b.s.seq
    );
    let seq = workloads::sequential(b, &[direct.clone(), ty.clone()]);
    let (d50, d99) = print_seq("direct", &seq[0]);
    let (t50, t99) = print_seq("tokenyard", &seq[1]);
    let (add50, add99) = (t50 - d50, t99 - d99);
    println!("  added       p50 {add50:>7.3} ms   p99 {add99:>7.3} ms\n");
    let v = vec![
        (
            "added latency p50",
            format!("{add50:.3} ms"),
            format!("≤ {ADDED_P50} ms"),
            add50 <= ADDED_P50,
        ),
        (
            "added latency p99",
            format!("{add99:.3} ms"),
            format!("≤ {ADDED_P99} ms"),
            add99 <= ADDED_P99,
        ),
    ];
    (v, d50)
}

/// Workload 2, with the upstream's evidence of not being the bottleneck.
fn throughput(
    b: &Bench,
    direct: &Arc<Target>,
    ty: &Arc<Target>,
    gw: &procs::Gateway,
) -> Vec<Verdict> {
    println!(
        "== 2. throughput, {} keep-alive connections, {} s measured after {} s warm-up, {} rounds ABBA",
        b.s.conns, b.s.secs, b.s.warmup, b.s.rounds
    );
    println!("  {}", Flat::HEADER);
    let mut flats: Vec<Flat> = Vec::new();
    for round in 0..b.s.rounds {
        let order = if round % 2 == 0 {
            [ty, direct]
        } else {
            [direct, ty]
        };
        for t in order {
            let rss = || (t.name == "tokenyard").then(|| gw.rss_kib());
            let pid = (t.name == "tokenyard").then_some(gw.pid);
            let f = workloads::flat_out(b, t, (b.s.warmup, b.s.secs), &rss, pid);
            println!("  {}", f.row());
            flats.push(f);
        }
    }
    let med = |name: &str, f: fn(&Flat) -> f64| {
        median(flats.iter().filter(|x| x.name == name).map(f).collect())
    };
    let (ty_rps, direct_rps) = (med("tokenyard", |f| f.rps), med("direct", |f| f.rps));
    // The upstream's capacity: its CPU per request when driven flat out
    // (the direct runs); and how busy it actually was behind tokenyard.
    let up_us = med("direct", |f| f.upstream_us);
    let capacity = 1e6 / up_us;
    let busy = med("tokenyard", |f| f.upstream_us * f.rps / 1e4);
    println!(
        "  medians: tokenyard {ty_rps:.0} req/s (p50 {:.2} ms, p99 {:.2} ms), direct {direct_rps:.0} req/s (p50 {:.2} ms, p99 {:.2} ms)",
        med("tokenyard", |f| f.p50),
        med("tokenyard", |f| f.p99),
        med("direct", |f| f.p50),
        med("direct", |f| f.p99)
    );
    println!(
        "  upstream: {up_us:.1} µs CPU per request flat out → {capacity:.0} req/s on one core = {:.1}× tokenyard's throughput (needs ≥ {UPSTREAM_MARGIN}×) {}",
        capacity / ty_rps,
        verdict(capacity / ty_rps >= UPSTREAM_MARGIN)
    );
    println!(
        "  behind tokenyard the upstream used {busy:.0} % of its core (less batching per wake-up costs it more per request)\n"
    );
    vec![
        (
            "throughput at 64 conns (share of direct)",
            format!("{ty_rps:.0} req/s ({:.0} %)", ty_rps / direct_rps * 100.0),
            "vs peers: benches/peers.sh".into(),
            true,
        ),
        (
            "upstream ≥ 5× the gateway",
            format!("{:.1}×", capacity / ty_rps),
            format!("≥ {UPSTREAM_MARGIN}×"),
            capacity / ty_rps >= UPSTREAM_MARGIN,
        ),
    ]
}

/// Workload 3: low-concurrency streams, then rising concurrency.
fn streaming(
    b: &Bench,
    direct: &Arc<Target>,
    ty: &Arc<Target>,
    gw: &procs::Gateway,
) -> Vec<Verdict> {
    println!(
        "== 3a. streams: {} of 1 role + 64 content chunks at 20 ms, {} at a time, 2 runs each ABBA",
        b.s.streams, b.s.stream_conc
    );
    let mut st: [StreamStats; 2] = Default::default();
    for order in [[0usize, 1], [1, 0]] {
        for i in order {
            let r = workloads::stream_stats(b, if i == 0 { direct } else { ty });
            st[i].ttfb.extend(r.ttfb);
            st[i].gaps.extend(r.gaps);
            st[i].relay.extend(r.relay);
            st[i].failed += r.failed;
        }
    }
    println!(
        "  {:<10} {:>10} {:>10} {:>10} {:>10} {:>11} {:>11} {:>7}",
        "", "TTFB p50", "TTFB p99", "gap p50", "gap p99", "relay p50", "relay p99", "failed"
    );
    let row = |name: &str, s: &StreamStats| {
        let (a, b) = p50_p99(&s.ttfb);
        let (c, d) = p50_p99(&s.gaps);
        let (e, f) = p50_p99(&s.relay);
        println!(
            "  {name:<10} {a:>7.3} ms {b:>7.3} ms {c:>7.3} ms {d:>7.3} ms {e:>8.3} ms {f:>8.3} ms {:>7}",
            s.failed
        );
        [a, b, c, d, e, f]
    };
    let sd = row("direct", &st[0]);
    let sg = row("tokenyard", &st[1]);
    let added: Vec<f64> = sg.iter().zip(sd).map(|(g, d)| g - d).collect();
    println!(
        "  added      {:>7.3} ms {:>7.3} ms {:>7.3} ms {:>7.3} ms {:>8.3} ms {:>8.3} ms",
        added[0], added[1], added[2], added[3], added[4], added[5]
    );
    println!(
        "  (gap: between content chunks at the client; relay: upstream send → client arrival, per chunk)\n"
    );

    println!(
        "== 3b. concurrent streams (each started within 1 s, all open together), late = > 200 ms after due"
    );
    println!("  {}", Level::HEADER);
    let mut levels: Vec<Level> = Vec::new();
    let baseline = gw.rss_kib();
    for &n in &b.s.levels {
        let d = workloads::level(b, direct, n, None);
        println!("  {}", d.row("direct"));
        std::thread::sleep(Duration::from_millis(500));
        let g = workloads::level(b, ty, n, Some((gw, baseline)));
        println!("  {}", g.row("tokenyard"));
        std::thread::sleep(Duration::from_millis(500));
        let late = g.late();
        levels.push(g);
        if late {
            println!(
                "  a chunk was late (or a stream failed) through tokenyard: not raised further"
            );
            break;
        }
    }
    println!();
    let biggest = levels
        .iter()
        .filter(|l| !l.late())
        .map(|l| l.n)
        .max()
        .unwrap_or(0);
    let want = b.s.levels.iter().copied().max().unwrap_or(0);
    // Levels the gateway kept up with: at a level where chunks run late,
    // the backlog queued in buffers is counted as if streams cost it (each
    // level's own figure is printed above either way).
    let worst_kib = levels
        .iter()
        .filter(|l| l.n >= 1000 && !l.late())
        .filter_map(|l| l.kib_per_stream)
        .fold(0.0, f64::max);
    vec![
        (
            "streaming added TTFB p99",
            format!("{:.3} ms", added[1]),
            format!("≤ {TTFB_P99} ms"),
            added[1] <= TTFB_P99,
        ),
        (
            "concurrent streams, no late chunk",
            format!("{biggest}"),
            format!("{want}"),
            biggest >= want,
        ),
        (
            "RSS per open stream (≥ 1,000, kept up)",
            format!("{worst_kib:.1} KiB"),
            format!("≤ {KIB_PER_STREAM} KiB"),
            worst_kib <= KIB_PER_STREAM,
        ),
    ]
}

/// Workload 5.
fn cold_start(b: &Bench) -> Verdict {
    println!(
        "== 5. cold start: spawn → first 200 ({} launches)",
        b.s.cold
    );
    let colds: Vec<f64> = (0..b.s.cold)
        .map(|i| {
            let took = procs::cold_start(
                &b.load_rt,
                b.dir.path(),
                b.upstream,
                b.gateway_core(),
                1000 + i,
            );
            took.as_secs_f64() * 1000.0
        })
        .collect();
    let cold = median(colds.clone());
    let cold_max = colds.iter().copied().fold(0.0, f64::max);
    println!(
        "  runs: {}",
        colds
            .iter()
            .map(|c| format!("{c:.1} ms"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("  median {cold:.1} ms, max {cold_max:.1} ms\n");
    (
        "cold start (median)",
        format!("{cold:.1} ms"),
        format!("≤ {COLD_MS} ms"),
        cold <= COLD_MS,
    )
}

fn print_seq(name: &str, s: &Sample) -> (f64, f64) {
    let (p50, p99) = p50_p99(&s.ok);
    println!(
        "  {name:<11} p50 {p50:>7.3} ms   p99 {p99:>7.3} ms   ({} ok, {} errors)",
        s.ok.len(),
        s.errors
    );
    (p50, p99)
}

fn print_failover(f: &Failover, rtt: f64) {
    let (r50, r99) = p50_p99(&f.retried);
    let (p50, p99) = p50_p99(&f.plain);
    let (a50, a99) = f.added();
    println!(
        "  {}: {}/{} succeeded ({:.2} %); {} met a 429 ({:.1} %){}",
        f.name,
        f.ok,
        f.n,
        f.ok as f64 / f.n as f64 * 100.0,
        f.retried.len(),
        f.retried.len() as f64 / f.n as f64 * 100.0,
        f.attempts_gt1
            .map(|n| format!("; x-tokenyard-attempts > 1 on {n}"))
            .unwrap_or_default()
    );
    if !f.failures.is_empty() {
        println!(
            "    failures by status (0 = no answer): {:?}; first transport error: {}",
            f.failures,
            f.first_error.as_deref().unwrap_or("none")
        );
    }
    println!(
        "    not retried p50 {p50:.3} ms p99 {p99:.3} ms; retried p50 {r50:.3} ms p99 {r99:.3} ms; added p50 {a50:.3} ms p99 {a99:.3} ms (one upstream round trip: {rtt:.3} ms)"
    );
}

impl Failover {
    /// Retried minus not retried, at p50 and p99 (ms).
    pub fn added(&self) -> (f64, f64) {
        let (r50, r99) = p50_p99(&self.retried);
        let (p50, p99) = p50_p99(&self.plain);
        (r50 - p50, r99 - p99)
    }
}

impl Flat {
    const HEADER: &str = "target          req/s   p50 ms   p99 ms  errors  upstream µs/req  RSS MiB  CPU µs/req (kernel)";

    fn row(&self) -> String {
        format!(
            "{:<11} {:>9.0} {:>8.3} {:>8.3} {:>7} {:>16.1} {:>8} {:>11}",
            self.name,
            self.rps,
            self.p50,
            self.p99,
            self.errors,
            self.upstream_us,
            self.rss_kib
                .map_or("-".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
            match (self.gateway_us, self.gateway_sys_us) {
                (Some(us), Some(sys)) => format!("{us:.1} ({sys:.1})"),
                _ => "-".into(),
            }
        )
    }
}

impl Level {
    const HEADER: &str =
        "target      streams     ok  late max  late p99  upstream late  RSS open  KiB/stream";

    fn row(&self, name: &str) -> String {
        format!(
            "{name:<10} {:>8} {:>6} {:>6.1} ms {:>6.1} ms {:>11.1} ms {:>9} {:>11}",
            self.n,
            self.ok,
            self.max_late,
            self.p99_late,
            self.upstream_late,
            self.rss_open_kib
                .map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
            self.kib_per_stream
                .map_or("-".into(), |k| format!("{k:.1}")),
        )
    }
}

/// Peers mode: workloads 1, 2 and 4 through every gateway, one table.
pub fn peers(b: &Bench, peers: &[Peer]) {
    let gw = b.tokenyard();
    let direct = b.direct();
    struct Row {
        name: String,
        added: (f64, f64),
        flat: Option<Flat>,
        failover: Option<Failover>,
    }
    let mut rows: Vec<Row> = Vec::new();
    let mut contenders: Vec<(Arc<Target>, Option<u32>, bool)> =
        vec![(tokenyard_target(&gw), Some(gw.pid), false)];
    contenders.extend(peers.iter().map(|p| (p.target(), p.pid, p.proxy_only)));

    // One sequence for all of them, request by request in turn, so they
    // share one direct baseline: on an unpinned two-core VM the round trip
    // itself drifts between runs (a wake-up on an idle core costs tens of
    // µs), and separate runs gave one gateway a fast baseline and the other
    // a slow one.
    println!(
        "== 1. added latency, one request at a time ({} each, direct and every gateway in turn per request)",
        b.s.seq
    );
    let mut targets = vec![direct.clone()];
    targets.extend(contenders.iter().map(|(t, _, _)| t.clone()));
    let seq = workloads::sequential(b, &targets);
    let (d50, d99) = print_seq("direct", &seq[0]);
    let rtts = vec![d50];
    for ((t, _, _), sample) in contenders.iter().zip(&seq[1..]) {
        let (t50, t99) = print_seq(&t.name, sample);
        rows.push(Row {
            name: t.name.clone(),
            added: (t50 - d50, t99 - d99),
            flat: None,
            failover: None,
        });
    }
    for r in &rows {
        println!(
            "  added {:<9} p50 {:>7.3} ms   p99 {:>7.3} ms",
            r.name, r.added.0, r.added.1
        );
    }
    println!();

    // Two rounds, the second in reverse order, each gateway's figures the
    // mean of its two: which one runs first (or right after direct) moves
    // a single run by several per cent here.
    println!(
        "== 2. throughput, {} keep-alive connections, {} s after {} s warm-up; two rounds, the second in reverse order",
        b.s.conns, b.s.secs, b.s.warmup
    );
    println!("  {}", Flat::HEADER);
    let mut direct_rps = Vec::new();
    let run_direct = |direct_rps: &mut Vec<f64>| {
        let f = workloads::flat_out(b, &direct, (b.s.warmup, b.s.secs), &|| None, None);
        println!("  {}", f.row());
        direct_rps.push(f.rps);
    };
    run_direct(&mut direct_rps);
    let mut runs: Vec<Vec<Flat>> = contenders.iter().map(|_| Vec::new()).collect();
    let order: Vec<usize> = (0..contenders.len())
        .chain((0..contenders.len()).rev())
        .collect();
    for i in order {
        let (t, pid, _) = &contenders[i];
        let rss = || pid.map(procs::tree_rss_kib);
        let f = workloads::flat_out(b, t, (b.s.warmup, b.s.secs), &rss, *pid);
        println!("  {}", f.row());
        runs[i].push(f);
    }
    run_direct(&mut direct_rps);
    for (row, runs) in rows.iter_mut().zip(runs) {
        row.flat = Some(Flat::mean(runs));
    }
    println!();

    println!(
        "== 4. 429 failover: {} requests one at a time; key 3 answers 429 (retry-after: 0) to 3 of 5 it gets",
        b.s.failover
    );
    let rtt = median(rtts);
    for (i, ((t, _, proxy_only), row)) in contenders.iter().zip(&mut rows).enumerate() {
        if *proxy_only {
            continue;
        }
        let f = workloads::failover(b, t, 10_000_000 * (i as u64 + 1));
        print_failover(&f, rtt);
        row.failover = Some(f);
    }
    println!("  per key at the upstream: {:?}\n", b.seen.requests());

    let direct_rps = median(direct_rps);
    println!(
        "== one table (direct: {direct_rps:.0} req/s at {} conns, round trip p50 {rtt:.3} ms)",
        b.s.conns
    );
    println!(
        "  {:<10} {:>11} {:>11} {:>9} {:>9} {:>9} {:>8} {:>7} {:>10} {:>8} {:>17}",
        "gateway",
        "added p50",
        "added p99",
        "req/s",
        "p50 ms",
        "p99 ms",
        "RSS MiB",
        "CPU µs",
        "failover",
        "retried",
        "failover added"
    );
    for r in &rows {
        let f = r.flat.as_ref().expect("every contender ran workload 2");
        let (fo_ok, fo_n, fo_add) = match &r.failover {
            Some(fo) => {
                let (a50, a99) = fo.added();
                (
                    format!("{:.2} %", fo.ok as f64 / fo.n as f64 * 100.0),
                    format!("{}", fo.retried.len()),
                    format!("{a50:.2} / {a99:.2} ms"),
                )
            }
            None => ("n/a".into(), "-".into(), "(plain proxy)".into()),
        };
        println!(
            "  {:<10} {:>8.3} ms {:>8.3} ms {:>9.0} {:>9.2} {:>9.2} {:>8} {:>7} {:>10} {:>8} {:>17}",
            r.name,
            r.added.0,
            r.added.1,
            f.rps,
            f.p50,
            f.p99,
            f.rss_kib
                .map_or("-".into(), |k| format!("{:.0}", k as f64 / 1024.0)),
            f.gateway_us.map_or("-".into(), |us| format!("{us:.1}")),
            fo_ok,
            fo_n,
            fo_add
        );
    }
    let ty = &rows[0];
    let ty_rps = ty.flat.as_ref().map_or(f64::NAN, |f| f.rps);
    println!();
    for r in &rows[1..] {
        let rps = r.flat.as_ref().map_or(f64::NAN, |f| f.rps);
        let cpu = |r: &Row| r.flat.as_ref().and_then(|f| f.gateway_us);
        let cpu = match (cpu(ty), cpu(r)) {
            (Some(ours), Some(theirs)) => format!("; CPU per request {:.2}× theirs", ours / theirs),
            _ => String::new(),
        };
        println!(
            "  vs {:<9} added p50 {:>5.2}× theirs, p99 {:>5.2}× theirs; throughput {:>5.2}× theirs{cpu}",
            r.name,
            ty.added.0 / r.added.0,
            ty.added.1 / r.added.1,
            ty_rps / rps
        );
    }
}
