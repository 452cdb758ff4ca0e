//! `docs/performance.md` and its charts, from a bench run.

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use anyhow::Context;
use serde_json::Value;

use crate::{
    bench::{Measurement, format_ns},
    e2e::{self, Mode, Run, Server, Workload},
    svg,
};

/// The machine a run happened on.
#[derive(Debug, Clone)]
pub(crate) struct Machine {
    pub(crate) cpu: String,
    pub(crate) cores: usize,
    pub(crate) os: String,
    pub(crate) date: String,
}

impl Machine {
    pub(crate) fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .and_then(|r| r.split(':').nth(1))
            })
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|| "unknown CPU".into());
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let os = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|r| format!("Linux {}", r.trim()))
            .unwrap_or_else(|_| std::env::consts::OS.to_owned());
        Self {
            cpu,
            cores,
            os,
            date: today_utc(),
        }
    }
}

/// Today's date (UTC) as YYYY-MM-DD, without a date crate.
fn today_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn slug(group: &str) -> String {
    group.replace('/', "-")
}

/// Writes `docs/performance.md` and `docs/performance/*.svg`.
pub(crate) fn write(
    docs: &Path,
    summary: &[Value],
    measurements: &[Measurement],
    runs: &[Run],
    machine: &Machine,
    quick: bool,
) -> anyhow::Result<()> {
    let charts = docs.join("performance");
    std::fs::create_dir_all(&charts).with_context(|| format!("creating {}", charts.display()))?;
    let mut md = String::new();
    let _ = writeln!(md, "# Performance\n");
    let _ = writeln!(
        md,
        "Measured by `cargo xtask bench{}` on {} — {}, {} cores, {}. Criterion medians; \
         **ratio** = median ÷ the group's baseline median (below 1 is faster than the baseline). \
         This file and its charts are generated; do not edit them by hand.\n",
        if quick { " --quick" } else { "" },
        machine.date,
        machine.cpu,
        machine.cores,
        machine.os
    );
    if quick {
        let _ = writeln!(md, "> A `--quick` run: fewer samples, wider error bars.\n");
    }

    if !runs.is_empty() {
        write_e2e(&mut md, &charts, runs)?;
    }

    let rows: BTreeMap<&str, &Value> = summary
        .iter()
        .filter_map(|r| Some((r["id"].as_str()?, r)))
        .collect();
    let mut groups: BTreeMap<&str, Vec<&Measurement>> = BTreeMap::new();
    for m in measurements {
        groups.entry(m.group.as_str()).or_default().push(m);
    }
    let ratio_bars: Vec<svg::RatioBar> = summary
        .iter()
        .filter(|r| !r["id"].as_str().unwrap_or("").starts_with("e2e/"))
        .filter_map(|r| {
            Some(svg::RatioBar {
                label: r["id"].as_str()?.to_owned(),
                ratio: r["ratio"].as_f64()?,
            })
        })
        .collect();
    if !ratio_bars.is_empty() {
        std::fs::write(
            charts.join("ratios.svg"),
            svg::ratio_chart("Every benchmark against its group's baseline", &ratio_bars),
        )?;
        let _ = writeln!(
            md,
            "## Ratios at a glance\n\n![ratios](performance/ratios.svg)\n"
        );
    }

    let _ = writeln!(md, "## Micro-benchmarks\n");
    for (group, members) in &groups {
        let _ = writeln!(md, "### `{group}`\n");
        let _ = writeln!(
            md,
            "| benchmark | median | ratio | baseline |\n|---|---:|---:|---|"
        );
        for m in members {
            let row = rows.get(m.id.as_str());
            let ratio = row
                .and_then(|r| r["ratio"].as_f64())
                .map(|r| format!("{r:.2}×"))
                .unwrap_or_else(|| "—".into());
            let baseline = row
                .and_then(|r| r["baseline"].as_str())
                .map(|b| format!("`{}`", b.rsplit('/').next().unwrap_or(b)))
                .unwrap_or_else(|| "(baseline)".into());
            let name = m.id.strip_prefix(&format!("{group}/")).unwrap_or(&m.id);
            let _ = writeln!(
                md,
                "| `{name}` | {} | {ratio} | {baseline} |",
                format_ns(m.median_ns)
            );
        }
        let box_rows: Vec<svg::BoxRow> = members
            .iter()
            .filter(|m| !m.samples_ns.is_empty())
            .map(|m| svg::BoxRow {
                label: m
                    .id
                    .strip_prefix(&format!("{group}/"))
                    .unwrap_or(&m.id)
                    .to_owned(),
                samples: m.samples_ns.clone(),
                highlight: rows
                    .get(m.id.as_str())
                    .is_some_and(|r| !r["baseline"].is_null()),
            })
            .collect();
        if !box_rows.is_empty() {
            let file = format!("{}.svg", slug(group));
            std::fs::write(
                charts.join(&file),
                svg::box_plot(&format!("{group}: time per call"), &box_rows, &|v| {
                    format_ns(v)
                }),
            )?;
            let _ = writeln!(md, "\n![{group}](performance/{file})\n");
        }
    }

    let path = docs.join("performance.md");
    std::fs::write(&path, md).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn write_e2e(md: &mut String, charts: &Path, runs: &[Run]) -> anyhow::Result<()> {
    let _ = writeln!(
        md,
        "## End to end\n\nThe demo server over streamable HTTP on 127.0.0.1, with the full `McpStack` \
         (`layered`) and without it (`bare`: the demo's handler on rmcp alone, the ceiling), \
         driven by `xtask/src/e2e.rs` the way outside clients drive a server: raw HTTP/1.1 on one \
         keep-alive connection per worker, each answer read to its end. Client and server share \
         the machine's cores. Modes: `json` (2026-07-28 stateless, JSON answers), `sse` (2026-07-28 \
         stateless, SSE answers), `session` (a 2025-11-25 session per connection, SSE answers). \
         `instant` is `echo`; `hit` is one `weather` key (cached by the layered server); `miss` is a \
         new city each call (the ~150 ms tool runs); `mixed` is 90 % hits. `driver` is a trivial \
         in-process handler: what the driver itself can do. RSS is the server's after the run.\n"
    );
    let find = |s: Server, m: Mode, w: Workload, c: usize| {
        runs.iter()
            .find(|r| r.server == s && r.mode == m && r.workload == w && r.concurrency == c)
    };
    for mode in [Mode::Json, Mode::Sse] {
        if let (Some(hit), Some(instant)) = (
            find(Server::Layered, mode, Workload::Hit, 32),
            find(Server::Bare, mode, Workload::Instant, 32),
        ) {
            let one = find(Server::Layered, mode, Workload::Hit, 1);
            let _ = writeln!(
                md,
                "**{} mode:** at concurrency 32 the layered server answers cache hits at {:.0} req/s, \
                 {:.1} % of the bare server's instant tool ({:.0} req/s); layered hit p99 {}{}.\n",
                mode.name(),
                hit.rps(),
                100.0 * hit.rps() / instant.rps(),
                instant.rps(),
                e2e::fmt_us(hit.quantile_us(0.99)),
                one.map(|r| format!(", p50 at concurrency 1 {}", e2e::fmt_us(r.quantile_us(0.5))))
                    .unwrap_or_default(),
            );
        }
    }
    if let Some(driver) = find(Server::Driver, Mode::Json, Workload::Instant, 32) {
        let _ = writeln!(
            md,
            "**Driver ceiling:** {:.0} req/s at concurrency 32 against a trivial handler.\n",
            driver.rps()
        );
    }
    let _ = writeln!(
        md,
        "| mode | workload | concurrency | server | requests | req/s | p50 | p95 | p99 | errors | server RSS |\n|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    for run in runs {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} |",
            run.mode.name(),
            run.workload.name(),
            run.concurrency,
            run.server.name(),
            run.requests,
            run.rps(),
            e2e::fmt_us(run.quantile_us(0.5)),
            e2e::fmt_us(run.quantile_us(0.95)),
            e2e::fmt_us(run.quantile_us(0.99)),
            run.errors,
            run.rss_kib
                .map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
                .unwrap_or_else(|| "—".into()),
        );
    }
    for c in e2e::CONCURRENCY {
        let groups: Vec<svg::BarGroup> = Workload::ALL
            .iter()
            .filter_map(|w| {
                let bare = find(Server::Bare, Mode::Json, *w, c)?;
                let layered = find(Server::Layered, Mode::Json, *w, c)?;
                Some(svg::BarGroup {
                    category: w.name().to_owned(),
                    values: vec![
                        ("bare".into(), bare.rps()),
                        ("layered".into(), layered.rps()),
                    ],
                })
            })
            .collect();
        if groups.is_empty() {
            continue;
        }
        let file = format!("e2e-rps-c{c}.svg");
        std::fs::write(
            charts.join(&file),
            svg::grouped_bars(
                &format!("Requests per second at concurrency {c} (json mode)"),
                &groups,
                &|v| format!("{v:.0}/s"),
            ),
        )?;
        let _ = writeln!(md, "\n![req/s at concurrency {c}](performance/{file})");
    }
    let rows: Vec<svg::BoxRow> = runs
        .iter()
        .filter(|r| r.concurrency == 32 && r.mode == Mode::Json)
        .map(|r| svg::BoxRow {
            label: format!("{} {}", r.workload.name(), r.server.name()),
            samples: r
                .latencies_us
                .iter()
                .map(|us| *us as f64 * 1000.0)
                .collect(),
            highlight: r.server == Server::Layered,
        })
        .collect();
    if !rows.is_empty() {
        std::fs::write(
            charts.join("e2e-latency-c32.svg"),
            svg::box_plot(
                "Latency at concurrency 32, json mode (p5–p95 whiskers)",
                &rows,
                &|v| format_ns(v),
            ),
        )?;
        let _ = writeln!(
            md,
            "\n![latency at concurrency 32](performance/e2e-latency-c32.svg)\n"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_779), (2026, 11, 22));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn slugs() {
        assert_eq!(slug("cache/hit"), "cache-hit");
    }
}
