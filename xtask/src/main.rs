//! `cargo xtask <task>`: the project's tasks.
//!
//! ```text
//! cargo xtask bench [--quick] [--only GROUP]
//! ```
//!
//! `bench` runs every criterion bench of `benches/` (one target after the other, with a
//! progress line), then the end-to-end group (`xtask/src/e2e.rs`: the demo server over
//! streamable HTTP, bare and layered, under load), and writes:
//! - `target/bench/summary.json`: one object per benchmark, `{"id", "median_ns", "baseline",
//!   "ratio"}`, where `baseline` is the group's baseline (declared in `benches/baselines.toml`)
//!   and `ratio` is `median_ns / baseline median_ns` (both `null` for the baseline itself and
//!   for groups without one); end-to-end rows add `rps`, `p95_ns`, `p99_ns`, `requests` and
//!   `errors`;
//! - `docs/performance.md` and its SVG charts in `docs/performance/` (not with `--only`).
//!
//! `--quick` runs criterion's quick mode and short end-to-end runs; `--only GROUP` runs one
//! group (`cache/hit`, or a whole bench target like `cache`, or `e2e`).
#![allow(clippy::print_stdout)]

mod bench;
mod e2e;
mod report;
mod svg;

use anyhow::{Context, bail};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    match task.as_str() {
        "bench" => bench::run(&bench::Options::parse(&rest)?),
        "" | "help" | "--help" | "-h" => {
            println!("usage: cargo xtask bench [--quick] [--only GROUP]");
            Ok(())
        }
        other => bail!("unknown task `{other}` (try `cargo xtask help`)"),
    }
    .with_context(|| format!("cargo xtask {task}"))
}
