//! `cargo xtask bench`: run the criterion benches and summarize them against baselines.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::SystemTime,
};

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// What `cargo xtask bench` was asked to do.
#[derive(Debug, Default)]
pub(crate) struct Options {
    /// Criterion's quick mode: stop as soon as the estimate is significant.
    pub(crate) quick: bool,
    /// Only this group (`cache/hit`), or any id prefix.
    pub(crate) only: Option<String>,
}

impl Options {
    pub(crate) fn parse(args: &[String]) -> anyhow::Result<Self> {
        let mut options = Options::default();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => options.quick = true,
                "--only" => {
                    options.only = Some(
                        args.next()
                            .context("--only needs a group, like cache/hit")?
                            .clone(),
                    );
                }
                other => bail!(
                    "unknown option `{other}`; usage: cargo xtask bench [--quick] [--only GROUP]"
                ),
            }
        }
        Ok(options)
    }
}

/// One benchmark's result.
#[derive(Debug, Clone)]
pub(crate) struct Measurement {
    pub(crate) id: String,
    pub(crate) group: String,
    pub(crate) median_ns: f64,
    /// Criterion's samples, as time per iteration in ns (for the distribution charts).
    pub(crate) samples_ns: Vec<f64>,
}

struct Workspace {
    root: PathBuf,
    target: PathBuf,
}

fn workspace() -> anyhow::Result<Workspace> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .output()
        .context("running cargo metadata")?;
    if !output.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let meta: Value = serde_json::from_slice(&output.stdout)?;
    let path = |key: &str| -> anyhow::Result<PathBuf> {
        Ok(PathBuf::from(
            meta[key]
                .as_str()
                .with_context(|| format!("cargo metadata has no {key}"))?,
        ))
    };
    Ok(Workspace {
        root: path("workspace_root")?,
        target: path("target_directory")?,
    })
}

