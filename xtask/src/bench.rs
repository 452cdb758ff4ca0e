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

pub(crate) fn run(options: &Options) -> anyhow::Result<()> {
    let ws = workspace()?;
    let started = SystemTime::now();

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&ws.root)
        .args(["bench", "--package", "mcp-tower-benches", "--benches", "--"]);
    if options.quick {
        cmd.arg("--quick");
    }
    if let Some(only) = &options.only {
        cmd.arg(format!("^{}", regex_escape(only.trim_end_matches('/'))));
    }
    let status = cmd.status().context("running cargo bench")?;
    if !status.success() {
        bail!("cargo bench failed ({status})");
    }

    let measurements = collect(&ws.target.join("criterion"), started)?;
    if measurements.is_empty() {
        bail!("no benchmark results were written (does --only match a group?)");
    }
    let baselines = baselines(&ws.root.join("benches/baselines.toml"))?;
    let summary = summarize(&measurements, &baselines);

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
    Ok(())
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
            found.push(Measurement {
                id: id.to_owned(),
                group: group.to_owned(),
                median_ns: median,
            });
        }
    }
    found.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(found)
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
    fn formats() {
        assert_eq!(format_ns(12.34), "12.3 ns");
        assert_eq!(format_ns(1234.0), "1.23 µs");
        assert_eq!(format_ns(2_500_000.0), "2.50 ms");
    }
}