/// The `[[bench]]` targets of the benches package, in file order.
fn bench_targets(root: &Path) -> anyhow::Result<Vec<String>> {
    let path = root.join("benches/Cargo.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let manifest: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let names = manifest
        .get("bench")
        .and_then(toml::Value::as_array)
        .map(|benches| {
            benches
                .iter()
                .filter_map(|b| {
                    b.get("name")
                        .and_then(toml::Value::as_str)
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(names)
}

pub(crate) fn run(options: &Options) -> anyhow::Result<()> {
    let ws = workspace()?;
    let started = SystemTime::now();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());

    // What to run: every bench target and the end-to-end group, or the one `--only` names
    // (its first path segment is the bench target: `cache/hit` lives in `benches/cache.rs`).
    let targets = bench_targets(&ws.root)?;
    let (targets, with_e2e): (Vec<String>, bool) = match &options.only {
        None => (targets, true),
        Some(only) => {
            let file = only.split('/').next().unwrap_or_default();
            if file == "e2e" {
                (Vec::new(), true)
            } else if targets.iter().any(|t| t == file) {
                (vec![file.to_owned()], false)
            } else {
                bail!(
                    "no bench group `{only}`: bench targets are {} and e2e",
                    targets.join(", ")
                );
            }
        }
    };
    let steps = targets.len() + usize::from(with_e2e);

    // Build every selected bench binary in one cargo invocation first: on a fresh target
    // directory their code generation then runs in parallel instead of one target at a time.
    // The same call builds `e2e_demo`, the end-to-end group's server (Cargo builds a
    // package's binaries for its benches), with the benches' dependencies: nothing is
    // compiled twice. `--only e2e` builds the smallest bench for it.
    eprintln!("building the benches (release profile; the first run compiles everything)");
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&ws.root).args([
        "bench",
        "--quiet",
        "--no-run",
        "--package",
        "mcp-tower-benches",
    ]);
    let to_build = if targets.is_empty() {
        vec!["stack".to_owned()]
    } else {
        targets.clone()
    };
    for target in &to_build {
        cmd.args(["--bench", target]);
    }
    let status = cmd.status().context("building the benches")?;
    if !status.success() {
        bail!("building the benches failed ({status})");
    }

    for (i, target) in targets.iter().enumerate() {
        eprintln!("\n[{}/{steps}] benches/{target}.rs", i + 1);
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(&ws.root).args([
            "bench",
            "--quiet",
            "--package",
            "mcp-tower-benches",
            "--bench",
            target,
            "--",
        ]);
        if options.quick {
            // Criterion's quick mode has no warm-up; it doubles the iterations until the
            // estimate is within 5 %, or until the measurement time (capped here at 1 s) runs out.
            cmd.args(["--quick", "--measurement-time", "1"]);
        }
        if let Some(only) = &options.only {
            cmd.arg(format!("^{}", regex_escape(only.trim_end_matches('/'))));
        }
        let status = cmd.status().context("running cargo bench")?;
        if !status.success() {
            bail!("cargo bench --bench {target} failed ({status})");
        }
    }

    let mut runs = Vec::new();
    if with_e2e {
        eprintln!(
            "\n[{steps}/{steps}] end to end: the demo over streamable HTTP, bare and layered"
        );
        let demo = ws.target.join("release/e2e_demo");
        if !demo.is_file() {
            bail!("{} was not built with the benches", demo.display());
        }
        runs = crate::e2e::run_all(&demo, crate::e2e::Bounds::new(options.quick))?;
    }

    let measurements = collect(&ws.target.join("criterion"), started)?;
    if measurements.is_empty() && runs.is_empty() {
        bail!("no benchmark results were written (does --only match a group?)");
    }
    let baselines = baselines(&ws.root.join("benches/baselines.toml"))?;
    let mut summary = summarize(&measurements, &baselines);
    summary.extend(e2e_rows(&runs));

    let out_dir = ws.target.join("bench");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let summary_path = out_dir.join("summary.json");
    std::fs::write(
        &summary_path,
        serde_json::to_string_pretty(&summary)? + "\n",
    )
    .with_context(|| format!("writing {}", summary_path.display()))?;
    print_table(&summary);
    println!("\nwrote {}", summary_path.display());

    if options.only.is_none() {
        let machine = crate::report::Machine::detect();
        crate::report::write(
            &ws.root.join("docs"),
            &summary,
            &measurements,
            &runs,
            &machine,
            options.quick,
        )?;
        println!("wrote {}", ws.root.join("docs/performance.md").display());
    }
    Ok(())
}

/// Summary rows for the end-to-end runs: the layered server against the bare one.
fn e2e_rows(runs: &[crate::e2e::Run]) -> Vec<Value> {
    use crate::e2e::Server;
    runs.iter()
        .map(|run| {
            let bare = (run.server == Server::Layered)
                .then(|| {
                    runs.iter().find(|b| {
                        b.server == Server::Bare
                            && b.mode == run.mode
                            && b.workload == run.workload
                            && b.concurrency == run.concurrency
                    })
                })
                .flatten();
            let p50_ns = run.quantile_us(0.5) as f64 * 1000.0;
            json!({
                "id": run.id(),
                "median_ns": p50_ns,
                "baseline": bare.map(crate::e2e::Run::id),
                "ratio": bare.map(|b| round(p50_ns / (b.quantile_us(0.5) as f64 * 1000.0))),
                "requests": run.requests,
                "errors": run.errors,
                "rps": round(run.rps()),
                "p95_ns": run.quantile_us(0.95) as f64 * 1000.0,
                "p99_ns": run.quantile_us(0.99) as f64 * 1000.0,
                "server_rss_kib": run.rss_kib,
            })
        })
        .collect()
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}

/// Reads every `benchmark.json` + `estimates.json` pair criterion wrote since `since`.
fn collect(criterion_dir: &Path, since: SystemTime) -> anyhow::Result<Vec<Measurement>> {
    let mut found = Vec::new();
    if !criterion_dir.exists() {
        return Ok(found);
    }
    let mut stack = vec![criterion_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            // Only `<bench>/new/benchmark.json`: the run just made.
            if path.file_name().is_none_or(|n| n != "benchmark.json")
                || path
                    .parent()
                    .and_then(Path::file_name)
                    .is_none_or(|n| n != "new")
            {
                continue;
            }
            let modified = std::fs::metadata(&path)?.modified()?;
            if modified < since {
                continue;
            }
            let bench: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
            let estimates_path = path.with_file_name("estimates.json");
            let estimates: Value = serde_json::from_str(
                &std::fs::read_to_string(&estimates_path)
                    .with_context(|| format!("reading {}", estimates_path.display()))?,
            )?;
            let (Some(id), Some(group), Some(median)) = (
                bench["full_id"].as_str(),
                bench["group_id"].as_str(),
                estimates["median"]["point_estimate"].as_f64(),
            ) else {
                bail!("unexpected criterion output in {}", path.display());
            };
            let samples_ns = std::fs::read_to_string(path.with_file_name("sample.json"))
                .ok()
                .and_then(|text| serde_json::from_str::<Value>(&text).ok())
                .map(|sample| per_iteration(&sample))
                .unwrap_or_default();
            found.push(Measurement {
                id: id.to_owned(),
                group: group.to_owned(),
                median_ns: median,
                samples_ns,
            });
        }
    }
    found.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(found)
}

/// Criterion's `sample.json` (`iters`, `times`) as time per iteration.
fn per_iteration(sample: &Value) -> Vec<f64> {
    let (Some(iters), Some(times)) = (sample["iters"].as_array(), sample["times"].as_array())
    else {
        return Vec::new();
    };
    iters
        .iter()
        .zip(times)
        .filter_map(|(n, t)| Some(t.as_f64()? / n.as_f64()?.max(1.0)))
        .collect()
}

fn baselines(path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The summary rows, in id order, with each group's baseline and ratio.
pub(crate) fn summarize(
    measurements: &[Measurement],
    baselines: &BTreeMap<String, String>,
) -> Vec<Value> {
    let by_id: BTreeMap<&str, &Measurement> =
        measurements.iter().map(|m| (m.id.as_str(), m)).collect();
    measurements
        .iter()
        .map(|m| {
            let baseline_id = baselines
                .get(&m.group)
                .map(|function| format!("{}/{function}", m.group))
                .filter(|id| *id != m.id);
            let baseline = baseline_id.as_deref().and_then(|id| by_id.get(id));
            match baseline {
                Some(b) => json!({
                    "id": m.id,
                    "median_ns": round(m.median_ns),
                    "baseline": b.id,
                    "ratio": round(m.median_ns / b.median_ns),
                }),
                None => json!({"id": m.id, "median_ns": round(m.median_ns), "baseline": null, "ratio": null}),
            }
        })
        .collect()
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn print_table(summary: &[Value]) {
    println!(
        "\n{:<48} {:>14} {:>8}  baseline",
        "benchmark", "median", "ratio"
    );
    for row in summary {
        let ratio = row["ratio"]
            .as_f64()
            .map(|r| format!("{r:.2}x"))
            .unwrap_or_default();
        println!(
            "{:<48} {:>14} {:>8}  {}",
            row["id"].as_str().unwrap_or_default(),
            format_ns(row["median_ns"].as_f64().unwrap_or_default()),
            ratio,
            row["baseline"].as_str().unwrap_or("")
        );
    }
}

pub(crate) fn format_ns(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(group: &str, function: &str, median: f64) -> Measurement {
        Measurement {
            id: format!("{group}/{function}"),
            group: group.into(),
            median_ns: median,
            samples_ns: Vec::new(),
        }
    }

    #[test]
    fn ratios_are_against_the_group_baseline() {
        let ms = vec![
            m("stack/passthrough", "raw", 100.0),
            m("stack/passthrough", "mcp_stack", 150.0),
            m("other/x", "y", 7.0),
        ];
        let baselines = BTreeMap::from([("stack/passthrough".to_owned(), "raw".to_owned())]);
        let rows = summarize(&ms, &baselines);
        assert_eq!(rows[0]["id"], "stack/passthrough/raw");
        assert_eq!(rows[0]["baseline"], Value::Null);
        assert_eq!(rows[1]["baseline"], "stack/passthrough/raw");
        assert_eq!(rows[1]["ratio"], 1.5);
        assert_eq!(rows[2]["ratio"], Value::Null);
    }

    #[test]
    fn options() {
        let o = Options::parse(&["--quick".into(), "--only".into(), "cache/hit".into()]).unwrap();
        assert!(o.quick);
        assert_eq!(o.only.as_deref(), Some("cache/hit"));
        assert!(Options::parse(&["--fast".into()]).is_err());
        assert_eq!(regex_escape("a.b/c"), "a\\.b/c");
    }

    #[test]
    fn samples_become_time_per_iteration() {
        let sample = json!({"iters": [10.0, 20.0], "times": [1000.0, 3000.0]});
        assert_eq!(per_iteration(&sample), vec![100.0, 150.0]);
        assert!(per_iteration(&json!({})).is_empty());
    }

    #[test]
    fn formats() {
        assert_eq!(format_ns(12.34), "12.3 ns");
        assert_eq!(format_ns(1234.0), "1.23 µs");
        assert_eq!(format_ns(2_500_000.0), "2.50 ms");
    }
}
